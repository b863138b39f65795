"""Web accounts and third-party API tokens, in ``<data dir>/users.sqlite3``.

There is no default account: the first administrator is made with ``vipsense users add``.  Passwords
are stored as Werkzeug scrypt hashes, tokens as SHA-256 digests (a token is 32 random bytes, so a fast
hash is enough; the token itself is shown once, when it is made).  Wrong passwords are counted per
account, and after ``Lockout.attempts`` in a row the account is locked for ``Lockout.lock_for``.
"""

from __future__ import annotations

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

from ..model import Role
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
"""

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

    def __repr__(self) -> str:  # never any hash
        return f"User({self.username!r}, {self.role.value})"


@attrs.frozen
class Token:
    name: str
    fields: tuple[str, ...]
    per_minute: int
    created_at: float
    revoked_at: float | None


@attrs.frozen
class LoginResult:
    user: User | None  #: set when the login succeeded
    problem: str = ""  #: for the audit log: why it failed (the page only ever says "wrong name or password")
    locked: bool = False


def check_password_rules(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    if username.lower() in password.lower():
        raise AccountError("a password must not contain the user name")
    kinds = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if kinds < 3:
        raise AccountError("a password needs three of: lower case, upper case, digits, other characters")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class UserStore:
    """One SQLite file; safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=10, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        path.chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- accounts ---------------------------------------------------------------------------------

    def add(self, username: str, role: Role, password: str | None, ldap: bool = False) -> User:
        username = username.strip()
        if not username or len(username) > 64 or any(c.isspace() or not c.isprintable() for c in username):
            raise AccountError("a user name is 1 to 64 printable characters without spaces")
        if ldap == (password is not None):
            raise AccountError("give a password, or --ldap for an account checked by the directory")
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
                raise AccountError(f"there is already an account {username!r}") from None
        found = self.get(username)
        assert found is not None
        return found

    def set_password(self, username: str, password: str) -> None:
        self._need(username)
        check_password_rules(password, username)
        digest = _hash(password)
        with self._lock:
            self._db.execute(
                "UPDATE users SET password_hash=?, ldap=0, failures=0, locked_until=0 WHERE username=?",
                (digest, username),
            )

    def set_disabled(self, username: str, disabled: bool) -> None:
        self._need(username)
        with self._lock:
            self._db.execute("UPDATE users SET disabled=? WHERE username=?", (int(disabled), username))

    def unlock(self, username: str) -> None:
        self._need(username)
        with self._lock:
            self._db.execute("UPDATE users SET failures=0, locked_until=0 WHERE username=?", (username,))

    def _need(self, username: str) -> User:
        user = self.get(username)
        if user is None:
            raise AccountError(f"no account {username!r}")
        return user

    def get(self, username: str) -> User | None:
        with self._lock:
            row = self._db.execute(
                "SELECT username, role, ldap, disabled, locked_until, failures, created_at, last_login"
                " FROM users WHERE username=?",
                (username,),
            ).fetchone()
        return _user(row) if row else None

    def list(self) -> list[User]:
        with self._lock:
            rows = self._db.execute(
                "SELECT username, role, ldap, disabled, locked_until, failures, created_at, last_login"
                " FROM users ORDER BY username"
            ).fetchall()
        return [_user(r) for r in rows]

    def login(
        self,
        username: str,
        password: str,
        lockout: Lockout,
        ldap_check: Callable[[str, str], bool | None] | None = None,
    ) -> LoginResult:
        """Check a password (or the directory, for LDAP accounts), counting failures and locking."""
        now = self.clock()
        with self._lock:
            row = self._db.execute(
                "SELECT password_hash, ldap, disabled, locked_until FROM users WHERE username=?", (username,)
            ).fetchone()
        if row is None:
            _matches(_dummy_hash(), password)
            return LoginResult(None, "no such account")
        digest, is_ldap, disabled, locked_until = row
        if locked_until > now:
            return LoginResult(
                None, f"account locked until {time.strftime('%H:%M:%S', time.localtime(locked_until))}", True
            )
        if is_ldap:
            if ldap_check is None:
                return LoginResult(None, "an LDAP account, but no directory to ask")
            answer = ldap_check(username, password)
            if answer is None:  # the directory is away: refuse, but do not count it against the user
                return LoginResult(None, "the directory could not be asked")
            good = answer
        else:
            good = digest is not None and _matches(digest, password)
        if good and disabled:
            return LoginResult(None, "account disabled")
        with self._lock:
            if good:
                self._db.execute(
                    "UPDATE users SET failures=0, locked_until=0, last_login=? WHERE username=?",
                    (now, username),
                )
            else:
                self._db.execute(
                    "UPDATE users SET failures=failures+1,"
                    " locked_until=CASE WHEN failures+1 >= ? THEN ? ELSE locked_until END WHERE username=?",
                    (lockout.attempts, now + float(lockout.lock_for), username),
                )
        if not good:
            user = self.get(username)
            locked = bool(user and user.locked_until > now)
            return LoginResult(None, "wrong password" + ("; account now locked" if locked else ""), locked)
        return LoginResult(self.get(username))

    # -- API tokens -------------------------------------------------------------------------------

    def add_token(self, name: str, fields: tuple[str, ...], per_minute: int) -> str:
        """Make a token; returns it (shown once, stored only as a digest)."""
        if not name.strip():
            raise AccountError("a token needs a name (the system that uses it)")
        if per_minute < 1:
            raise AccountError("--per-minute must be at least 1")
        token = "vst_" + secrets.token_urlsafe(32)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO tokens (name, digest, fields, per_minute, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (name.strip(), token_digest(token), ",".join(fields), per_minute, self.clock()),
                )
            except sqlite3.IntegrityError:
                raise AccountError(f"there is already a token {name!r}") from None
        return token

    def revoke_token(self, name: str) -> None:
        with self._lock:
            cur = self._db.execute(
                "UPDATE tokens SET revoked_at=? WHERE name=? AND revoked_at IS NULL", (self.clock(), name)
            )
        if cur.rowcount == 0:
            raise AccountError(f"no active token {name!r}")

    def token(self, presented: str) -> Token | None:
        """The active token ``presented`` is, or None (compared by digest, in constant time)."""
        digest = token_digest(presented)
        with self._lock:
            rows = self._db.execute(
                "SELECT name, digest, fields, per_minute, created_at, revoked_at FROM tokens"
                " WHERE revoked_at IS NULL"
            ).fetchall()
        for name, stored, fields, per_minute, created_at, revoked_at in rows:
            if hmac.compare_digest(stored, digest):
                return Token(
                    name, tuple(f for f in fields.split(",") if f), per_minute, created_at, revoked_at
                )
        return None

    def tokens(self) -> list[Token]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, fields, per_minute, created_at, revoked_at FROM tokens ORDER BY name"
            ).fetchall()
        return [Token(n, tuple(f for f in fs.split(",") if f), pm, c, r) for n, fs, pm, c, r in rows]


def _user(row: tuple) -> User:
    username, role, ldap, disabled, locked_until, failures, created_at, last_login = row
    return User(
        username, Role(role), bool(ldap), bool(disabled), locked_until, failures, created_at, last_login
    )


def users_path(data_dir: Path) -> Path:
    return data_dir / "users.sqlite3"
