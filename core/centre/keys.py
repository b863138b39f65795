"""Branches and their keys: each branch signs its reports with a key of its own, which the centre keeps
sealed (AES-GCM, :mod:`vipsense.crypto`) with the centre's own data key (the centre profile's ``key``).

``vipsense centre branches add`` makes a random key, stores it sealed and shows it once, for branch IT
to put in the branch's secrets file; the centre never shows it again.  A revoked branch's reports are
refused from then on.  The ingest keeps a branch's key :data:`CACHE_SECONDS` (looking it up in a
transaction of its own cost 14 % of the ingest's interpreter time when keys were kept 2 s), and is not
outrun by a revocation or a new key made meanwhile by another process (``vipsense centre branches``):
the transaction that applies a batch locks the branch's row and checks there that it is not revoked
and that its sealed key is still the one the signature was checked with.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime, timezone
from zoneinfo import available_timezones

import attrs
from sqlalchemy import select, update

from ..config.types import Secret
from ..crypto import CipherError, DataKey
from ..i18n import lazy_gettext
from ..texts import Text
from . import schema
from .database import Database

MAX_ID = 64  #: a branch id's length at most (it is in every row and header)
CACHE_SECONDS = 300.0  #: how long a branch's key is kept; the apply's transaction checks it again
#: how long an unknown, keyless or revoked branch is remembered: short, so a branch added or given a
#: new key by the command is heard from within seconds
CACHE_MISSING = 2.0
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class BranchKeyError(Exception):
    """A branch cannot be added or revoked as asked; the text says why, for people."""


@attrs.frozen
class BranchInfo:
    """A branch as ``branches list`` shows it: never its key, only whether it has one."""

    branch_id: str
    name: str
    timezone: str
    created_at: datetime
    revoked_at: datetime | None
    has_key: bool
    last_heartbeat_at: datetime | None


@attrs.frozen
class BranchKey:
    """What the ingest needs of a branch: its key (None if it has none) and whether it is revoked."""

    branch_id: str
    key: bytes | None = attrs.field(repr=False)
    revoked: bool
    #: the key as the row holds it, sealed: the apply's transaction compares it with the row's
    sealed: bytes | None = attrs.field(default=None, repr=False)


def check_branch_id(branch_id: str) -> None:
    """A branch id is 1 to 64 lower-case letters, digits, ``-``, ``_`` or ``.``: it travels in a header."""
    if not branch_id or len(branch_id) > MAX_ID or not set(branch_id) <= _ID_CHARS:
        raise BranchKeyError(
            Text(
                lazy_gettext(
                    "{branch} is not a branch id: use 1 to {limit} lower-case letters, digits, - _ or ."
                ),
                branch=branch_id[:80],
                limit=MAX_ID,
            )
        )


def _aad(branch_id: str) -> bytes:
    """Bound to its row: a sealed key copied to another branch's row does not open."""
    return b"branches.key_enc\x00" + branch_id.encode("utf-8")


class BranchKeys:
    """Branches' keys in one centre database, sealed with ``centre_key``; thread-safe."""

    def __init__(self, database: Database, centre_key: Secret | str) -> None:
        text = centre_key.reveal() if isinstance(centre_key, Secret) else centre_key
        self.database = database
        self._key = DataKey(text, "centre.key")
        self._cache: dict[str, tuple[float, BranchKey | None]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BranchKeys({self.database.url!r}, {self._key!r})"

    def add(self, branch_id: str, name: str, timezone_name: str = "Asia/Shanghai") -> str:
        """Add the branch (or give a revoked or keyless one a new key, active again); returns the new
        key, to be shown once.  An active branch with a key is refused: revoke it first."""
        check_branch_id(branch_id)
        if timezone_name not in available_timezones():
            raise BranchKeyError(
                Text(lazy_gettext("{zone} is not a time zone (e.g. Asia/Shanghai)"), zone=timezone_name)
            )
        key = secrets.token_urlsafe(32)
        sealed = self._key.seal(key.encode("utf-8"), _aad(branch_id))
        table = schema.branches
        with self.database.begin(immediate=True) as conn:
            found = conn.execute(
                select(table.c.key_enc, table.c.revoked_at).where(table.c.branch_id == branch_id)
            ).first()
            if found is None:
                conn.execute(
                    table.insert().values(
                        branch_id=branch_id,
                        name=name or branch_id,
                        timezone=timezone_name,
                        created_at=datetime.now(timezone.utc),
                        key_enc=sealed,
                    )
                )
            elif found.key_enc is not None and found.revoked_at is None:
                raise BranchKeyError(
                    Text(
                        lazy_gettext(
                            "branch {branch} already has a key: revoke it first to give it a new one"
                        ),
                        branch=branch_id,
                    )
                )
            else:
                conn.execute(
                    update(table)
                    .where(table.c.branch_id == branch_id)
                    .values(name=name or branch_id, timezone=timezone_name, key_enc=sealed, revoked_at=None)
                )
        self.forget(branch_id)
        return key

    def list(self) -> list[BranchInfo]:
        """Every branch, by id; no keys."""
        t = schema.branches
        with self.database.begin() as conn:
            rows = conn.execute(
                select(
                    t.c.branch_id,
                    t.c.name,
                    t.c.timezone,
                    t.c.created_at,
                    t.c.revoked_at,
                    t.c.key_enc.is_not(None),
                    t.c.last_heartbeat_at,
                ).order_by(t.c.branch_id)
            ).all()
        return [BranchInfo(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]

    def revoke(self, branch_id: str) -> bool:
        """Refuse the branch's reports from now on; False if it was revoked already.  An unknown
        branch is a :class:`BranchKeyError`."""
        t = schema.branches
        with self.database.begin(immediate=True) as conn:
            found = conn.execute(select(t.c.revoked_at).where(t.c.branch_id == branch_id)).first()
            if found is None:
                raise BranchKeyError(
                    Text(lazy_gettext("no branch {branch} at this centre"), branch=branch_id)
                )
            if found.revoked_at is None:
                conn.execute(
                    update(t).where(t.c.branch_id == branch_id).values(revoked_at=datetime.now(timezone.utc))
                )
        self.forget(branch_id)
        return found.revoked_at is None

    def lookup(self, branch_id: str) -> BranchKey | None:
        """The branch's key and whether it is revoked; None for a branch the centre does not know.
        Kept :data:`CACHE_SECONDS` (:data:`CACHE_MISSING` when it is no use to the ingest)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(branch_id)
            if cached is not None:
                found = cached[1]
                usable = found is not None and found.key is not None and not found.revoked
                if now - cached[0] < (CACHE_SECONDS if usable else CACHE_MISSING):
                    return found
        t = schema.branches
        with self.database.begin() as conn:
            row = conn.execute(select(t.c.key_enc, t.c.revoked_at).where(t.c.branch_id == branch_id)).first()
        found = None
        if row is not None:
            key = None
            if row.key_enc is not None:
                try:
                    key = self._key.open(row.key_enc, _aad(branch_id))
                except Exception as exc:  # InvalidTag: another centre key, or an altered row
                    raise CipherError(
                        f"the key of branch {branch_id} does not open with centre.key {self._key.key_id}"
                    ) from exc
            found = BranchKey(branch_id, key, row.revoked_at is not None, row.key_enc)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[branch_id] = (now, found)
        return found

    def key_for(self, branch_id: str) -> bytes | None:
        """The key the branch signs with; None for an unknown, keyless or revoked branch."""
        found = self.lookup(branch_id)
        return None if found is None or found.revoked else found.key

    def forget(self, branch_id: str | None = None) -> None:
        """Drop a cached key (all of them when ``branch_id`` is None)."""
        with self._lock:
            if branch_id is None:
                self._cache.clear()
            else:
                self._cache.pop(branch_id, None)


__all__ = ["BranchInfo", "BranchKey", "BranchKeyError", "BranchKeys", "check_branch_id"]
