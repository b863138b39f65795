"""The audit log: who did what to which customer or card, when, from where, why, and with what result.

``privacy-security.md`` §3 (MLPS evaluation points; Cybersecurity Law Art. 21): an audit record carries
date and time, event type, subject, object and result, and is protected from deletion and overwrite.
This module keeps those records in one SQLite file, append-only and tamper-evident:

* SQLite triggers ABORT every UPDATE and DELETE of an ``audit`` row, so a plain SQL edit fails loudly.
  (They are recreated whenever the log is opened.)
* Each entry carries the hash of the one before it, and each hash is keyed (HMAC-SHA256) with the
  branch's audit key.  Someone who drops the triggers and edits, deletes or reorders rows breaks the
  chain, and :meth:`AuditLog.verify` names the first broken entry.  Without the key they cannot
  compute a chain that verifies again, so verification needs the key too.
* A chain alone cannot show that entries were cut off the *end*: the shortened log is a valid chain.
  So the log publishes anchors (:mod:`vipsense.storage.auditanchors`): the chain's length and head, signed
  with the key, appended to a file in a directory the profile names (write-once storage) and handed
  to the ``vipsense_audit_anchor`` hook.  :meth:`AuditLog.verify` checks the log against them.

Canonical encoding (so an auditor can re-verify with any tool)::

    body  = JSON object of the fields seq, at, actor, role, branch, action, object, source, reason,
            result -- keys sorted, no whitespace (separators "," and ":"), non-ASCII written as
            UTF-8 (not \\u escapes), encoded UTF-8; ``at`` is the shortest decimal that round-trips
            the IEEE-754 double (Python ``repr``, e.g. ``1717000000.25``, ``1717000000.0``)
    hash  = lowercase hex HMAC-SHA256, keyed with the audit key, of
            ( prev_hash as 64 ASCII hex characters  ||  body )

The first entry's ``prev_hash`` is 64 zeros.  The audit key is the UTF-8 bytes of the secret's text
as written (``privacy.audit_key``, or the 64 hexadecimal characters of ``<data dir>/audit.key``).
In Python:
``hmac.new(key, prev.encode() + json.dumps(fields, sort_keys=True, separators=(",", ":"),
ensure_ascii=False).encode(), "sha256").hexdigest()``.

Logs written before keyed chaining used a plain hash, ``hashlib.sha256(prev.encode() + body)``.
They still verify.  The first entry written by a keyed writer after them records the switch: actor
``system:audit``, action ``config_change``, object ``audit chain``, with the key's id in its reason;
it and every later entry are keyed.  A change of key is recorded the same way (the old key is needed
to verify the entries before it).  Once an entry is keyed, no later entry may be plain, and a key may
only hand over to a later key of the writer's key ring (:func:`open_audit_log`): the data directory's
own key, then ``privacy.audit_key``.  A key's id (:func:`vipsense.storage.auditanchors.key_fingerprint`) is
an HMAC of a fixed text, so it names the key without giving it away.

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

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..i18n import _, lazy_gettext
from ..model import Labelled, add_labels
from ..privacy import mask_personal_numbers
from ..texts import Text
from . import auditanchors
from .auditanchors import Anchor, AnchorPolicy, BadAnchor, key_fingerprint

if TYPE_CHECKING:
    from ..config.profile import Profile

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
KEY_FILE = "audit.key"  #: the data directory's own audit key, made once, readable by its owner only
ANCHOR_DIR = "audit-anchors"  #: the default anchor directory, inside the data directory
ANCHOR_RETRY = 10.0  #: seconds before an anchor that could not be written is tried again
#: the entry that records a switch to a (new) key: its actor, role, action and object
SWITCH_ACTOR, SWITCH_OBJECT = "system:audit", "audit chain"


def audit_path(profile: Profile) -> Path:
    """Where a branch keeps its audit log: one file per branch, beside its visit log."""
    return profile.data_dir / "audit.sqlite3"


class AuditAction(Labelled):
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
    INGEST = "ingest"  #: a branch's report to the centre (vipsense.centreweb's ingest refuses it)


add_labels(
    AuditAction,
    {
        "lookup": lazy_gettext("look-up"),
        "view": lazy_gettext("view"),
        "unmask": lazy_gettext("unmask"),
        "export": lazy_gettext("export"),
        "card_issue": lazy_gettext("issue a card"),
        "card_revoke": lazy_gettext("revoke a card"),
        "card_lost": lazy_gettext("report a card lost"),
        "card_reissue": lazy_gettext("reissue a card"),
        "card_restore": lazy_gettext("restore a lost card"),
        "consent": lazy_gettext("consent"),
        "import": lazy_gettext("import"),
        "purge": lazy_gettext("purge"),
        "sync": lazy_gettext("sync"),
        "login": lazy_gettext("log in"),
        "config_change": lazy_gettext("configuration change"),
        "permission_change": lazy_gettext("permission change"),
        "ingest": lazy_gettext("a branch's report"),
    },
)


class AuditResult(Labelled):
    SUCCESS = "success"
    DENIED = "denied"
    ERROR = "error"


add_labels(
    AuditResult,
    {"success": lazy_gettext("success"), "denied": lazy_gettext("denied"), "error": lazy_gettext("error")},
)


class AuditKeyError(Exception):
    """The log cannot be written with this key: its newest entry was chained with a key this writer
    does not hold (another machine's key, or an altered entry).  The message says what to check."""


class AuditUnreadable(Exception):
    """The file is not a readable SQLite database any more (damaged, truncated, overwritten)."""


#: Actions that must say why (privacy-security.md §3: "reason code where required (manual look-up,
#: unmask)").  A look-up by ID number needs one too, but only the caller knows what it looked up by.
REASON_REQUIRED = frozenset({AuditAction.UNMASK})

#: The fields that go into the hash, besides prev_hash.  Order is irrelevant (keys are sorted).
HASHED_FIELDS = ("seq", "at", "actor", "role", "branch", "action", "object", "source", "reason", "result")
TEXT_FIELDS = ("actor", "role", "branch", "object", "source", "reason")
_SORTED = tuple(sorted(HASHED_FIELDS))
_ROW_INDEX = tuple(HASHED_FIELDS.index(name) for name in _SORTED)

_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")
_SWITCH_KEY = re.compile(r"under key ([0-9a-f]{16}) from this entry on")


# -- keys --------------------------------------------------------------------------------------------


@attrs.frozen
class AuditKey:
    """A key the chain is (or was) keyed with.  ``repr`` shows its id and where it came from only."""

    secret: bytes = attrs.field(repr=False)
    source: str = ""  #: ``privacy.audit_key``, or the key file's path
    id: str = attrs.field(
        init=False, default=attrs.Factory(lambda self: key_fingerprint(self.secret), takes_self=True)
    )


def data_dir_key(directory: Path, create: bool = True) -> AuditKey | None:
    """The data directory's own key (``audit.key``, mode 0600), made once when ``create``; None if
    there is none and ``create`` is false.  Several processes may race to make it: one wins."""
    path = directory / KEY_FILE
    if not path.exists():
        if not create:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic, and never over a key another process made meanwhile
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    if not _HEX_KEY.match(text):
        raise AuditKeyError(f"{path} is not an audit key file (64 lower-case hexadecimal characters)")
    return AuditKey(text.encode("ascii"), str(path))


def profile_keys(profile: Profile, create: bool = True) -> tuple[AuditKey, ...]:
    """The key ring of a branch's log, oldest first; the last one writes.

    ``privacy.audit_key`` when the profile names it, after the data directory's own key if that
    exists (the entries a branch chained before it named its key).  Without ``audit_key``, the data
    directory's own key, made now if ``create`` (a demo needs nothing set up)."""
    key = profile.privacy.audit_key
    own = data_dir_key(profile.data_dir, create=create and key is None)
    ring = [own] if own is not None else []
    if key is not None:
        ring.append(AuditKey(key.reveal().encode("utf-8"), "privacy.audit_key"))
    return tuple(ring)


def anchor_policy(profile: Profile) -> AnchorPolicy:
    """Where the branch's anchors go (``privacy.audit_anchors``, default ``<data dir>/audit-anchors``)
    and how often."""
    p = profile.privacy
    directory = Path(p.audit_anchors) if p.audit_anchors else profile.data_dir / ANCHOR_DIR
    return AnchorPolicy(
        auditanchors.anchor_file(directory, profile.branch.id),
        every=int(p.audit_anchor_every),
        interval=float(p.audit_anchor_interval),
    )


def open_audit_log(profile: Profile, on_anchor: Callable[[Anchor], None] | None = None) -> AuditLog:
    """A branch's audit log with its key ring and anchors, as every writer must open it.

    ``on_anchor`` gets each anchor the log publishes (the branch broadcasts ``vipsense_audit_anchor``)."""
    return AuditLog(
        audit_path(profile), keys=profile_keys(profile), anchors=anchor_policy(profile), on_anchor=on_anchor
    )


# -- entries -----------------------------------------------------------------------------------------


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
    """What a check of the chain found.  ``problem``, ``anchor`` and ``notes`` are English ``str``
    (:class:`~vipsense.texts.Text`) as logs and audit entries record them; a screen shows each with
    :func:`vipsense.texts.translated`, in its reader's language."""

    ok: bool
    checked: int
    first_broken: int | None = None
    problem: str = ""
    #: the first keyed entry (None: no keyed entry, a log from before keyed chaining)
    keyed_from: int | None = None
    key_ids: tuple[str, ...] = ()  #: the keys the chain uses, in order
    head: str = ""  #: the hash of the last entry checked
    anchor: str = ""  #: which anchor the log matched, in words ("" without anchors)
    notes: tuple[str, ...] = ()  #: what an auditor should know although nothing is broken


#: ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, made once: with
#: options, ``json.dumps`` builds an encoder per call, which was a third of the cost of verifying
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_IN_ORDER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  #: for keys already sorted


def canonical_bytes(fields: dict) -> bytes:
    """The canonical encoding of an entry's hashed fields (see the module docstring)."""
    body = {name: fields[name] for name in HASHED_FIELDS}
    for name in ("action", "result"):  # enums are hashed as their plain string values
        body[name] = getattr(body[name], "value", body[name])
    return _CANONICAL.encode(body).encode("utf-8")


def entry_hash(prev_hash: str, fields: dict, key: bytes | None = None) -> str:
    """An entry's hash: HMAC-SHA256 under ``key``, or the plain SHA-256 of logs written before keys."""
    message = prev_hash.encode("ascii") + canonical_bytes(fields)
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.digest(key, message, "sha256").hex()


def _row_message(row: Sequence[Any]) -> bytes:
    """``prev_hash || body`` of a stored row (columns in :data:`_COLUMNS` order), built directly."""
    body = dict(zip(_SORTED, [row[i] for i in _ROW_INDEX], strict=True))
    return row[10].encode("ascii") + _IN_ORDER.encode(body).encode("utf-8")


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
PLAIN = -1  #: the key index of entries chained with plain SHA-256 (before keyed chaining)


# -- verification ------------------------------------------------------------------------------------


@attrs.define
class _Walk:
    """A verification in progress: it can stop after any entry and go on later (the /audit page)."""

    keys: tuple[AuditKey, ...]
    expected: int = 1  #: the seq the next entry must have
    prev: str = GENESIS_HASH  #: the hash it must link to
    mode: int | None = None  #: the key index entries are chained with now; None before the first
    checked: int = 0
    keyed_from: int | None = None
    key_ids: tuple[str, ...] = ()
    problem: str = ""
    first_broken: int | None = None

    def copy(self) -> _Walk:
        return attrs.evolve(self)

    def _matches(self, row: Sequence[Any], index: int) -> bool:
        try:
            message = _row_message(row)
        except (TypeError, ValueError, UnicodeEncodeError, AttributeError):  # a BLOB written by hand
            return False
        if index == PLAIN:
            digest = hashlib.sha256(message).hexdigest()
        else:
            digest = hmac.digest(self.keys[index].secret, message, "sha256").hex()
        return hmac.compare_digest(digest, str(row[11]))

    def _use(self, index: int, seq: int) -> None:
        self.mode = index
        if index != PLAIN:
            self.keyed_from = self.keyed_from or seq
            self.key_ids = (*self.key_ids, self.keys[index].id)

    def feed(self, row: Sequence[Any]) -> bool:
        """Check the next stored row; False (and ``problem`` set) at the first broken link."""
        seq = row[0]
        if seq != self.expected:
            return self._broken(self.expected, _gap(seq, self.expected))
        if row[10] != self.prev:
            if seq > 1:
                problem = Text(
                    lazy_gettext("entry {seq}: prev_hash does not match entry {before}"),
                    seq=seq,
                    before=seq - 1,
                )
            else:
                problem = Text(
                    lazy_gettext("entry {seq}: prev_hash does not match the genesis hash"), seq=seq
                )
            return self._broken(seq, problem)
        if self.mode is None:
            chained = self._first(row)
        else:
            chained = self._matches(row, self.mode) or self._switch(row)
        if not chained:
            return self._broken(seq, self._unchained(row))
        self.checked += 1
        self.expected, self.prev = seq + 1, row[11]
        return True

    def _first(self, row: Sequence[Any]) -> bool:
        for index in range(len(self.keys) - 1, -1, -1):
            if self._matches(row, index):
                self._use(index, row[0])
                return True
        if self._matches(row, PLAIN):
            self._use(PLAIN, row[0])
            return True
        return False

    def _switch(self, row: Sequence[Any]) -> bool:
        """A recorded switch to a later key of the ring: never back to plain, never to an older key."""
        if (row[2], row[5], row[6]) != (SWITCH_ACTOR, AuditAction.CONFIG_CHANGE.value, SWITCH_OBJECT):
            return False
        assert self.mode is not None
        for index in range(len(self.keys) - 1, self.mode, -1):
            if self._matches(row, index):
                self._use(index, row[0])
                return True
        return False

    def _unchained(self, row: Sequence[Any]) -> str:
        """Why an entry does not verify, naming a key this check lacks when the log says which."""
        seq = row[0]
        named = _SWITCH_KEY.search(str(row[8])) if row[2] == SWITCH_ACTOR else None
        if named and named.group(1) not in {k.id for k in self.keys}:
            return Text(
                lazy_gettext(
                    "entry {seq} switches the chain to key {key}, which this check does not have"
                    " (is privacy.audit_key the branch's key?)"
                ),
                seq=seq,
                key=named.group(1),
            )
        if self.mode is None and self.keys:
            ids = ", ".join(k.id for k in self.keys)
            return Text(
                lazy_gettext(
                    "entry {seq}: hash does not match its contents under any audit key this check has"
                    " ({keys}): edited, or chained with another key (is privacy.audit_key the branch's key?)"
                ),
                seq=seq,
                keys=ids,
            )
        return Text(lazy_gettext("entry {seq}: hash does not match its contents (edited?)"), seq=seq)

    def _broken(self, seq: int, problem: str) -> bool:
        self.first_broken, self.problem = seq, problem
        return False

    def result(self) -> VerifyResult:
        notes: list[str] = []
        if self.checked and self.keyed_from is None:
            notes.append(
                Text(
                    lazy_gettext(
                        "the chain is not keyed: it was written before keyed chaining, so anyone who can "
                        "write the file could rewrite it; the next entry written switches it to the audit key"
                    )
                )
            )
        elif self.keys and self.mode is not None and self.mode != len(self.keys) - 1 and not self.problem:
            used = self.keys[self.mode]
            notes.append(
                Text(
                    lazy_gettext(
                        "the newest entries are chained with key {key} ({source}), not with {newest}; the"
                        " next entry written switches to it"
                    ),
                    key=used.id,
                    source=used.source,
                    newest=self.keys[-1].source,
                )
            )
        return VerifyResult(
            ok=not self.problem,
            checked=self.checked,
            first_broken=self.first_broken,
            problem=self.problem,
            keyed_from=self.keyed_from,
            key_ids=self.key_ids,
            head=self.prev if self.checked else "",
            notes=tuple(notes),
        )

    def run(self, rows: Iterable[Sequence[Any]], progress: Callable[[int], None] | None = None) -> bool:
        for n, row in enumerate(rows, 1):
            if not self.feed(row):
                return False
            if progress is not None and n % 10_000 == 0:
                progress(self.checked)
        return True


def _reader(path: Path, timeout: float = 10.0) -> sqlite3.Connection:
    """A read-only connection of its own: verification never holds the writers' lock."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)
        db.execute("SELECT 1 FROM audit LIMIT 1").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise AuditUnreadable(
                _("not an audit log (it has no audit table): {error}").format(error=exc)
            ) from None
        raise AuditUnreadable(str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise AuditUnreadable(str(exc)) from None
    return db


def _rows(db: sqlite3.Connection, after: int = 0) -> Iterator[Sequence[Any]]:
    """Stored rows in seq order; a hand-written row that is not UTF-8 ends the walk with a clear
    problem (raised as :class:`_Undecodable`), a damaged file with :class:`AuditUnreadable`."""
    cursor = db.execute(f"SELECT {_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq", (after,))
    while True:
        try:
            batch = cursor.fetchmany(2048)
        except sqlite3.OperationalError as exc:  # e.g. text that is not UTF-8, written by hand
            raise _Undecodable(str(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise AuditUnreadable(str(exc)) from None
        if not batch:
            return
        yield from batch


class _Undecodable(Exception):
    pass


def _walk_rows(walk: _Walk, db: sqlite3.Connection, progress: Callable[[int], None] | None = None) -> None:
    try:
        walk.run(_rows(db, walk.expected - 1), progress)
    except _Undecodable as exc:
        walk._broken(
            walk.expected,
            Text(lazy_gettext("entry {seq}: unreadable ({error})"), seq=walk.expected, error=str(exc)),
        )


def _gap(seq: int, expected: int) -> Text:
    """Entries missing before ``seq``: one whole sentence for each case, so each translates whole."""
    if seq == expected + 1:
        if expected > 1:
            message = lazy_gettext("entry {seq} follows {previous}: entry {first} is missing")
        else:
            message = lazy_gettext("entry {seq} is the first: entry {first} is missing")
    elif expected > 1:
        message = lazy_gettext("entry {seq} follows {previous}: entries {first}..{last} are missing")
    else:
        message = lazy_gettext("entry {seq} is the first: entries {first}..{last} are missing")
    return Text(message, seq=seq, previous=expected - 1, first=expected, last=seq - 1)


def _when(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def check_anchors(
    db: sqlite3.Connection,
    result: VerifyResult,
    file: Path,
    keys: Sequence[AuditKey],
    last_only: bool = False,
) -> VerifyResult:
    """``result`` (a whole, intact chain) held against the anchors in ``file``: every anchored entry
    must still be there, unchanged, and each anchor's signature must be right.  The newest anchor
    names a truncated tail.  ``last_only`` checks the newest anchor alone (the /audit page)."""
    if not result.ok:
        return result
    by_id = {k.id: k for k in keys}
    lines = auditanchors.read(file)
    if last_only:
        lines = [item for item in lines if isinstance(item[1], Anchor)][-1:]
    if not lines:
        note = Text(
            lazy_gettext("no anchor yet in {file}: entries cut off the end of the log would go unnoticed"),
            file=str(file),
        )
        return attrs.evolve(result, notes=(*result.notes, note))

    def broken(seq: int, problem: str) -> VerifyResult:
        return attrs.evolve(result, ok=False, first_broken=seq, problem=problem)

    newest: tuple[int, Anchor] | None = None
    for number, anchor in lines:
        where = f"{file}:{number}"
        if isinstance(anchor, BadAnchor):
            return broken(
                result.checked,
                Text(
                    lazy_gettext("anchor {where} is not an anchor ({error}); the anchor file was altered"),
                    where=where,
                    error=str(anchor),
                ),
            )
        key = by_id.get(anchor.key)
        if key is None:
            return broken(
                result.checked,
                Text(
                    lazy_gettext("anchor {where} is signed with key {key}, which this check does not have"),
                    where=where,
                    key=anchor.key,
                ),
            )
        if not anchor.valid(key.secret):
            return broken(
                result.checked,
                Text(
                    lazy_gettext(
                        "anchor {where}: its signature does not match (altered, or not signed with the"
                        " audit key)"
                    ),
                    where=where,
                ),
            )
        if newest is None or anchor.count >= newest[1].count:
            newest = (number, anchor)
        if anchor.count <= result.checked:
            row = db.execute("SELECT hash FROM audit WHERE seq = ?", (anchor.count,)).fetchone()
            if row is None or row[0] != anchor.head:
                return broken(
                    anchor.count,
                    Text(
                        lazy_gettext(
                            "entry {seq} does not match anchor {where} of {when} (the log was rewritten at"
                            " or before that entry)"
                        ),
                        seq=anchor.count,
                        where=where,
                        when=_when(anchor.at),
                    ),
                )
    assert newest is not None
    number, anchor = newest
    if anchor.count > result.checked:
        return broken(
            result.checked + 1,
            Text(
                lazy_gettext(
                    "the log ends at entry {checked}, but anchor {where} of {when} says it had {count}"
                    " entries: entries {first}..{count} were cut off the end"
                ),
                checked=result.checked,
                where=f"{file}:{number}",
                when=_when(anchor.at),
                count=anchor.count,
                first=result.checked + 1,
            ),
        )
    said = Text(
        lazy_gettext("entry {seq} matches anchor {where} of {when}"),
        seq=anchor.count,
        where=f"{file}:{number}",
        when=_when(anchor.at),
    )
    return attrs.evolve(result, anchor=said)


def _check_centre_heads(
    db: sqlite3.Connection, result: VerifyResult, heads: Sequence[tuple[int, str, float]]
) -> VerifyResult:
    """``result`` (an intact chain) held against the heads the centre recorded: the first one, by
    entry, that is missing or differs is named, with when the centre recorded it."""
    for seq, expected, at in sorted(heads):
        row = db.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            problem = Text(
                lazy_gettext(
                    "entry {seq} is missing, but the centre recorded it on {when}"
                    " (the log was shortened after it was reported)"
                ),
                seq=seq,
                when=_when(at),
            )
        elif row[0] != expected:
            problem = Text(
                lazy_gettext(
                    "entry {seq} differs from what the centre recorded on {when}"
                    " (the log was rewritten after it was reported)"
                ),
                seq=seq,
                when=_when(at),
            )
        else:
            continue
        return attrs.evolve(result, ok=False, first_broken=seq, problem=problem)
    last = max(heads)
    said = Text(
        lazy_gettext("{n} heads the centre recorded match, the last entry {seq} of {when}"),
        n=len(heads),
        seq=last[0],
        when=_when(last[2]),
    )
    return attrs.evolve(result, anchor=f"{result.anchor}; {said}" if result.anchor else str(said))


def verify_file(
    path: Path,
    keys: Sequence[AuditKey],
    anchors: AnchorPolicy | None = None,
    anchor: tuple[int, str] | None = None,
    centre_heads: Sequence[tuple[int, str, float]] = (),
) -> VerifyResult:
    """Walk the whole chain of the log at ``path`` through a read-only connection (nothing is written,
    and the writers are never held up); report the first entry that is edited, missing, or out of
    place, then hold the log against the anchors in ``anchors.file``.  Raises
    :class:`AuditUnreadable` for a damaged file.

    ``anchor`` is ``(seq, hash)`` of one more entry recorded outside this file (e.g. printed in a
    daily report): the chain must still contain it.  ``centre_heads`` are ``(seq, hash, reported_at)``
    of the heads the centre recorded from the branch's reports (``vipsense centre anchors``): the chain
    must still contain each; the first, by entry, that it does not is named."""
    db = _reader(path)
    try:
        walk = _Walk(tuple(keys))
        _walk_rows(walk, db)
        result = walk.result()
        if result.ok and anchor is not None:
            seq, expected = anchor
            row = db.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                problem = Text(
                    lazy_gettext("entry {seq} is missing: the anchor says it existed (log truncated?)"),
                    seq=seq,
                )
                return attrs.evolve(result, ok=False, first_broken=seq, problem=problem)
            if row[0] != expected:
                problem = Text(lazy_gettext("entry {seq}: hash does not match the anchor"), seq=seq)
                return attrs.evolve(result, ok=False, first_broken=seq, problem=problem)
        if result.ok and centre_heads:
            result = _check_centre_heads(db, result, centre_heads)
        if anchors is not None:
            result = check_anchors(db, result, anchors.file, tuple(keys))
        return result
    except sqlite3.DatabaseError as exc:
        raise AuditUnreadable(str(exc)) from None
    finally:
        db.close()


# -- the log -----------------------------------------------------------------------------------------


class AuditLog:
    """One SQLite file (WAL), one connection; safe to share between threads and between processes.

    ``synchronous="FULL"`` by default: an audit record is worth one fsync, and audit volume is small.
    ``keys`` is the key ring, oldest first, and the last key writes (default: the data directory's own
    key, made once: :func:`data_dir_key`).  A branch opens its log with :func:`open_audit_log`, which
    also sets the anchors.
    """

    def __init__(
        self,
        path: Path,
        synchronous: str = "FULL",
        timeout: float = 10.0,
        *,
        keys: Sequence[AuditKey] | None = None,
        anchors: AnchorPolicy | None = None,
        on_anchor: Callable[[Anchor], None] | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        ring = tuple(keys) if keys is not None else (data_dir_key(path.parent),)
        if not ring or any(k is None for k in ring):
            raise ValueError("an audit log needs a key to write with")
        self.keys: tuple[AuditKey, ...] = ring  # type: ignore[assignment]
        self.key = self.keys[-1]
        self.anchors = anchors
        self.on_anchor = on_anchor
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=timeout)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._tail: tuple[int, str] | None = None  #: the newest entry known to be keyed with self.key
        self._anchor_lock = threading.Lock()
        self._anchored: tuple[int, float] | None = None  #: (count, wall time) of the newest anchor
        self._anchor_known = False
        self._anchor_retry = 0.0
        self._closing: list[Callable[[], None]] = []
        self._closed = False

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

        All are checked before any is written, so a bad record leaves the log as it was.  Raises
        :class:`AuditKeyError` if the newest entry is keyed with a key this writer does not hold."""
        checked = [_checked(r) for r in records]
        if not checked:
            return []
        entries: list[AuditEntry] = []
        with self._lock:
            # IMMEDIATE takes the write lock before reading the chain's head, so two processes
            # appending at once queue up (busy timeout) instead of both chaining onto the same entry.
            self.db.execute("BEGIN IMMEDIATE")
            try:
                last = self.db.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev_hash = (last[0] + 1, last[11]) if last else (1, GENESIS_HASH)
                switch = self._switch_after(last) if last and self._tail != (last[0], last[11]) else ""
                todo = (
                    [_checked(self._switch_record(switch, checked[0]["branch"])), *checked]
                    if switch
                    else checked
                )
                for fields in todo:
                    fields["seq"] = seq
                    entry = AuditEntry(
                        **fields, prev_hash=prev_hash, hash=entry_hash(prev_hash, fields, self.key.secret)
                    )
                    entries.append(entry)
                    seq, prev_hash = seq + 1, entry.hash
                self.db.executemany(
                    f"INSERT INTO audit ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [_row(e) for e in entries],
                )
                self.db.execute("COMMIT")
            except BaseException:
                # SQLite rolls a transaction back by itself on some errors (a full disk): then there
                # is nothing to roll back, and the error worth reporting is the one that got here.
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                raise
            self._tail = (entries[-1].seq, entries[-1].hash)
        self._anchor(entries[-1].seq, entries[-1].hash, entries[-1].branch)
        return entries[1:] if switch else entries

    def _switch_after(self, last: Sequence[Any]) -> str:
        """Why the next entry must record a switch to this writer's key ("" when the newest entry is
        keyed with it already), or :class:`AuditKeyError` when it is keyed with an unknown key."""
        walk = _Walk(self.keys)
        for index in range(len(self.keys) - 1, PLAIN - 1, -1):
            if walk._matches(last, index):
                if index == len(self.keys) - 1:
                    return ""
                before = (
                    f"under key {self.keys[index].id}"
                    if index != PLAIN
                    else "with plain SHA-256 (written before keyed chaining)"
                )
                return (
                    f"chained with HMAC-SHA256 under key {self.key.id} from this entry on; before it {before}"
                )
        raise AuditKeyError(
            f"{self.path}: its newest entry ({last[0]}) is not chained with this branch's audit key "
            f"(key {self.key.id}, {self.key.source}): another key wrote it, or it was altered; give every "
            "machine that writes this log the same privacy.audit_key, and run vipsense audit verify"
        )

    @staticmethod
    def _switch_record(reason: str, branch: str) -> AuditRecord:
        return AuditRecord(
            SWITCH_ACTOR, "system", branch, AuditAction.CONFIG_CHANGE, SWITCH_OBJECT, "vipsense",
            AuditResult.SUCCESS, reason=reason,
        )  # fmt: skip

    # -- anchors ----------------------------------------------------------------------------------

    def _anchor(self, count: int, head: str, branch: str, final: bool = False) -> None:
        """Publish an anchor if one is due: none yet, ``every`` entries or ``interval`` seconds since
        the last, or ``final`` (the log is closing) with entries not anchored yet."""
        policy = self.anchors
        if policy is None or count < 1:
            return
        with self._anchor_lock:
            if not self._anchor_known:
                with contextlib.suppress(OSError):
                    newest = auditanchors.last(policy.file)
                    self._anchored = (newest.count, newest.at) if newest else None
                self._anchor_known = True
            now = time.time()
            done, at = self._anchored or (0, 0.0)
            due = self._anchored is None or count - done >= policy.every or now - at >= policy.interval
            if count <= done or not (due or final) or now < self._anchor_retry:
                return
            anchor = Anchor(branch, count, head, now, self.key.id).signed(self.key.secret)
            try:
                auditanchors.append(policy.file, anchor)
            except OSError as exc:
                if not self._anchor_retry:
                    log.error("audit log: cannot write an anchor to %s: %s (retried)", policy.file, exc)
                self._anchor_retry = now + ANCHOR_RETRY
            else:
                if self._anchor_retry:
                    log.warning("audit log: anchors are written to %s again", policy.file)
                self._anchored, self._anchor_retry = (count, now), 0.0
        if self.on_anchor is not None:
            try:
                self.on_anchor(anchor)
            except Exception:
                log.exception("audit log: publishing an anchor failed")

    def anchor_if_due(self, final: bool = False) -> None:
        """Anchor the chain's head if an anchor is due by time (the audit writer's idle rounds)."""
        if self.anchors is None:
            return
        with self._lock:
            if self._closed:
                return
            row = self.db.execute("SELECT seq, hash, branch FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if row is not None:
            count, head, branch = row
            self._anchor(count, head, branch, final=final)

    # -- reading ----------------------------------------------------------------------------------

    def verify(self, anchor: tuple[int, str] | None = None) -> VerifyResult:
        """Walk the whole chain; report the first entry that is edited, missing, or out of place, and
        hold the log against its anchors (:func:`verify_file`)."""
        return verify_file(self.path, self.keys, self.anchors, anchor)

    def entries(
        self, since: float | None = None, actor: str | None = None, action: AuditAction | str | None = None
    ) -> Iterator[AuditEntry]:
        """Entries in chain order, optionally only those at or after ``since``, by ``actor``, of ``action``.

        Run :meth:`verify` first: this reads what is stored, it does not check it.
        """
        where: list[str] = []
        args: list[float | str] = []
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

    def before_close(self, flush: Callable[[], None]) -> None:
        """Call ``flush`` first when the log closes: a producer that holds entries back (counted
        refusals) writes them while it still can."""
        self._closing.append(flush)

    def close(self) -> None:
        """Let producers write what they hold, anchor what is not anchored yet, close."""
        if self._closed:
            return
        for flush in self._closing:
            try:
                flush()
            except Exception:
                log.exception("audit log: writing held entries at close failed")
        with contextlib.suppress(sqlite3.Error):
            self.anchor_if_due(final=True)
        with self._lock:
            self._closed = True
            self.db.close()


def _row(entry: AuditEntry) -> tuple:
    values = (getattr(entry, name) for name in (*HASHED_FIELDS, "prev_hash", "hash"))
    return tuple(getattr(value, "value", value) for value in values)


# -- verifying as the log grows (the auditor's page) --------------------------------------------------


@attrs.frozen
class ChainState:
    """What :class:`ChainCheck` knows: ``result`` covers entries 1..``result.checked``."""

    result: VerifyResult
    entries: int  #: entries in the log when the check last looked
    done: bool  #: it has caught up with ``entries``
    checking: int  #: entries checked so far by a walk in progress (a full one may be re-checking)
    verified_at: float  #: when the result was last brought up to date (wall time; 0: never)
    walked: int  #: entries the last finished walk read: the new ones, or all of them (a full walk)
    full_at: float  #: when the last full walk started (wall time; 0: none finished yet)


class ChainCheck:
    """Verifies a growing log incrementally: it remembers the last verified entry and its hash, checks
    only the entries added since (and that the remembered one is unchanged), and walks the whole chain
    again every ``full_every`` seconds.  The work runs on a thread of its own, so the page waits for
    it at most a moment and otherwise shows how far it got."""

    def __init__(
        self,
        path: Path,
        keys: Sequence[AuditKey],
        anchors: AnchorPolicy | None = None,
        full_every: float = 3600.0,
    ) -> None:
        self.path = path
        self.keys = tuple(keys)
        self.anchors = anchors
        self.full_every = full_every
        self._walk = _Walk(self.keys)  #: published: verified up to walk.expected - 1
        self._result = VerifyResult(ok=True, checked=0)
        self._entries = 0
        self._checking = 0
        self._verified_at = 0.0
        self._full_at = 0.0
        self._walked = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def look(self, wait: float = 0.1) -> ChainState:
        """Start (or keep) the check going, wait up to ``wait`` seconds for it, and say where it is."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="audit-check", daemon=True)
                self._thread.start()
            thread = self._thread
        thread.join(wait)
        with self._lock:
            done = not thread.is_alive() and self._result.checked >= self._entries
            return ChainState(
                self._result,
                self._entries,
                done,
                self._checking,
                self._verified_at,
                self._walked,
                self._full_at,
            )

    def _work(self) -> None:
        now = time.time()
        full = now - self._full_at >= self.full_every or not self._result.ok
        walk = _Walk(self.keys) if full else self._walk.copy()
        start = walk.checked
        try:
            db = _reader(self.path)
        except AuditUnreadable as exc:
            self._publish(walk, _unreadable(exc), now, full, 0)
            return
        try:
            (entries,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()
            with self._lock:
                self._entries, self._checking = entries, walk.checked
            if walk.checked:  # the entry verified last time must still be there, unchanged
                seq = walk.expected - 1
                row = db.execute(f"SELECT {_COLUMNS} FROM audit WHERE seq = ?", (seq,)).fetchone()
                if row is None or row[11] != walk.prev or not walk._matches(row, walk.mode):  # type: ignore[arg-type]
                    walk.checked = seq - 1
                    walk._broken(
                        seq,
                        Text(lazy_gettext("entry {seq} changed or vanished after it was verified"), seq=seq),
                    )
            if not walk.problem:
                _walk_rows(walk, db, self._progress)
            result = walk.result()
            if self.anchors is not None:
                result = check_anchors(db, result, self.anchors.file, self.keys, last_only=True)
        except (AuditUnreadable, sqlite3.DatabaseError) as exc:
            result = _unreadable(exc)
        finally:
            db.close()
        self._publish(walk, result, now, full, walk.checked - start)

    def _progress(self, checked: int) -> None:
        with self._lock:
            self._checking = checked

    def _publish(self, walk: _Walk, result: VerifyResult, started: float, full: bool, walked: int) -> None:
        with self._lock:
            self._walk, self._result, self._verified_at = walk, result, time.time()
            self._walked = walked
            self._checking = result.checked
            self._entries = max(self._entries, result.checked)
            if full:
                self._full_at = started


def _unreadable(exc: BaseException) -> VerifyResult:
    problem = Text(lazy_gettext("the file cannot be read: {error}"), error=str(exc))
    return VerifyResult(ok=False, checked=0, first_broken=1, problem=problem)
