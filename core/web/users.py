"""Web accounts, their sessions and login throttling, and third-party API tokens, in
``<data dir>/users.sqlite3``.

There is no default account: the first administrator is made with ``vipsense users add``.  Passwords
are stored as Werkzeug scrypt hashes, tokens as SHA-256 digests (a token is 32 random bytes, so a fast
hash is enough; the token itself is shown once, when it is made).

Sessions are records here (pen test point 3): the browser's cookie carries only a random session id,
and this file its SHA-256 digest with the user, the role, when it was made, when it was last used and
from where.  Logging out, a password change, disabling the account and ``vipsense users logout-all``
delete the records, so a copied cookie is worth nothing from that moment, in the running web too
(it reads this file on every request).

Logins are throttled, never locked hard (pen test point 6; :class:`~.settings.Lockout`): failures are
counted per source address and account, per source, and per account, each count past its threshold
makes the next attempt wait twice as long (1 s up to ``lock_for``), and a count is forgotten
``lock_for`` after its last failure.  Every failure -- unknown name, wrong password, a wait not yet
over, a disabled account -- does the same scrypt work and gets the same answer.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from .. import i18n
from ..i18n import _
from ..model import Role
from ..storage.migrations import adding_columns, migrate
from .settings import Lockout

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT,          -- NULL for accounts that log in through LDAP
    ldap INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    last_login REAL
);
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    fields TEXT NOT NULL,        -- the customer fields this token may read, comma-separated
    per_minute INTEGER NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    digest TEXT PRIMARY KEY,     -- SHA-256 of the session id in the cookie (never the id itself)
    username TEXT NOT NULL,
    role TEXT NOT NULL,          -- the role at login: a changed role ends the session
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    source TEXT NOT NULL         -- the address it logged in from
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (username);
CREATE TABLE IF NOT EXISTS login_failures (
    kind TEXT NOT NULL,          -- pair (this source, this account), source, or account
    account TEXT NOT NULL,       -- '' for kind source
    source TEXT NOT NULL,        -- '' for kind account
    failures INTEGER NOT NULL,
    last_failure REAL NOT NULL,
    PRIMARY KEY (kind, account, source)
);
"""
#: columns added since the first release, made on open: (table, column, declaration)
#: ``PRAGMA user_version`` 1: tokens expire and record their last use
#: 2: an account may choose its own language (``locale``: ``zh_CN``, ``en`` or NULL, the branch's)
MIGRATIONS = (
    adding_columns({"tokens": (("expires_at", "REAL"), ("last_used_at", "REAL"))}),
    adding_columns({"users": (("locale", "TEXT"),)}),
)
#: a session's last use is written at most this often (seconds): not one write per request
SEEN_EVERY = 5.0
#: failures before the waits begin, as a multiple of ``Lockout.attempts``: a source over all accounts,
#: and an account from all sources, get more than one source on one account
WIDE_FACTOR = 4
#: addresses that must have failed on one account before that account waits for everyone
ACCOUNT_SOURCES = 3


MIN_PASSWORD = 12  #: characters; privacy-security.md §4 item 3 (complexity, no defaults)
#: scrypt with Werkzeug's default cost (n=2**15, r=8, p=1): about 50 ms per check on a server core
HASH_METHOD = "scrypt"
#: customer fields an API token may be given (``vipsense tokens add --fields``); ID and mobile go out
#: masked even then
TOKEN_FIELDS = (
    "customer_no",
    "name",
    "tier",
    "company",
    "usual_business",
    "client_manager",
    "id_number",
    "mobile",
)
DEFAULT_TOKEN_FIELDS = ("customer_no", "name", "tier")


def _hash(password: str) -> str:
    # werkzeug (~80 ms to import) only where a password is hashed, not in every command that starts
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password, method=HASH_METHOD)


def _matches(digest: str, password: str) -> bool:
    from werkzeug.security import check_password_hash

    return check_password_hash(digest, password)


@functools.cache
def _dummy_hash() -> str:
    """A hash checked when the account does not exist, so a wrong name costs as long as a wrong
    password.  Made on first use: an scrypt hash costs ~50 ms, which every command would pay if it
    were made at import."""
    return _hash("no such account, but take the time")


class AccountError(ValueError):
    """A request ``vipsense users`` cannot carry out; the message says why."""


@attrs.frozen
class User:
    username: str
    role: Role
    ldap: bool
    disabled: bool
    locked_until: float
    failures: int
    created_at: float
    last_login: float | None
    #: the language the account reads the web in (``zh_CN``, ``en``); None: the branch's, else the browser's
    locale: str | None = None

    def __repr__(self) -> str:  # never any hash
        return f"User({self.username!r}, {self.role.value})"


@attrs.frozen
class Token:
    name: str
    fields: tuple[str, ...]
    per_minute: int
    created_at: float
    revoked_at: float | None
    expires_at: float | None = None  #: after this the token is refused like an unknown one
    last_used_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@attrs.frozen
class LoginResult:
    user: User | None  #: set when the login succeeded
    problem: str = ""  #: for the audit log: why it failed (the page gives one answer to every failure)
    locked: bool = False  #: refused because a wait was not over (audit only; the answer is the same)


@attrs.frozen
class Session:
    """A logged-in browser: what the cookie's session id stands for."""

    digest: str
    username: str
    role: str
    created_at: float
    last_seen: float
    source: str

    def __repr__(self) -> str:  # never the digest
        return f"Session({self.username!r}, {self.role}, from {self.source})"


def session_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def throttle_wait(failures: int, last_failure: float, threshold: int, longest: float, now: float) -> float:
    """Seconds still to wait before the next attempt: none below ``threshold`` failures, then 1 s,
    2 s, 4 s ... (doubling with each failure) after the last one, never more than ``longest``."""
    if failures < threshold or now - last_failure >= longest:
        return 0.0
    delay = min(longest, 2.0 ** min(failures - threshold, 40))
    return max(0.0, last_failure + delay - now)


def check_password_rules(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(_("a password needs at least {n} characters").format(n=MIN_PASSWORD))
    if username.lower() in password.lower():
        raise AccountError(_("a password must not contain the user name"))
    kinds = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if kinds < 3:
        raise AccountError(_("a password needs three of: lower case, upper case, digits, other characters"))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class UserStore:
    """One SQLite file; safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path, clock: Callable[[], float] | None = None) -> None:
        self.path = path
        self.clock = clock or (lambda: time.time())  # looked up at each call: tests may move time
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=10, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        migrate(self._db, MIGRATIONS)
        path.chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- accounts ---------------------------------------------------------------------------------

    def add(self, username: str, role: Role, password: str | None, ldap: bool = False) -> User:
        username = username.strip()
        if not username or len(username) > 64 or any(c.isspace() or not c.isprintable() for c in username):
            raise AccountError(_("a user name is 1 to 64 printable characters without spaces"))
        if ldap == (password is not None):
            raise AccountError(_("give a password, or --ldap for an account checked by the directory"))
        digest = None
        if password is not None:
            check_password_rules(password, username)
            digest = _hash(password)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO users (username, role, password_hash, ldap, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (username, role.value, digest, int(ldap), self.clock()),
                )
            except sqlite3.IntegrityError:
                raise AccountError(
                    _("there is already an account {username!r}").format(username=username)
                ) from None
        found = self.get(username)
        assert found is not None
        return found

    def set_password(self, username: str, password: str) -> int:
        """A new password; every session of the account ends (returns how many)."""
        self._need(username)
        check_password_rules(password, username)
        digest = _hash(password)
        with self._lock:
            self._db.execute(
                "UPDATE users SET password_hash=?, ldap=0, failures=0, locked_until=0 WHERE username=?",
                (digest, username),
            )
        return self.end_sessions(username)

    def set_disabled(self, username: str, disabled: bool) -> int:
        """Disable (every session ends; returns how many) or enable an account."""
        self._need(username)
        with self._lock:
            self._db.execute("UPDATE users SET disabled=? WHERE username=?", (int(disabled), username))
        return self.end_sessions(username) if disabled else 0

    def unlock(self, username: str) -> None:
        """Forget the account's failed logins, from every address: it may log in at once."""
        self._need(username)
        with self._lock:
            self._db.execute("UPDATE users SET failures=0, locked_until=0 WHERE username=?", (username,))
            self._db.execute(
                "DELETE FROM login_failures WHERE account=? AND kind IN ('pair', 'account')", (username,)
            )

    def set_locale(self, username: str, locale: str | None) -> None:
        """The account's own language (None: the branch's, else the browser's)."""
        self._need(username)
        if locale is not None and locale not in i18n.LOCALES:
            raise AccountError(
                _("{locale!r} is not a language vipsense speaks; choose one of {choices}").format(
                    locale=locale, choices=", ".join(i18n.LOCALES)
                )
            )
        with self._lock:
            self._db.execute("UPDATE users SET locale=? WHERE username=?", (locale, username))

    def _need(self, username: str) -> User:
        user = self.get(username)
        if user is None:
            raise AccountError(_("no account {username!r}").format(username=username))
        return user

    def get(self, username: str) -> User | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE username=?",
                (username,),
            ).fetchone()
        return _user(row) if row else None

    def list(self) -> list[User]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY username").fetchall()
        return [_user(r) for r in rows]

    def login(
        self,
        username: str,
        password: str,
        lockout: Lockout,
        ldap_check: Callable[[str, str], bool | None] | None = None,
        source: str = "",
        now: float | None = None,
    ) -> LoginResult:
        """Check a password (or the directory, for LDAP accounts) from ``source``, throttled.

        Every way of failing costs one scrypt check (the account's hash or :func:`_dummy_hash`), so the
        time taken does not tell whether the name exists, whether a wait was running or whether the
        account is disabled; the caller answers all of them alike."""
        now = self.clock() if now is None else now
        with self._lock:
            row = self._db.execute(
                "SELECT password_hash, ldap, disabled FROM users WHERE username=?", (username,)
            ).fetchone()
            waits = self._waits(username, source, lockout, now)
        if waits:
            _matches(_dummy_hash(), password)  # the same work as a real check: the wait is no oracle
            which = ", ".join(f"{kind} {wait:.0f} s" for kind, wait in waits.items())
            return LoginResult(None, f"too many failures, not checked: wait ({which})", True)
        if row is None:
            _matches(_dummy_hash(), password)
            self._failed(username, source, lockout, now, exists=False)
            return LoginResult(None, "no such account")
        digest, is_ldap, disabled = row
        if is_ldap:
            if ldap_check is None:
                _matches(_dummy_hash(), password)
                return LoginResult(None, "an LDAP account, but no directory to ask")
            answer = ldap_check(username, password)
            if answer is None:  # the directory is away: refuse, but do not count it against the user
                return LoginResult(None, "the directory could not be asked")
            good = answer
        else:
            good = _matches(digest or _dummy_hash(), password) and digest is not None
        if good and disabled:
            return LoginResult(None, "account disabled")
        if not good:
            self._failed(username, source, lockout, now, exists=True)
            return LoginResult(None, "wrong password")
        with self._lock:
            self._db.execute(
                "UPDATE users SET failures=0, locked_until=0, last_login=? WHERE username=?", (now, username)
            )
            self._db.execute(
                "DELETE FROM login_failures WHERE (kind='pair' AND account=? AND source=?)"
                " OR (kind='account' AND account=?)",
                (username, source, username),
            )
        return LoginResult(self.get(username))

    def _waits(self, username: str, source: str, lockout: Lockout, now: float) -> dict[str, float]:
        """The waits running for a login of ``username`` from ``source``, by count (lock held).

        One address on one account waits after ``attempts`` failures; one address over all accounts
        after ``WIDE_FACTOR x attempts``.  The whole account waits, from every address, only after as
        many failures from at least :data:`ACCOUNT_SOURCES` addresses: one attacker's address can never
        shut a real user out, however long it keeps trying."""
        longest = float(lockout.lock_for)
        thresholds = {"pair": lockout.attempts, "source": lockout.attempts * WIDE_FACTOR}
        thresholds["account"] = lockout.attempts * WIDE_FACTOR
        waits: dict[str, float] = {}
        for kind, account, src in (
            ("pair", username, source),
            ("source", "", source),
            ("account", username, ""),
        ):
            found = self._db.execute(
                "SELECT failures, last_failure FROM login_failures WHERE kind=? AND account=? AND source=?",
                (kind, account, src),
            ).fetchone()
            if found is None:
                continue
            if kind == "account":
                sources = self._db.execute(
                    "SELECT COUNT(*) FROM login_failures"
                    " WHERE kind='pair' AND account=? AND last_failure >= ?",
                    (username, now - longest),
                ).fetchone()[0]
                if sources < ACCOUNT_SOURCES:
                    continue
            wait = throttle_wait(found[0], found[1], thresholds[kind], longest, now)
            if wait > 0:
                waits[kind] = wait
        return waits

    def _failed(self, username: str, source: str, lockout: Lockout, now: float, exists: bool) -> None:
        """Count a failure under each count (one idle for ``lock_for`` starts again from 1)."""
        with self._lock:
            self._db.execute(
                "DELETE FROM login_failures WHERE last_failure < ?", (now - float(lockout.lock_for),)
            )
            for kind, account, src in (
                ("pair", username, source),
                ("source", "", source),
                ("account", username, ""),
            ):
                self._db.execute(
                    "INSERT INTO login_failures (kind, account, source, failures, last_failure)"
                    " VALUES (?, ?, ?, 1, ?) ON CONFLICT (kind, account, source)"
                    " DO UPDATE SET failures=failures+1, last_failure=excluded.last_failure",
                    (kind, account, src, now),
                )
            if exists:  # for vipsense users list: the account's count, and until when it must wait
                failures = self._db.execute(
                    "SELECT failures FROM login_failures WHERE kind='account' AND account=?", (username,)
                ).fetchone()[0]
                wait = self._waits(username, "", lockout, now).get("account", 0.0)
                self._db.execute(
                    "UPDATE users SET failures=?, locked_until=? WHERE username=?",
                    (failures, now + wait if wait else 0, username),
                )

    # -- sessions ---------------------------------------------------------------------------------

    def start_session(self, user: User, source: str, now: float) -> str:
        """A new session of ``user``; returns its id, for the cookie only (stored as a digest)."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions (digest, username, role, created_at, last_seen, source)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (session_digest(session_id), user.username, user.role.value, now, now, source[:80]),
            )
        return session_id

    def session(
        self, session_id: str, idle: float, lifetime: float, now: float
    ) -> tuple[Session | None, str]:
        """The live session ``session_id`` is, marked as used now; or None and why not ("" when
        there is no such session; "idle" or "lifetime" when it has just ended by time)."""
        digest = session_digest(session_id)
        with self._lock:
            row = self._db.execute(
                "SELECT digest, username, role, created_at, last_seen, source FROM sessions WHERE digest=?",
                (digest,),
            ).fetchone()
            if row is None:
                return None, ""
            found = Session(*row)
            why = (
                "idle"
                if now - found.last_seen > idle
                else "lifetime"
                if now - found.created_at > lifetime
                else ""
            )
            if why:
                self._db.execute("DELETE FROM sessions WHERE digest=?", (digest,))
                return None, why
            if now - found.last_seen >= SEEN_EVERY:
                self._db.execute("UPDATE sessions SET last_seen=? WHERE digest=?", (now, digest))
        return found, ""

    def end_session(self, session_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE digest=?", (session_digest(session_id),))

    def end_sessions(self, username: str | None = None) -> int:
        """End every session of ``username`` (None: of everyone); returns how many ended."""
        with self._lock:
            if username is None:
                cur = self._db.execute("DELETE FROM sessions")
            else:
                cur = self._db.execute("DELETE FROM sessions WHERE username=?", (username,))
        return cur.rowcount

    def sessions(self, username: str | None = None) -> builtins.list[Session]:  # list: a method here
        with self._lock:
            rows = self._db.execute(
                "SELECT digest, username, role, created_at, last_seen, source FROM sessions"
                " WHERE ? IS NULL OR username=? ORDER BY created_at",
                (username, username),
            ).fetchall()
        return [Session(*r) for r in rows]

    def purge_sessions(self, idle: float, lifetime: float, now: float) -> int:
        """Delete the records of sessions that have ended by time (they are refused anyway)."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM sessions WHERE last_seen < ? OR created_at < ?", (now - idle, now - lifetime)
            )
        return cur.rowcount

    # -- API tokens -------------------------------------------------------------------------------

    def add_token(
        self, name: str, fields: tuple[str, ...], per_minute: int, expires_in: float | None = None
    ) -> str:
        """Make a token, valid for ``expires_in`` seconds (None: until revoked); returns it (shown
        once, stored only as a digest)."""
        if not name.strip():
            raise AccountError(_("a token needs a name (the system that uses it)"))
        if per_minute < 1:
            raise AccountError(_("--per-minute must be at least 1"))
        if expires_in is not None and expires_in <= 0:
            raise AccountError(_("--expires must be longer than 0s, e.g. 90d"))
        token = "vst_" + secrets.token_urlsafe(32)
        now = self.clock()
        expires_at = None if expires_in is None else now + expires_in
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO tokens (name, digest, fields, per_minute, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name.strip(), token_digest(token), ",".join(fields), per_minute, now, expires_at),
                )
            except sqlite3.IntegrityError:
                raise AccountError(_("there is already a token {name!r}").format(name=name)) from None
        return token

    def revoke_token(self, name: str) -> None:
        with self._lock:
            cur = self._db.execute(
                "UPDATE tokens SET revoked_at=? WHERE name=? AND revoked_at IS NULL", (self.clock(), name)
            )
        if cur.rowcount == 0:
            raise AccountError(_("no active token {name!r}").format(name=name))

    def token(self, presented: str, now: float | None = None) -> Token | None:
        """The active, unexpired token ``presented`` is, or None (compared by digest, in constant
        time); its use is recorded for ``vipsense tokens list``.  An expired token is refused exactly
        like an unknown one, so the API (core/web/query_api.py) needs no check of its own."""
        now = time.time() if now is None else now
        digest = token_digest(presented)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_TOKEN_COLUMNS}, digest FROM tokens WHERE revoked_at IS NULL"
            ).fetchall()
        found = None
        for row in rows:
            if hmac.compare_digest(row[-1], digest):
                found = _token(row[:-1])
        if found is None or found.expired(now):
            return None
        with self._lock:
            self._db.execute("UPDATE tokens SET last_used_at=? WHERE name=?", (now, found.name))
        return attrs.evolve(found, last_used_at=now)

    def tokens(self) -> builtins.list[Token]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY name").fetchall()
        return [_token(r) for r in rows]


_TOKEN_COLUMNS = "name, fields, per_minute, created_at, revoked_at, expires_at, last_used_at"


def _token(row: tuple) -> Token:
    name, fields, per_minute, created_at, revoked_at, expires_at, last_used_at = row
    return Token(
        name,
        tuple(f for f in fields.split(",") if f),
        per_minute,
        created_at,
        revoked_at,
        expires_at,
        last_used_at,
    )


_USER_COLUMNS = "username, role, ldap, disabled, locked_until, failures, created_at, last_login, locale"


def _user(row: tuple) -> User:
    username, role, ldap, disabled, locked_until, failures, created_at, last_login, locale = row
    return User(
        username,
        Role(role),
        bool(ldap),
        bool(disabled),
        locked_until,
        failures,
        created_at,
        last_login,
        locale if locale in i18n.LOCALES else None,  # a value no longer shipped: the branch's
    )


def users_path(data_dir: Path) -> Path:
    return data_dir / "users.sqlite3"
