"""One connection to the directory, with bounded calls, one reconnect per call and a backoff.

Why not ``ldap.ldapobject.ReconnectLDAPObject``: it sleeps ``retry_delay`` inside the caller's call
(ldap.md §3), which blocks the arrival path, and it keeps the clear-text bind password in
``_last_bind`` (and pickles it).  Here each call gets a deadline of ``connect_timeout +
operation_timeout``; a connection that was reset (slapd restarted) is re-opened once inside that
deadline; any other link failure marks the directory down and starts a backoff (0.1 s doubling to
2 s) during which calls fail at once, without touching the network, so the store answers from its
cache and never hammers a directory that is down, nor locks the service account with failed binds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import ldap
from ldap.ldapobject import LDAPObject

from vipsense.api import Backoff, describe
from vipsense.i18n import _

from .settings import LdapSettings

T = TypeVar("T")

BACKOFF_START = 0.1
BACKOFF_CAP = 2.0
#: errors that mean "the directory cannot be used right now"; anything else is an answer
LINK_ERRORS: tuple[type[Exception], ...] = (
    ldap.SERVER_DOWN,
    ldap.TIMEOUT,
    ldap.CONNECT_ERROR,
    ldap.UNAVAILABLE,
    ldap.BUSY,
)
LOOPBACK = ("127.", "localhost", "[::1]")


class DirectoryError(ConnectionError):
    """The directory could not be used; the message says why (never the password)."""


class DirectoryDown(DirectoryError):
    """The directory is unreachable, or still in its backoff after a failure."""


class ConnectFailed(Exception):
    """Opening a connection failed in ``phase`` (StartTLS, bind)."""

    def __init__(self, phase: str, exc: ldap.LDAPError) -> None:
        super().__init__(phase)
        self.phase, self.exc = phase, exc


def describe_ldap_error(exc: BaseException) -> str:
    """``ldap.SERVER_DOWN({'desc': ..., 'info': ...})`` as one readable line; any other exception as
    its message (:func:`vipsense.api.describe`)."""
    if isinstance(exc, ldap.TIMEOUT) and not (exc.args and isinstance(exc.args[0], dict)):
        return "timed out"
    if exc.args and isinstance(exc.args[0], dict):
        d = exc.args[0]
        desc, info = str(d.get("desc", type(exc).__name__)), str(d.get("info", "") or "")
        return f"{desc}: {info}" if info and info != desc else desc
    return describe(exc, typed=False)


def check_transport(settings: LdapSettings) -> None:
    """Refuse to send the bind password in clear text to another host (privacy-security.md §4
    item 7, "TLS on every hop").  Loopback and ``ldapi://`` stay allowed, for tests and sidecars."""
    if settings.password is None or settings.tls.start_tls or settings.allow_plaintext_bind:
        return
    for uri in settings.uri.split():
        lower = uri.lower()
        if lower.startswith("ldap://") and not lower[len("ldap://") :].startswith(LOOPBACK):
            message = _(
                "refusing to send the bind password in clear text to {uri}: use ldaps://, or"
                " tls: {{start_tls: true}}, or set allow_plaintext_bind: true"
            )
            raise DirectoryError(message.format(uri=uri))


class Link:
    """The store's connection.  Thread-safe: calls are serialised on one lock."""

    def __init__(
        self,
        settings: LdapSettings,
        log: logging.Logger,
        resolve: Callable[[str], Path],
        on_change: Callable[[str], None] = lambda reason: None,
    ) -> None:
        check_transport(settings)
        self.on_change = on_change  #: called with the new reason ("" when up) on each state change
        self.settings = settings
        self.log = log
        self.uri = settings.uri
        self.tls_files = {
            name: str(resolve(value))
            for name, value in (
                ("ca_file", settings.tls.ca_file),
                ("cert_file", settings.tls.cert_file),
                ("key_file", settings.tls.key_file),
            )
            if value
        }
        for name, path in self.tls_files.items():
            if not Path(path).is_file():
                raise DirectoryError(f"tls.{name}: no such file: {path}")
        self.budget = float(settings.connect_timeout) + float(settings.operation_timeout)
        self.lock = threading.RLock()
        self.conn: LDAPObject | None = None
        self.generation = 0  #: bumped at every new connection (paged-search cookies die with one)
        self.reason = ""  #: why the directory is down; "" while it is up
        self.down_since = 0.0
        self.next_retry = 0.0
        self.retry = Backoff(BACKOFF_START, BACKOFF_CAP)

    # -- state --------------------------------------------------------------------------------

    @property
    def down(self) -> bool:
        return bool(self.reason)

    def retry_due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.next_retry

    def _failed(self, exc: BaseException, what: str, connecting: bool = False) -> DirectoryDown:
        """Mark the directory down (or keep it down) and schedule the next attempt."""
        hint = self._tls_hint(exc) if connecting else ""
        reason = f"{self.uri}: {hint}" if hint else f"{what}: {describe_ldap_error(exc)}"
        now = time.monotonic()
        if not self.down:
            self.down_since = now
            self.retry.succeeded()  # a new outage starts the schedule over
        changed = reason != self.reason
        if changed:  # log changes, not every retry
            self.log.warning("directory %s unreachable: %s (answering from cache)", self.uri, reason)
        self.reason = reason
        if changed:
            self.on_change(reason)
        self.next_retry = now + self.retry.failed()
        self._drop()
        return DirectoryDown(reason)

    def _tls_hint(self, exc: BaseException) -> str:
        """libldap (GnuTLS) reports a failed certificate check only as "(unknown error code)", and a
        server that hangs up during the handshake as "Broken pipe" or with no detail at all (which
        one is a race); a refused connection always says "Transport endpoint is not connected".
        Name the likely causes instead of "Can't contact LDAP server"."""
        if not (self.settings.tls.start_tls or self.uri.lower().startswith("ldaps://")):
            return ""
        d = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        info = str(d.get("info", "") or "")
        if info == "(unknown error code)":
            trusted = (
                f"tls.ca_file {self.tls_files['ca_file']}"
                if "ca_file" in self.tls_files
                else "the system CAs"
            )
            return (
                f"TLS handshake failed: the server certificate is not signed by a CA in {trusted},"
                " does not name the host in the URI, or has expired"
            )
        if isinstance(exc, ldap.SERVER_DOWN) and info in ("", "Broken pipe") and d.get("errno") in (None, 32):
            client = "cert_file" in self.tls_files
            return "TLS handshake failed: the server closed the connection" + (
                " (is the client certificate in tls.cert_file one it trusts?)"
                if client
                else " (does it require a client certificate? set tls.cert_file and tls.key_file)"
            )
        return ""

    def _recovered(self) -> None:
        if not self.down:
            return
        self.log.warning(
            "directory %s reachable again after %.1f s", self.uri, time.monotonic() - self.down_since
        )
        self.reason, self.next_retry = "", 0.0
        self.retry.succeeded()
        self.on_change("")

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(ldap.LDAPError):
                conn.unbind_ext()  # sends unbind and closes; never waits for an answer

    # -- connecting ---------------------------------------------------------------------------

    def _connect(self, deadline: float) -> LDAPObject:
        s = self.settings
        remaining = max(0.001, deadline - time.monotonic())
        conn = ldap.initialize(self.uri)
        # ldap.md §3: always set both timeouts, or a dead server blocks the caller indefinitely.
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, min(float(s.connect_timeout), remaining))
        conn.set_option(ldap.OPT_TIMEOUT, min(float(s.operation_timeout), remaining))
        conn.timeout = float(s.operation_timeout)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
        conn.set_option(ldap.OPT_REFERRALS, 0)  # ldap.md §3: Active Directory searches from the root
        conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
        conn.set_option(ldap.OPT_X_TLS_PROTOCOL_MIN, ldap.OPT_X_TLS_PROTOCOL_TLS1_2)
        for name, option in (
            ("ca_file", ldap.OPT_X_TLS_CACERTFILE),
            ("cert_file", ldap.OPT_X_TLS_CERTFILE),
            ("key_file", ldap.OPT_X_TLS_KEYFILE),
        ):
            if name in self.tls_files:
                conn.set_option(option, self.tls_files[name])
        conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # apply the TLS options to this connection
        phase = "StartTLS with " + self.uri
        try:
            if s.tls.start_tls:
                conn.start_tls_s()
            # An anonymous connection binds anonymously: every connection problem (refused, TLS)
            # then shows here, in the connect phase, and not in whatever operation came first.
            phase = f"bind as {s.bind_dn}" if s.bind_dn else f"anonymous bind to {self.uri}"
            password = s.password.reveal() if s.password is not None else ""
            msgid = conn.simple_bind(s.bind_dn or "", password)
            conn.result(msgid, all=1, timeout=self._op_timeout(deadline))
        except ldap.LDAPError as exc:
            with contextlib.suppress(ldap.LDAPError):
                conn.unbind_ext()
            raise ConnectFailed(phase, exc) from exc
        self.generation += 1
        return conn

    def reset(self) -> None:
        """Forget the connection and any backoff, so the next call tries the network at once."""
        with self.lock:
            self._drop()
            self.next_retry = 0.0

    # -- calls --------------------------------------------------------------------------------

    def run(
        self,
        op: Callable[[LDAPObject, float], T],
        what: str = "search",
        *,
        retry: bool = True,
        budget: float | None = None,
    ) -> T:
        """``op(conn, timeout)`` on a live connection, within the call's deadline.

        Raises :class:`DirectoryDown` without any network traffic while backing off.  LDAP errors that
        are answers (no such object, already exists, insufficient access) pass through unchanged.
        ``retry=False`` for a call that must stay on the same connection (a paged search's next page);
        ``budget`` for a call off the arrival path that may take longer (a page of a listing).
        """
        with self.lock:
            now = time.monotonic()
            if self.down and now < self.next_retry:
                raise DirectoryDown(self.reason)
            deadline = now + (self.budget if budget is None else budget)
            reused = self.conn is not None
            try:
                try:
                    result = self._attempt(op, deadline, budget is not None)
                except ldap.SERVER_DOWN:
                    # A connection that worked before was reset (slapd restarted, an idle timeout):
                    # open a new one once, inside the same deadline.  A timeout is never retried.
                    if not (reused and retry) or time.monotonic() >= deadline:
                        raise
                    self._drop()
                    result = self._attempt(op, deadline, budget is not None)
            except LINK_ERRORS as exc:
                raise self._failed(exc, what) from exc
            self._recovered()
            return result

    def _attempt(self, op: Callable[[LDAPObject, float], T], deadline: float, long: bool = False) -> T:
        if self.conn is None:
            try:
                self.conn = self._connect(deadline)
            except ConnectFailed as failed:
                # Whatever stopped StartTLS or the bind (a dead server, a bad certificate, a refused
                # password) leaves no usable connection: back off, since retrying a bad password at
                # door speed would lock the service account.
                raise self._failed(failed.exc, failed.phase, connecting=True) from failed.exc
        return op(self.conn, max(0.001, deadline - time.monotonic()) if long else self._op_timeout(deadline))

    def _op_timeout(self, deadline: float) -> float:
        """``operation_timeout``, cut short by what is left of the call's deadline."""
        return max(0.001, min(float(self.settings.operation_timeout), deadline - time.monotonic()))

    def close(self) -> None:
        with self.lock:
            self._drop()
