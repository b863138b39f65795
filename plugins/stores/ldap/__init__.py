"""LDAP identity store: customers and cards in the bank's directory (OpenLDAP, 389-DS, AD).

python-ldap is an optional extra (``pip install 'vipsense[ldap]'``) and is imported only when a
branch starts a store of ``type: ldap``, so ``vipsense plugins`` and ``vipsense check`` work without
it.  A profile item::

    stores:
      - id: directory
        type: ldap
        uri: !env VIPSENSE_LDAP_URI            # ldaps://ldap.bank.example or ldap://... with start_tls
        bind_dn: cn=vipsense,ou=services,dc=bank,dc=example
        password: !secret ldap_password
        tls: {ca_file: /etc/vipsense/bank-ca.pem}
        customers: {base: "ou=customers,dc=bank,dc=example"}
        cards: {base: "ou=cards,dc=bank,dc=example"}

Schema, attribute mapping, cache and outage behaviour: README.md in this directory.
"""

from __future__ import annotations

from pathlib import Path

import vipsense
from vipsense.api import IdentityStore, PluginContext, RegisterType
from vipsense.i18n import lazy_gettext

from .settings import LdapSettings

SCHEMA_FILE = Path(__file__).with_name("vipsense.schema")
MISSING_EXTRA = "the LDAP store needs python-ldap: pip install 'vipsense[ldap]'"


class MissingExtra(RuntimeError):
    pass


def make_store(settings: LdapSettings, ctx: PluginContext) -> IdentityStore:
    """The factory: python-ldap is imported here, never when the plugin loads."""
    try:
        from .store import LdapStore
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("ldap", "_ldap", "ldif"):
            raise MissingExtra(f"{MISSING_EXTRA} ({exc})") from exc
        raise
    return LdapStore(settings, ctx)


@vipsense.hookimpl
def vipsense_register_store_types(register: RegisterType) -> None:
    register(
        "ldap",
        LdapSettings,
        make_store,
        summary=lazy_gettext("customers and cards in an LDAP directory, cached, with the card registry"),
        requires=("ldap",),  # python-ldap
        extra="ldap",
    )
