"""The profile's ``web:`` section: where the branch web listens, and how logins behave.

Kept free of Flask so that ``vipsense check`` validates it without importing the web stack.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

from ..config.types import Duration


def _address(inst: Any, attribute: attrs.Attribute, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address (e.g. 127.0.0.1, or the branch LAN address)"
        ) from None


def _port(inst: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError("a port is 0 to 65535 (0: any free port)")


def _at_least(low: int) -> Any:
    def check(inst: Any, attribute: attrs.Attribute, value: int) -> None:
        if value < low:
            raise ValueError(f"must be at least {low}")

    return check


def _positive(inst: Any, attribute: attrs.Attribute, value: Duration) -> None:
    if float(value) <= 0:
        raise ValueError("must be longer than 0s")


@attrs.frozen
class TlsFiles:
    """PEM files for HTTPS; paths relative to the profile.  Without them the page is plain HTTP, for a
    loopback demo or behind the bank's TLS proxy."""

    cert: str
    key: str


@attrs.frozen
class Lockout:
    """After ``attempts`` wrong passwords in a row an account is locked for ``lock_for``."""

    attempts: int = attrs.field(default=5, validator=_at_least(1))
    lock_for: Duration = attrs.field(default=Duration(900), validator=_positive)


@attrs.frozen
class LdapLogin:
    """Check staff passwords with an LDAP simple bind instead of the local hash.  The account must
    still exist locally (``vipsense users add --ldap``): the directory proves who someone is, the
    branch decides what they may do."""

    uri: str
    #: the bind DN of a user; ``{username}`` is replaced by the DN-escaped login name
    user_dn: str
    timeout: Duration = attrs.field(default=Duration(3), validator=_positive)
    start_tls: bool = False
    ca_file: str | None = None

    def __attrs_post_init__(self) -> None:
        if "{username}" not in self.user_dn:
            raise ValueError(
                "user_dn must contain {username}, e.g. uid={username},ou=staff,dc=bank,dc=example"
            )
        if not self.uri.startswith(("ldap://", "ldaps://")):
            raise ValueError("uri must start with ldap:// or ldaps://")


@attrs.frozen
class WebSettings:
    """``web:`` of a profile.  ``vipsense run`` serves the branch web when the section is present."""

    bind: str = attrs.field(default="127.0.0.1", validator=_address)
    port: int = attrs.field(default=8080, validator=_port)
    tls: TlsFiles | None = None
    #: request threads; each open live stream (console, SSE) holds one
    threads: int = attrs.field(default=64, validator=_at_least(4))
    #: a session ends after this long without a request
    session_timeout: Duration = attrs.field(default=Duration(900), validator=_positive)
    lockout: Lockout = Lockout()
    ldap: LdapLogin | None = None
