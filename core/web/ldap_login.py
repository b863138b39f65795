"""Staff logins checked by an LDAP simple bind (``web.ldap``), with python-ldap (the ``ldap`` extra).

The login name is DN-escaped before it goes into ``user_dn`` (RFC 4514), so ``*``, ``,`` or ``=``
in a name cannot change which entry is bound.  An empty password is refused here: most directories
treat a simple bind with an empty password as an anonymous bind, which "succeeds".
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from .settings import LdapLogin

log = logging.getLogger(__name__)


def ldap_bind(settings: LdapLogin, profile_dir: Path, username: str, password: str) -> bool | None:
    """True or False as the directory says; None when it could not be asked (not the user's fault)."""
    if not password or not username:
        return False
    try:
        import ldap
        from ldap.dn import escape_dn_chars
    except ImportError:
        log.error("web.ldap needs python-ldap: pip install 'vipsense[ldap]'")
        return None
    conn = ldap.initialize(settings.uri)
    try:
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, float(settings.timeout))
        conn.set_option(ldap.OPT_TIMEOUT, float(settings.timeout))
        conn.set_option(ldap.OPT_REFERRALS, 0)
        if settings.ca_file:
            conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(profile_dir / settings.ca_file))
            conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
        if settings.start_tls:
            conn.start_tls_s()
        conn.simple_bind_s(settings.user_dn.replace("{username}", escape_dn_chars(username)), password)
        return True
    except ldap.INVALID_CREDENTIALS:
        return False
    except ldap.LDAPError as exc:
        log.warning("web login: the directory %s did not answer: %s", settings.uri, exc)
        return None
    finally:
        with contextlib.suppress(Exception):
            conn.unbind_s()
