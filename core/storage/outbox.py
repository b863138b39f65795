"""The notification outbox: every routed notification on disk before delivery is tried, so a crash
or ``kill -9`` loses none (at-least-once; receivers de-duplicate by ``Notification.key``).

One SQLite file per branch (``outbox.sqlite3``, WAL, ``synchronous=NORMAL`` like the visit log).
:class:`OutboxWriter` is the one writer: a thread of its own that stores each pipeline batch's
notifications in one transaction (several batches in one when they queue up) and only then hands
them to the notifiers.  It is off the pipeline thread because SQLite releases the GIL while it
writes, so the next batch's look-ups go on meanwhile.  Notifier threads never write: their results
are queued and applied with the next batch, or within 0.1 s when no batch comes.  A result still
queued at a crash is lost, and that notification is delivered again at the next start, which
at-least-once allows.

When the file cannot be written (a full disk), nothing is dropped: the notifications are still handed
to their notifiers, and their rows, the results and the acknowledgements that could not be written
are kept in memory (at most :data:`HELD_LIMIT` rows) and written, in order, by the next transaction
that succeeds: the writer tries again every :data:`RETRY_EVERY` seconds.  The branch status shows
the trouble (:class:`vipsense.status.Storage`) until then.  Only a stop while the disk is still full
loses them (logged with their number).

Personal data at rest.  A pending row holds what a notifier needs to render its message after a
restart: the visit with the card and the customer's name, tier, company and usual business.  The ID
number and mobile are stored already masked (last four digits; ``138****5678``), as every screen
shows them; the photo is not stored; the recipient is stored by staff id only and looked up in the
profile again at restart, so staff mobiles are never written here.  Once a notification is
delivered, failed or expired, the payload is dropped and only the delivery record stays: key,
notifier, recipient id, visit id, state, times, attempts and last error.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ..clock import Clock
from ..i18n import lazy_gettext
from ..model import (
    Arrival,
    Card,
    CardStatus,
    Customer,
    DeliveryResult,
    DeliveryState,
    Fallback,
    Notification,
    RejectReason,
    Role,
    Staff,
    Visit,
    VisitKind,
)
from ..privacy import mask_id_number, mask_mobile
from ..status import Stats, Storage
from ..texts import Text
from . import changefeed
from .migrations import adding_columns, migrate
from .walfile import WalFile

log = logging.getLogger(__name__)

IDLE_FLUSH = 0.1  #: seconds: queued results are written at least this often
MERGE_LIMIT = 8192  #: notifications written in one transaction at most, when batches queue up
HELD_LIMIT = 100_000  #: rows kept in memory while the file cannot be written (like the visit log's)
RETRY_EVERY = 1.0  #: seconds between tries to write what is held, while the file cannot be written
NAME = "outbox"  #: how the status names this file

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    notifier_id     TEXT NOT NULL,
    key             TEXT NOT NULL,      -- the idempotency key: visit id + ':' + recipient id
    visit_id        TEXT NOT NULL,
    recipient_id    TEXT NOT NULL,
    state           TEXT NOT NULL,      -- pending, retrying, delivered, acknowledged, failed, expired
    arrived_at      REAL NOT NULL,
    created_at      REAL NOT NULL,
    expires_at      REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT '',
    delivered_at    REAL,
    acknowledged_at REAL,
    finished_at     REAL,               -- when it was delivered, failed or expired
    payload         TEXT,               -- the visit as JSON, while open or while it may escalate
    escalate_at     REAL,               -- the routing rule's deadline for an acknowledgement
    escalate_to     TEXT,               -- JSON [role, [notifier ids]]: whom to tell then
    escalated_at    REAL,               -- when the fallback was told
    escalated_from  TEXT NOT NULL DEFAULT '',  -- this is an escalation: the recipient who did not respond
    change_seq      INTEGER,            -- the change feed's position of this row's last carried change
    PRIMARY KEY (notifier_id, key)
);
CREATE INDEX IF NOT EXISTS outbox_arrived ON outbox (arrived_at);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox (key);
"""

#: The columns a change to which the centre must hear of (:mod:`vipsense.uplink`); not the payload,
#: the deadlines or the last error.
CARRIED = (
    "state",
    "attempts",
    "delivered_at",
    "acknowledged_at",
    "finished_at",
    "escalated_from",
)
FEED = changefeed.Feed("outbox", "outbox_changes", CARRIED)

#: A delivery as the centre receives it (the wire format's DELIVERY): ``delivery_key`` is
#: ``notifier_id/key``, since one notification key goes out through several notifiers.
_CHANGES = (
    "SELECT notifier_id || '/' || key, change_seq, created_at, visit_id, notifier_id, recipient_id, state,"
    " attempts, delivered_at, acknowledged_at, finished_at, NULLIF(escalated_from, '') FROM outbox"
    " WHERE change_seq > ? ORDER BY change_seq LIMIT ?"
)
_DELIVERY_KEYS = (
    "delivery_key",
    "seq",
    "created_at",
    "visit_id",
    "notifier_id",
    "recipient_id",
    "state",
    "attempts",
    "delivered_at",
    "acknowledged_at",
    "finished_at",
    "escalated_from",
)


def changes(db: sqlite3.Connection, after: int, limit: int) -> list[dict[str, Any]]:
    """Deliveries changed after feed position ``after``, oldest change first, at most ``limit``: what
    the uplink ships.  ``db`` is the reader's own connection."""
    return [dict(zip(_DELIVERY_KEYS, row, strict=True)) for row in db.execute(_CHANGES, (after, limit))]


def last_change(db: sqlite3.Connection) -> int:
    """The feed's newest position (0 for an empty feed)."""
    return FEED.last(db)


#: ``PRAGMA user_version`` 1: escalation (a file from the first release gets the columns); 2: the
#: change feed (``change_seq``, backfilled in the order the rows were written)
MIGRATIONS = (
    adding_columns(
        {
            "outbox": (
                ("escalate_at", "REAL"),
                ("escalate_to", "TEXT"),
                ("escalated_at", "REAL"),
                ("escalated_from", "TEXT NOT NULL DEFAULT ''"),
            )
        }
    ),
    FEED.step,
)
_ESCALATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS outbox_escalate ON outbox (escalate_at) WHERE escalated_at IS NULL"
)

_INSERT = (
    "INSERT OR IGNORE INTO outbox (notifier_id, key, visit_id, recipient_id, state, arrived_at,"
    " created_at, expires_at, payload, escalate_at, escalate_to, escalated_from)"
    " VALUES (?,?,?,?,'pending',?,?,?,?,?,?,?)"
)

#: Every row of one key acknowledged (the first acknowledgement stays); parameters (at, key).
_ACK = (
    "UPDATE outbox SET state='acknowledged', acknowledged_at=COALESCE(acknowledged_at, ?1),"
    " delivered_at=COALESCE(delivered_at, ?1), finished_at=COALESCE(finished_at, ?1),"
    " payload=NULL WHERE key=?2"
)

#: States after which a notification is closed, and its payload dropped unless it may still escalate.
FINAL = frozenset({DeliveryState.DELIVERED, DeliveryState.FAILED, DeliveryState.EXPIRED})


@attrs.frozen
class Pending:
    """An open notification found in the outbox at start, ready to be queued again."""

    notification: Notification
    attempts: int


@attrs.frozen
class Escalating:
    """A notification whose recipient did not acknowledge in time: what its fallback needs."""

    key: str
    recipient_id: str
    expires_at: float
    escalate_to: str  #: JSON ``[role, [notifier ids]]``
    payload: str

    def fallback(self) -> Fallback:
        return _fallback(0.0, self.escalate_to)


def _fallback(at: float, escalate_to: str) -> Fallback:
    role, via = json.loads(escalate_to)
    return Fallback(at, Role(role), tuple(via))


@attrs.frozen
class DeliveryRecord:
    """One notification's delivery, for response times per staff member."""

    key: str
    notifier_id: str
    recipient_id: str
    visit_id: str
    state: str
    arrived_at: float
    delivered_at: float | None
    acknowledged_at: float | None
    attempts: int
    last_error: str
    escalated_at: float | None = None
    escalated_from: str = ""


class Outbox:
    """The outbox file.  Written by one thread at a time (:meth:`add`, :meth:`flush`: the
    :class:`OutboxWriter`); :meth:`result` from any thread."""

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self._file = WalFile(path, SCHEMA, synchronous, name="outbox")
        self.path = path
        self.db = self._file.db
        migrate(self.db, MIGRATIONS)
        self.db.execute(_ESCALATE_INDEX)
        self._lock = threading.Lock()  # the pipeline thread, and the main thread at start and stop
        self._results: queue.SimpleQueue[tuple[Notification, DeliveryResult]] = queue.SimpleQueue()
        self._closed = False
        # What a transaction could not write (a full disk), written first by the next one, in order.
        self._held: list[tuple[Any, ...]] = []  #: notification rows
        self._held_updates: list[tuple[Notification, DeliveryResult]] = []  #: delivery results
        self._held_acks: list[tuple[str, float]] = []  #: (key, at) acknowledgements

    @property
    def held(self) -> int:
        """Rows, results and acknowledgements kept in memory until the file can be written."""
        return len(self._held) + len(self._held_updates) + len(self._held_acks)

    # -- writing ----------------------------------------------------------------------------------

    def add(self, notifications: list[Notification]) -> None:
        """Store a batch of new notifications (and any queued results) in one transaction."""
        self.add_rows(self.rows(notifications))

    def add_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """:meth:`add` for rows :meth:`rows` made already."""
        self._write(rows)

    @staticmethod
    def rows(notifications: list[Notification]) -> list[tuple[Any, ...]]:
        """The rows for a batch, payload encoded (pure Python: done on the pipeline thread, so the
        writer thread holds the GIL only briefly and never delays the store threads' hand-offs)."""
        payloads: dict[str, str] = {}
        rows = []
        for n in notifications:
            v = n.visit
            payload = payloads.get(v.visit_id)
            if payload is None:
                payload = payloads[v.visit_id] = json.dumps(encode_visit(v), ensure_ascii=False)
            fb = n.fallback
            rows.append(
                (
                    n.notifier_id,
                    n.key,
                    v.visit_id,
                    n.recipient.id,
                    v.arrived_at,
                    n.created_at,
                    n.expires_at,
                    payload,
                    None if fb is None else fb.at,
                    None if fb is None else json.dumps([fb.to.value, list(fb.via)]),
                    n.escalated_from,
                )
            )
        return rows

    def result(self, notification: Notification, result: DeliveryResult) -> None:
        """Queue one delivery result; any thread, never blocks.  Written with the next batch."""
        self._results.put((notification, result))

    def flush(self) -> None:
        """Write queued results, and whatever is held, now (the writer's idle round, and at close)."""
        if not self._results.empty() or self._held or self._held_updates or self._held_acks:
            self._write([])

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        """One transaction: held rows and ``rows``, then held and queued results, then held
        acknowledgements.  On failure all of it is held (the oldest rows beyond :data:`HELD_LIMIT`
        dropped, logged) and the error raised."""
        updates = []
        get = self._results.get_nowait
        with contextlib.suppress(queue.Empty):
            while True:
                updates.append(get())
        with self._lock:
            if self._closed:
                return
            rows = self._held + rows if self._held else rows
            updates = self._held_updates + updates if self._held_updates else updates
            acks = self._held_acks
            if not rows and not updates and not acks:
                return
            try:
                with self.db:
                    self.db.execute("BEGIN")
                    if rows:
                        self.db.executemany(_INSERT, rows)
                    if updates:
                        self._apply(updates)
                    if acks:
                        self.db.executemany(_ACK, [(at, key) for key, at in acks])
            except sqlite3.Error:
                if len(rows) > HELD_LIMIT:
                    log.error(
                        "outbox: dropping the %d oldest notifications held in memory", len(rows) - HELD_LIMIT
                    )
                self._held, self._held_updates = rows[-HELD_LIMIT:], updates[-HELD_LIMIT:]
                raise
            self._held, self._held_updates, self._held_acks = [], [], []

    def _apply(self, updates: list[tuple[Notification, DeliveryResult]]) -> None:
        """Results in two statements, whatever their number: acknowledgements, and the rest."""
        acks, others = [], []
        for n, r in updates:
            if r.state is DeliveryState.ACKNOWLEDGED:
                acks.append((r.at, r.at, r.at, n.notifier_id, n.key))
                continue
            final = r.state in FINAL
            others.append(
                (
                    r.state.value,
                    r.attempt if r.state is not DeliveryState.EXPIRED else 0,
                    "" if r.state is DeliveryState.DELIVERED else r.detail,
                    r.at if r.state is DeliveryState.DELIVERED else None,
                    r.at if final else None,
                    final,
                    n.notifier_id,
                    n.key,
                )
            )
        if others:  # only open rows: an acknowledgement or a final state is never undone
            # A delivered row keeps its payload while it may still escalate (no acknowledgement
            # yet); a failed one escalates at once; an expired one never (the customer has left).
            self.db.executemany(
                "UPDATE outbox SET state=?1, attempts=MAX(attempts, ?2), last_error=?3,"
                " delivered_at=COALESCE(?4, delivered_at), finished_at=COALESCE(?5, finished_at),"
                " escalate_at=CASE WHEN ?1='failed' AND escalated_at IS NULL"
                "   THEN MIN(escalate_at, ?5) ELSE escalate_at END,"
                " payload=CASE WHEN ?6 AND (?1='expired' OR escalate_at IS NULL OR escalated_at IS NOT NULL)"
                "   THEN NULL ELSE payload END"
                " WHERE notifier_id=?7 AND key=?8 AND finished_at IS NULL",
                others,
            )
        if acks:
            self.db.executemany(
                "UPDATE outbox SET state='acknowledged', acknowledged_at=COALESCE(acknowledged_at, ?),"
                " delivered_at=COALESCE(delivered_at, ?), finished_at=COALESCE(finished_at, ?),"
                " payload=NULL WHERE notifier_id=? AND key=?",
                acks,
            )

    # -- reading ----------------------------------------------------------------------------------

    def pending(
        self, clock: Clock, staff: Mapping[str, Staff]
    ) -> tuple[list[Pending], list[tuple[str, str, str]]]:
        """Open notifications left by an earlier run, oldest first, rebuilt for ``clock``.

        Also returns ``(notifier_id, key, why)`` for rows that can no longer be sent (the recipient
        left the profile's staff, or the payload is unreadable); :meth:`close_rows` closes them."""
        with self._lock:
            rows = self.db.execute(
                "SELECT notifier_id, key, recipient_id, created_at, expires_at, attempts, payload,"
                " escalate_at, escalate_to, escalated_at, escalated_from"
                " FROM outbox WHERE payload IS NOT NULL AND finished_at IS NULL ORDER BY arrived_at, key"
            ).fetchall()
        out: list[Pending] = []
        broken: list[tuple[str, str, str]] = []
        for notifier_id, key, recipient_id, created_at, expires_at, attempts, payload, *esc in rows:
            person = staff.get(recipient_id)
            if person is None:
                broken.append(
                    (
                        notifier_id,
                        key,
                        Text(
                            lazy_gettext("recipient {recipient} is no longer in the profile's staff"),
                            recipient=repr(recipient_id),
                        ),
                    )
                )
                continue
            try:
                visit = decode_visit(json.loads(payload), clock)
            except (ValueError, KeyError, TypeError) as exc:
                broken.append(
                    (notifier_id, key, Text(lazy_gettext("unreadable outbox entry: {error}"), error=str(exc)))
                )
                continue
            escalate_at, escalate_to, escalated_at, escalated_from = esc
            fallback = None
            if escalate_at is not None and escalated_at is None and escalate_to:
                fallback = _fallback(escalate_at, escalate_to)
            n = Notification(
                key, visit, person, notifier_id, created_at, expires_at, fallback, escalated_from or ""
            )
            out.append(Pending(n, attempts))
        return out, broken

    # -- acknowledgements and escalation -----------------------------------------------------------

    def acknowledge(self, key: str, at: float) -> tuple[bool, bool]:
        """Record that the recipient of ``key`` saw it, on every notifier's row of that key (an
        acknowledgement on the PDA also stops the pager and any escalation).  Any thread.

        Returns ``(known, first)``: whether the outbox has the key, and whether this is its first
        acknowledgement.  A key whose rows are held in memory (the file could not take them) counts
        as known; an acknowledgement that cannot be written now is held and written with them."""
        with self._lock:
            if self._closed:
                return False, False
            before = self.db.execute(
                "SELECT COUNT(*), COUNT(acknowledged_at) FROM outbox WHERE key=?", (key,)
            ).fetchone()
            held = any(row[1] == key for row in self._held)
            if not before[0] and not held:
                return False, False
            first = before[1] == 0 and all(k != key for k, _ in self._held_acks)
            try:
                if before[0]:
                    with self.db:
                        self.db.execute("BEGIN")
                        self.db.execute(_ACK, (at, key))
            except sqlite3.Error as exc:
                log.warning("outbox: acknowledgement of %s held until the file can be written: %s", key, exc)
                held = True
            if held:  # the rows held in memory get it when they are written
                self._held_acks.append((key, at))
        return True, first

    def due_escalations(self, now: float) -> list[Escalating]:
        """Notifications past their acknowledgement deadline (or failed for good) whose recipient
        has not acknowledged: one per key, however many notifiers carried it."""
        with self._lock:
            if self._closed:
                return []
            rows = self.db.execute(
                "SELECT key, recipient_id, expires_at, escalate_to, payload FROM outbox"
                " WHERE escalated_at IS NULL AND escalate_at <= ? AND acknowledged_at IS NULL"
                " AND payload IS NOT NULL ORDER BY escalate_at",
                (now,),
            ).fetchall()
        out: dict[str, Escalating] = {}
        for key, recipient_id, expires_at, escalate_to, payload in rows:
            if key not in out:
                out[key] = Escalating(key, recipient_id, expires_at, escalate_to, payload)
        return list(out.values())

    def escalated(self, keys: list[str], fallbacks: list[Notification], at: float) -> list[Notification]:
        """Store the fallback notifications and mark ``keys`` escalated, in one transaction.
        Returns the fallbacks that are new (someone already told through that notifier is not
        told twice)."""
        new = []
        with self._lock:
            if self._closed:
                return []
            with self.db:
                self.db.execute("BEGIN")
                for row, n in zip(self.rows(fallbacks), fallbacks, strict=True):
                    if self.db.execute(_INSERT, row).rowcount:
                        new.append(n)
                self.db.executemany(
                    "UPDATE outbox SET escalated_at=?,"
                    " payload=CASE WHEN finished_at IS NULL THEN payload ELSE NULL END WHERE key=?",
                    [(at, key) for key in keys],
                )
        return new

    def close_rows(self, rows: Iterable[tuple[str, str, str]], state: DeliveryState, at: float) -> None:
        """Close ``(notifier_id, key, why)`` rows for good, dropping their payload."""
        params = [(state.value, why, at, notifier_id, key) for notifier_id, key, why in rows]
        if not params:
            return
        with self._lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "UPDATE outbox SET state=?, last_error=?, finished_at=?, payload=NULL"
                " WHERE notifier_id=? AND key=?",
                params,
            )

    def counts(self) -> dict[tuple[str, str], int]:
        """``(notifier_id, state) -> rows``, for tests and tools."""
        with self._lock:
            rows = self.db.execute("SELECT notifier_id, state, COUNT(*) FROM outbox GROUP BY 1, 2").fetchall()
        return {(n, s): c for n, s, c in rows}

    def response_times(self, since: float, until: float) -> list[DeliveryRecord]:
        """Every notification for an arrival in ``[since, until]`` (wall time), oldest first: when the
        customer arrived, when it was delivered and when its recipient acknowledged it."""
        with self._lock:
            rows = self.db.execute(
                "SELECT key, notifier_id, recipient_id, visit_id, state, arrived_at, delivered_at,"
                " acknowledged_at, attempts, last_error, escalated_at, escalated_from"
                " FROM outbox WHERE arrived_at BETWEEN ? AND ?"
                " ORDER BY arrived_at, key, notifier_id",
                (since, until),
            ).fetchall()
        return [DeliveryRecord(*row) for row in rows]

    def changes(self, after: int, limit: int) -> list[dict[str, Any]]:
        """The change feed after ``after`` (see :func:`changes`), through this file's own connection."""
        return changes(self.db, after, limit)

    def last_change(self) -> int:
        return last_change(self.db)

    def purge(self, before: float) -> int:
        """Delete delivery records of arrivals before ``before`` (visit retention); returns how many."""
        with self._lock, self.db:
            self.db.execute("BEGIN")
            return self.db.execute(
                "DELETE FROM outbox WHERE arrived_at < ? AND payload IS NULL", (before,)
            ).rowcount

    def close(self) -> None:
        """Write the queued results and what is held, then close.  Later results are ignored (the rows
        stay open and are sent again at the next start)."""
        try:
            self.flush()
        except sqlite3.Error as exc:
            log.error(
                "outbox: %d notifications, %d delivery results and %d acknowledgements could not be stored"
                " before stopping (%s); the notifications were handed to their notifiers, but these delivery"
                " records are lost",
                len(self._held),
                len(self._held_updates),
                len(self._held_acks),
                exc,
            )
        with self._lock:
            self._closed = True
            self._file.close()


class OutboxWriter:
    """The outbox's thread: stores each batch the pipeline routed, then hands every notification
    of it to ``dispatch``.  If the outbox cannot write (a full disk), staff are told all the same:
    the outbox holds the rows in memory and this thread writes them when the file takes them again
    (only the crash guarantee is lost meanwhile).  The trouble is logged once when it starts and once
    when it ends, and reported to the branch status's storage problems (``stage.storage``)."""

    def __init__(
        self,
        outbox: Outbox,
        dispatch: Callable[[Notification], None],
        stage: Stats,
        escalate: Callable[[], list[Notification]] | None = None,
        escalate_every: float = 0.2,
    ) -> None:
        self.outbox = outbox
        self.dispatch = dispatch
        self.stage = stage  #: the branch's "outbox" stage: one transaction's time
        #: stores the fallbacks of due escalations and returns them
        #: (:class:`vipsense.pipeline.escalation.Escalator`)
        self.escalate = escalate
        self.escalate_every = escalate_every
        self._next_escalation = 0.0
        self._escalation_error = ""
        self.storage: Storage | None = stage.storage
        if self.storage is not None:
            self.storage.locate(NAME, outbox.path)
        self._failing = ""  #: the last write error while the file cannot be written
        self._retry_at = 0.0
        self._queue: queue.SimpleQueue[tuple[list[Notification], list[Any]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._main, name="outbox", daemon=True)

    def start(self) -> None:
        if self.thread.ident is None:
            self.thread.start()

    def put(self, batch: list[Notification]) -> None:
        """From the pipeline thread; never blocks."""
        if self.thread.ident is None:  # a pipeline driven without Branch.start (the benchmark)
            self.start()
        self._queue.put((batch, Outbox.rows(batch)))

    def _main(self) -> None:
        get, more = self._queue.get, self._queue.get_nowait
        while True:
            try:
                first = get(timeout=IDLE_FLUSH)
            except queue.Empty:
                self._write([])
                self._escalate()
                continue
            if first is None:
                return
            batch, rows = list(first[0]), list(first[1])
            last = False
            with contextlib.suppress(queue.Empty):
                while len(batch) < MERGE_LIMIT:
                    item = more()
                    if item is None:
                        last = True
                        break
                    batch += item[0]
                    rows += item[1]
            self._write(batch, rows)
            self._escalate()
            if last:
                return

    def _escalate(self) -> None:
        if self.escalate is None or time.monotonic() < self._next_escalation:
            return
        self._next_escalation = time.monotonic() + self.escalate_every
        try:
            fallbacks = self.escalate()
        except Exception as exc:  # a full disk: the deadline stays, so the next round tries again
            self.stage.fail(Text(lazy_gettext("escalation: {error}"), error=f"{type(exc).__name__}: {exc}"))
            if str(exc) != self._escalation_error:  # once, not every round
                log.error("outbox: cannot escalate yet (tried again every round): %s", exc)
            self._escalation_error = str(exc)
            return
        self._escalation_error = ""
        for n in fallbacks:
            self.dispatch(n)

    def _write(self, batch: list[Notification], rows: list[Any] | None = None) -> None:
        t0 = time.perf_counter()
        if not batch and self._failing and time.monotonic() < self._retry_at:
            return  # the file could not be written: idle tries only every RETRY_EVERY seconds
        try:
            if batch:
                self.outbox.add_rows(rows or [])
            else:
                self.outbox.flush()
        except Exception as exc:
            self.stage.fail(f"{type(exc).__name__}: {exc}")
            held = self.outbox.held
            if self.storage is not None:
                self.storage.failed(NAME, self.outbox.path, exc, held=held)
            if not self._failing:
                log.error(
                    "outbox: cannot write to %s: %s; staff are still told, and the %d delivery records"
                    " it could not take are kept in memory and written when it can",
                    self.outbox.path,
                    exc,
                    held,
                )
            self._failing, self._retry_at = str(exc) or type(exc).__name__, time.monotonic() + RETRY_EVERY
        else:
            if self._failing:
                log.warning(
                    "outbox: writing to %s again; every delivery record that waited is stored",
                    self.outbox.path,
                )
                self._failing = ""
            if batch:
                self.stage.ok(time.perf_counter() - t0, n=len(batch))
            if self.storage is not None:
                self.storage.written(NAME)
        for n in batch:
            self.dispatch(n)

    def stop(self, timeout: float) -> None:
        """Store and hand on what the pipeline queued (up to ``timeout`` seconds)."""
        if self.thread.ident is None:
            return
        self._queue.put(None)
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning("outbox: still writing after %.1f s; the rest is lost if the process ends", timeout)


# -- the payload: a visit as JSON, with the C2 fields masked ------------------------------------------
#
# Positional JSON arrays (half the cost of objects with keys, measured by bench/pipeline.py), led by
# a format version.  Card and customer fields go in their attrs order; a field added to the model
# later simply takes its default for rows written before.

PAYLOAD_VERSION = 1
_CARD = tuple(f.name for f in attrs.fields(Card))
_CUSTOMER = tuple(f.name for f in attrs.fields(Customer))


def _date(value: str | None) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(value)


def _iso(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


#: how a field is written when it is not JSON already; the photo is never written
_OUT: dict[str, Any] = {
    "status": lambda s: s.value,
    "valid_from": _iso,
    "valid_until": _iso,
    "consent_date": _iso,
    "id_number": lambda v: mask_id_number(v) or None,
    "mobile": lambda v: mask_mobile(v) or None,
    "photo": lambda p: None,
}
_IN: dict[str, Any] = {
    "status": CardStatus,
    "valid_from": _date,
    "valid_until": _date,
    "consent_date": _date,
    "allowed_branches": tuple,
}


def _values(obj: Any, names: tuple[str, ...]) -> list[Any]:
    out = _OUT
    return [out[n](getattr(obj, n)) if n in out else getattr(obj, n) for n in names]


def _build(cls: type, names: tuple[str, ...], values: list[Any]) -> Any:
    conv = _IN  # rows written before a field was added are shorter: that field takes its default
    pairs = zip(names, values, strict=False)
    return cls(**{n: conv[n](v) if n in conv and v is not None else v for n, v in pairs})


def encode_visit(v: Visit) -> list[Any]:
    """What a notifier needs to render the visit; ID number and mobile masked, no photo."""
    a = v.arrival
    return [
        PAYLOAD_VERSION,
        v.visit_id,
        v.branch_id,
        v.kind.value,
        v.arrived_at,
        v.reason.value if v.reason else None,
        v.tier,
        v.store_id,
        v.stale,
        v.unresolved,
        [a.epc, a.reader_id, a.antenna, a.arrived_mono - a.first_seen_mono, a.read_count, a.peak_rssi, a.tid],
        None if v.card is None else _values(v.card, _CARD),
        None if v.customer is None else _values(v.customer, _CUSTOMER),
    ]


def decode_visit(d: list[Any], clock: Clock) -> Visit:
    """The visit again, its monotonic times moved onto ``clock`` (this run's clock)."""
    version, visit_id, branch_id, kind, arrived_at, reason, tier, store_id, stale, unresolved, a, card, cu = d
    if version != PAYLOAD_VERSION:
        raise ValueError(f"payload format {version!r}, expected {PAYLOAD_VERSION}")
    epc, reader_id, antenna, dwell, read_count, peak_rssi, tid = a
    arrived_mono = clock.to_mono(arrived_at)
    return Visit(
        visit_id=visit_id,
        branch_id=branch_id,
        kind=VisitKind(kind),
        arrival=Arrival(
            epc, reader_id, antenna, arrived_mono - dwell, arrived_mono, read_count, peak_rssi, tid
        ),
        arrived_at=arrived_at,
        card=None if card is None else _build(Card, _CARD, card),
        customer=None if cu is None else _build(Customer, _CUSTOMER, cu),
        reason=RejectReason(reason) if reason else None,
        tier=tier,
        store_id=store_id,
        stale=stale,
        unresolved=unresolved,
    )
