"""The audit log: who did what to which customer or card, when, from where, why, and with what result.

``privacy-security.md`` §3 (MLPS evaluation points; Cybersecurity Law Art. 21): an audit record carries
date and time, event type, subject, object and result, and is protected from deletion and overwrite.
This module keeps those records in one SQLite file, append-only and tamper-evident:

* SQLite triggers ABORT every UPDATE and DELETE of an ``audit`` row, so a plain SQL edit fails loudly.
  (They are recreated whenever the log is opened.)
* Each entry carries the hash of the one before it.  Someone who drops the triggers and edits, deletes
  or reorders rows breaks the chain, and :meth:`AuditLog.verify` names the first broken entry.
  A chain alone cannot show that entries were cut off the *end*: the shortened log is a valid chain.
  That needs an anchor kept outside the file, e.g. the last hash printed in a daily report.

Canonical encoding (so an auditor can re-verify with any tool)::

    body  = JSON object of the fields seq, at, actor, role, branch, action, object, source, reason,
            result -- keys sorted, no whitespace (separators "," and ":"), non-ASCII written as
            UTF-8 (not \\u escapes), encoded UTF-8; ``at`` is the shortest decimal that round-trips
            the IEEE-754 double (Python ``repr``, e.g. ``1717000000.25``, ``1717000000.0``)
    hash  = lowercase hex SHA-256 of ( prev_hash as 64 ASCII hex characters  ||  body )

The first entry's ``prev_hash`` is 64 zeros.  In Python:
``hashlib.sha256(prev.encode() + json.dumps(fields, sort_keys=True, separators=(",", ":"),
ensure_ascii=False).encode()).hexdigest()``.

No ID number or mobile number is stored in clear: ``object`` should hold a customer number or a card
EPC, but any free-text field that contains something looking like an 18-character Chinese ID number
or an 11-digit mobile number is masked with :mod:`vipsense.privacy` before it is hashed and stored.
So an ``AuditEntry`` can be printed as it is.

``at`` is UNIX time (seconds since the epoch, UTC), so it needs no zone.

Not here yet: retention (MLPS asks ≥ 6 months).  Purging old entries must keep the rest verifiable,
e.g. by recording a signed checkpoint (seq and hash of the last purged entry) that verify() starts
from; that is left for later.  So is access control (the auditor role that administrators do not
hold), which belongs to the CLI/service that opens this file.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from .privacy import mask_id_number, mask_mobile

if TYPE_CHECKING:
    from .config.profile import Profile

GENESIS_HASH = "0" * 64


def audit_path(profile: Profile) -> Path:
    """Where a branch keeps its audit log: one file per branch, beside its visit log."""
    return profile.data_dir / "audit.sqlite3"


class AuditAction(str, enum.Enum):
    LOOKUP = "lookup"
    VIEW = "view"
    UNMASK = "unmask"
    EXPORT = "export"
    CARD_ISSUE = "card_issue"
    CARD_REVOKE = "card_revoke"
    CARD_LOST = "card_lost"
    CARD_REISSUE = "card_reissue"
    CARD_RESTORE = "card_restore"  #: a card reported lost was found and made active again
    CONSENT = "consent"  #: a customer's separate consent to recognition at the door was recorded
    IMPORT = "import"
    PURGE = "purge"
    SYNC = "sync"  #: a branch replica refreshed from the central store (personal data copied)
    LOGIN = "login"
    CONFIG_CHANGE = "config_change"
    PERMISSION_CHANGE = "permission_change"


class AuditResult(str, enum.Enum):
    SUCCESS = "success"
    DENIED = "denied"
    ERROR = "error"


#: Actions that must say why (privacy-security.md §3: "reason code where required (manual look-up,
#: unmask)").  A look-up by ID number needs one too, but only the caller knows what it looked up by.
REASON_REQUIRED = frozenset({AuditAction.UNMASK})

#: The fields that go into the hash, besides prev_hash.  Order is irrelevant (keys are sorted).
HASHED_FIELDS = ("seq", "at", "actor", "role", "branch", "action", "object", "source", "reason", "result")
TEXT_FIELDS = ("actor", "role", "branch", "object", "source", "reason")

# Not part of a longer run of letters/digits, so a 24-hex-digit EPC is never taken for an ID number.
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[0-9Xx](?![0-9A-Za-z])")
_MOBILE = re.compile(r"(?<![0-9A-Za-z])1[3-9]\d{9}(?![0-9A-Za-z])")


def mask_personal_numbers(text: str) -> str:
    """``text`` with anything that looks like an ID number or a mobile number masked."""
    text = _ID_NUMBER.sub(lambda m: mask_id_number(m.group()), text)
    return _MOBILE.sub(lambda m: mask_mobile(m.group()), text)


@attrs.frozen(slots=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    role: str
    branch: str
    action: AuditAction = attrs.field(converter=AuditAction)
    object: str
    source: str
    reason: str
    result: AuditResult = attrs.field(converter=AuditResult)
    prev_hash: str
    hash: str


@attrs.frozen(slots=True)
class VerifyResult:
    ok: bool
    checked: int
    first_broken: int | None = None
    problem: str = ""


def canonical_bytes(fields: dict) -> bytes:
    """The canonical encoding of an entry's hashed fields (see the module docstring)."""
    body = {name: fields[name] for name in HASHED_FIELDS}
    for name in ("action", "result"):  # enums are hashed as their plain string values
        body[name] = getattr(body[name], "value", body[name])
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(prev_hash: str, fields: dict) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_bytes(fields)).hexdigest()


@attrs.frozen(slots=True)
class AuditRecord:
    """An event to record, before it is chained (see :meth:`AuditLog.append`)."""

    actor: str
    role: str
    branch: str
    action: AuditAction | str
    object: str
    source: str
    result: AuditResult | str
    reason: str = ""
    at: float | None = None  #: default: now


def _checked(record: AuditRecord) -> dict:
    """The record's hashed fields, validated and with personal numbers masked (``seq`` added later)."""
    action = AuditAction(record.action)
    result = AuditResult(record.result)
    text = {name: getattr(record, name) for name in TEXT_FIELDS}
    for name, value in text.items():
        if not isinstance(value, str):
            raise TypeError(f"audit field {name!r} must be a str, got {type(value).__name__}")
    if action in REASON_REQUIRED and not record.reason.strip():
        raise ValueError(f"audit action {action.value!r} needs a reason")
    if not record.actor.strip():
        raise ValueError("audit entry needs an actor (a unique user or service id)")
    at = time.time() if record.at is None else float(record.at)
    if not math.isfinite(at):
        raise ValueError(f"audit time must be a finite UNIX time, got {at!r}")
    for name, value in text.items():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"audit field {name!r} is not valid Unicode text") from None
        text[name] = mask_personal_numbers(value)
    return dict(at=at, action=action, result=result, **text)


SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY,
    at        REAL NOT NULL,
    actor     TEXT NOT NULL,
    role      TEXT NOT NULL,
    branch    TEXT NOT NULL,
    action    TEXT NOT NULL,
    object    TEXT NOT NULL,
    source    TEXT NOT NULL,
    reason    TEXT NOT NULL,
    result    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE refused'); END;
"""

_COLUMNS = ", ".join((*HASHED_FIELDS, "prev_hash", "hash"))


class AuditLog:
    """One SQLite file (WAL), one connection; safe to share between threads and between processes.

    ``synchronous="FULL"`` by default: an audit record is worth one fsync, and audit volume is small.
    """

    def __init__(self, path: Path, synchronous: str = "FULL", timeout: float = 10.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=timeout)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def append(
        self,
        actor: str,
        role: str,
        branch: str,
        action: AuditAction | str,
        object: str,
        source: str,
        result: AuditResult | str,
        reason: str = "",
        at: float | None = None,
    ) -> AuditEntry:
        """Record one event and return it as stored (personal numbers masked, chained)."""
        record = AuditRecord(actor, role, branch, action, object, source, result, reason, at)
        return self.append_many([record])[0]

    def append_many(self, records: list[AuditRecord]) -> list[AuditEntry]:
        """Record several events in one transaction (one fsync): the door's look-ups come in batches.

        All are checked before any is written, so a bad record leaves the log as it was."""
        checked = [_checked(r) for r in records]
        if not checked:
            return []
        entries: list[AuditEntry] = []
        with self._lock:
            # IMMEDIATE takes the write lock before reading the chain's head, so two processes
            # appending at once queue up (busy timeout) instead of both chaining onto the same entry.
            self.db.execute("BEGIN IMMEDIATE")
            try:
                last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
                for fields in checked:
                    fields["seq"] = seq
                    entry = AuditEntry(**fields, prev_hash=prev_hash, hash=entry_hash(prev_hash, fields))
                    entries.append(entry)
                    seq, prev_hash = seq + 1, entry.hash
                self.db.executemany(
                    f"INSERT INTO audit ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [_row(e) for e in entries],
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return entries

    def verify(self, anchor: tuple[int, str] | None = None) -> VerifyResult:
        """Walk the whole chain; report the first entry that is edited, missing, or out of place.

        ``anchor`` is ``(seq, hash)`` of an entry recorded outside this file (e.g. printed in a daily
        report): the chain must still contain it, which catches entries cut off the end.
        """
        result = self._verify_chain()
        if result.ok and anchor is not None:
            seq, expected = anchor
            with self._lock:
                row = self.db.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return _broken(
                    result.checked,
                    seq,
                    f"entry {seq} is missing: the anchor says it existed (log truncated?)",
                )
            if row[0] != expected:
                return _broken(result.checked, seq, f"entry {seq}: hash does not match the anchor")
        return result

    def _verify_chain(self) -> VerifyResult:
        checked = 0
        expected_seq, prev_hash = 1, GENESIS_HASH
        with self._lock:
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq")
            while True:
                try:
                    row = rows.fetchone()
                except sqlite3.OperationalError as exc:  # e.g. text that is not UTF-8, written by hand
                    return _broken(checked, expected_seq, f"entry {expected_seq}: unreadable ({exc})")
                if row is None:
                    break
                fields = dict(zip((*HASHED_FIELDS, "prev_hash", "hash"), row, strict=True))
                seq = fields["seq"]
                if seq != expected_seq:
                    if seq == expected_seq + 1:
                        missing = f"entry {expected_seq} is missing"
                    else:
                        missing = f"entries {expected_seq}..{seq - 1} are missing"
                    after = f"follows {expected_seq - 1}" if expected_seq > 1 else "is the first"
                    return _broken(checked, expected_seq, f"entry {seq} {after}: {missing}")
                if fields["prev_hash"] != prev_hash:
                    before = f"entry {seq - 1}" if seq > 1 else "the genesis hash"
                    return _broken(checked, seq, f"entry {seq}: prev_hash does not match {before}")
                if fields["hash"] != _hash_or_none(prev_hash, fields):
                    return _broken(checked, seq, f"entry {seq}: hash does not match its contents (edited?)")
                checked += 1
                expected_seq, prev_hash = seq + 1, fields["hash"]
        return VerifyResult(ok=True, checked=checked)

    def entries(
        self, since: float | None = None, actor: str | None = None, action: AuditAction | str | None = None
    ) -> Iterator[AuditEntry]:
        """Entries in chain order, optionally only those at or after ``since``, by ``actor``, of ``action``.

        Run :meth:`verify` first: this reads what is stored, it does not check it.
        """
        where, args = [], []
        if since is not None:
            where.append("at >= ?")
            args.append(float(since))
        if actor is not None:
            where.append("actor = ?")
            args.append(actor)
        if action is not None:
            where.append("action = ?")
            args.append(AuditAction(action).value)
        sql = f"SELECT {_COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self.db.execute(sql + " ORDER BY seq", args).fetchall()
        for row in rows:
            yield AuditEntry(*row)

    def close(self) -> None:
        with self._lock:
            self.db.close()


def _row(entry: AuditEntry) -> tuple:
    values = (getattr(entry, name) for name in (*HASHED_FIELDS, "prev_hash", "hash"))
    return tuple(getattr(value, "value", value) for value in values)


def _hash_or_none(prev_hash: str, fields: dict) -> str | None:
    """The hash of a stored row, or None if a hand edit left a value JSON cannot encode (a BLOB)."""
    try:
        return entry_hash(prev_hash, fields)
    except (TypeError, ValueError):
        return None


def _broken(checked: int, seq: int, problem: str) -> VerifyResult:
    return VerifyResult(ok=False, checked=checked, first_broken=seq, problem=problem)
