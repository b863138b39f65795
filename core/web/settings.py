"""The profile's ``web:`` section: where the branch web listens, and how logins behave.

Kept free of Flask so that ``vipsense check`` validates it without importing the web stack.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import attrs

from ..config.sections import SectionReport
from ..config.types import Duration
from ..i18n import _


def _address(inst: Any, attribute: attrs.Attribute, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            _("{value!r} is not an IP address (e.g. 127.0.0.1, or the branch LAN address)").format(
                value=value
            )
        ) from None


def _addresses(inst: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    for one in value:
        _address(inst, attribute, one)


def _port(inst: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(_("a port is 0 to 65535 (0: any free port)"))


def _at_least(low: int) -> Any:
    def check(inst: Any, attribute: attrs.Attribute, value: int) -> None:
        if value < low:
            raise ValueError(_("must be at least {low}").format(low=low))

    return check


def _positive(inst: Any, attribute: attrs.Attribute, value: Duration) -> None:
    if float(value) <= 0:
        raise ValueError(_("must be longer than 0s"))


@attrs.frozen
class TlsFiles:
    """PEM files for HTTPS; paths relative to the profile.  Without them the page is plain HTTP, for a
    loopback demo or behind the bank's TLS proxy."""

    cert: str
    key: str


@attrs.frozen
class Lockout:
    """Login throttling.  After ``attempts`` wrong passwords from one address for one account, each
    further attempt there must wait twice as long as the last (1 s, 2 s, 4 s ... up to ``lock_for``);
    an address that fails ``4 x attempts`` times over any accounts, and an account that fails
    ``4 x attempts`` times from any addresses, wait the same way.  There is no hard lock that an
    attacker can keep shut: a failure count is forgotten ``lock_for`` after its last failure, and
    ``vipsense users unlock`` clears an account's at once."""

    attempts: int = attrs.field(default=5, validator=_at_least(1))
    #: the longest wait between attempts, and how long a failure count is remembered
    lock_for: Duration = attrs.field(default=Duration(900), validator=_positive)


@attrs.frozen
class IdLookup:
    """Look-ups by ID number on the console (``customers.search_id``): each needs a reason and counts
    against a limit per user and per source address, so that guessing a masked number is slower
    than the audit log is read (pen test point 1).  Past ``alert_after`` refusals in a day (over the
    limit, or without the right) the branch is alerted (audit entry and the ``vipsense_security_alert``
    hook)."""

    per_minute: int = attrs.field(default=10, validator=_at_least(1))
    per_day: int = attrs.field(default=100, validator=_at_least(1))
    alert_after: int = attrs.field(default=3, validator=_at_least(1))


@attrs.frozen
class Connections:
    """What one client may hold of the server (pen test point 4).  A connection that sends nothing for
    ``idle_timeout`` is closed, and so is one whose request (headers, and a body of a declared length
    or chunked, up to 64 KiB) has not fully arrived ``request_timeout`` after its first byte
    (slowloris).  Only whole requests reach a thread.  At ``max_total`` the longest-idle connection
    makes room for a new one; past ``max_per_source`` a new connection from that address is closed at
    once.  Behind a reverse proxy every client has the proxy's address: raise ``max_per_source`` to
    ``max_total``."""

    max_total: int = attrs.field(default=1000, validator=_at_least(10))
    max_per_source: int = attrs.field(default=64, validator=_at_least(1))
    idle_timeout: Duration = attrs.field(default=Duration(30), validator=_positive)
    request_timeout: Duration = attrs.field(default=Duration(10), validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.max_per_source > self.max_total:
            raise ValueError(_("max_per_source must not be more than max_total"))


@attrs.frozen
class Streams:
    """Open live streams (the console's Server-Sent Events); each holds one request thread for as long
    as it is open, so they are capped below ``web.threads`` (pen test point 13).  ``max_total``
    defaults to half of ``web.threads``."""

    per_user: int = attrs.field(default=4, validator=_at_least(1))
    max_total: int | None = attrs.field(default=None, validator=attrs.validators.optional(_at_least(1)))


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
                _(
                    "user_dn must contain {{username}}, e.g. uid={{username}},ou=staff,dc=bank,dc=example"
                ).format()
            )
        if not self.uri.startswith(("ldap://", "ldaps://")):
            raise ValueError(_("uri must start with ldap:// or ldaps://"))


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
    #: and this long after its login, used or not
    session_lifetime: Duration = attrs.field(default=Duration(12 * 3600), validator=_positive)
    lockout: Lockout = Lockout()
    id_lookup: IdLookup = IdLookup()
    connections: Connections = Connections()
    streams: Streams = Streams()
    #: reverse proxies whose ``X-Forwarded-For`` is believed (the client address it appended): the
    #: audit log, login throttling and look-up limits then see the client, not the proxy; none by default
    trusted_proxies: tuple[str, ...] = attrs.field(default=(), validator=_addresses)
    ldap: LdapLogin | None = None

    def __attrs_post_init__(self) -> None:
        if self.streams.max_total is not None and self.streams.max_total >= self.threads:
            raise ValueError(
                _(
                    "streams.max_total must be below threads ({threads}): each stream holds a thread,"
                    " and pages need some too"
                ).format(threads=self.threads)
            )

    @property
    def max_streams(self) -> int:
        """Open live streams allowed in all: ``streams.max_total``, by default half the threads."""
        return self.streams.max_total or max(1, self.threads // 2)


def check_web(web: WebSettings, profile_dir: Path, report: SectionReport) -> None:
    """What ``web:`` needs beyond its own fields: the TLS files it names exist, and a web reachable
    from the network does not serve logins in clear."""
    if web.tls is not None:
        _check_tls(web.tls, profile_dir, report)
    _warn_plain_web(web, report)


def _check_tls(tls: TlsFiles, profile_dir: Path, report: SectionReport) -> None:
    for key in ("cert", "key"):
        file = profile_dir / os.path.expanduser(getattr(tls, key))
        if not file.is_file():
            what = (
                _("no certificate file at {file}; give the path of a PEM file")
                if key == "cert"
                else _("no private key file at {file}; give the path of a PEM file")
            )
            report.error(("tls", key), what.format(file=file))


def _warn_plain_web(web: WebSettings, report: SectionReport) -> None:
    """Passwords and customer data must not cross the network in clear (``privacy-security.md`` §4
    item 7): a web on another address than loopback needs ``web.tls`` (or a TLS proxy in front)."""
    if web.tls is None and not ipaddress.ip_address(web.bind).is_loopback:
        report.warn(
            ("bind",),
            _(
                "the branch web listens on {bind} without web.tls: logins and customer data would cross"
                " the network in clear; set web.tls, or bind 127.0.0.1 behind the bank's TLS proxy"
            ).format(bind=web.bind),
        )
