"""The visit log: every arrival the branch judged, recorded durably in one SQLite file per branch.

WAL mode with ``synchronous=NORMAL``: a committed visit survives a crash or ``kill -9`` of the
process (power loss may lose the last batches; ``synchronous="FULL"`` would add one fsync per batch).
The pipeline writes a whole batch of visits in one transaction.  WAL checkpoints run on a thread of
their own, because SQLite's automatic checkpoint would stall the pipeline thread for milliseconds
every thousand pages (measured by bench/pipeline.py).
The log stores the customer number, never names, ID numbers or phone numbers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from ..model import Visit
from . import changefeed
from .migrations import adding_columns, migrate
from .walfile import WalFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS visits (
    visit_id    TEXT PRIMARY KEY,
    branch_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    epc         TEXT NOT NULL,
    tid         TEXT,
    customer_no TEXT,
    tier        TEXT,
    reason      TEXT,
    store_id    TEXT,
    stale       INTEGER NOT NULL DEFAULT 0,
    unresolved  INTEGER NOT NULL DEFAULT 0,
    reader_id   TEXT NOT NULL,
    antenna     INTEGER NOT NULL,
    read_count  INTEGER NOT NULL,
    peak_rssi   REAL,
    arrived_at  REAL NOT NULL,
    departed_at REAL,
    acknowledged_at REAL,                -- the first acknowledgement by a member of staff
    acknowledged_by TEXT,                -- their staff id
    resolved_at REAL,                    -- when the card was judged; NULL while unresolved
    last_seen_at REAL,                   -- the card's last sighting, written every few seconds while
                                         -- it is in the door zone and at a stop; departed_at is the
                                         -- last sighting too, once the card has gone
    change_seq  INTEGER                  -- the change feed's position of this row's last carried change
);
CREATE INDEX IF NOT EXISTS visits_epc_time ON visits (epc, arrived_at);
CREATE INDEX IF NOT EXISTS visits_time ON visits (arrived_at);
"""
#: visits whose card had not departed when the branch stopped (or crashed): restored at the next start
OPEN_INDEX = "CREATE INDEX IF NOT EXISTS visits_open ON visits (arrived_at) WHERE departed_at IS NULL"

#: The columns a change to which the centre must hear of (:mod:`vipsense.uplink`): not ``last_seen_at``,
#: which changes every few seconds while a card is at the door.
CARRIED = (
    "arrived_at",
    "kind",
    "epc",
    "customer_no",
    "tier",
    "reason",
    "reader_id",
    "read_count",
    "peak_rssi",
    "departed_at",
    "acknowledged_at",
    "acknowledged_by",
)
FEED = changefeed.Feed("visits", "visit_changes", CARRIED)

#: ``PRAGMA user_version`` 1: acknowledgements, resolution and sightings (a file from before them gets
#: the columns); 2: the change feed (``change_seq``, backfilled in the order the rows were written)
MIGRATIONS = (
    adding_columns(
        {
            "visits": (
                ("acknowledged_at", "REAL"),
                ("acknowledged_by", "TEXT"),
                ("resolved_at", "REAL"),
                ("last_seen_at", "REAL"),
            )
        }
    ),
    FEED.step,
)

#: A visit as the centre receives it (the wire format's VISIT); ``seq`` is its ``change_seq``.
_VISIT_KEYS = ("visit_id", "seq", *CARRIED)
_CHANGES = (
    f"SELECT visit_id, change_seq, {', '.join(CARRIED)} FROM visits"
    " WHERE change_seq > ? ORDER BY change_seq LIMIT ?"
)

#: kinds whose departure starts a re-entry window: the holder was greeted (or this was a re-entry)
QUIET_KINDS = ("greeted", "suppressed")


#: seconds: a visit that began longer ago than this is not looked at for re-entry windows (an index
#: bound; a card standing in the door half a day is not a visit)
LONGEST_VISIT = 12 * 3600.0


class OpenVisit(NamedTuple):
    visit_id: str
    kind: str
    epc: str
    tid: str | None
    reader_id: str
    antenna: int
    read_count: int
    peak_rssi: float | None
    arrived_at: float
    last_seen_at: float  #: its last recorded sighting (the arrival itself if none was recorded)


class VisitLog:
    """Used from the pipeline thread only."""

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self._file = WalFile(path, SCHEMA, synchronous, name="visitlog")
        self.path = path
        self.db = self._file.db
        migrate(self.db, MIGRATIONS)
        self.db.execute(OPEN_INDEX)

    def record(self, visits: Iterable[Visit]) -> None:
        """Write visits in one transaction.  A visit already recorded (an unresolved arrival judged
        later) gets its verdict; its departure and acknowledgement stay as they are."""
        rows = [
            (
                v.visit_id,
                v.branch_id,
                v.kind.value,
                v.arrival.epc,
                v.arrival.tid,
                v.card.customer_no if v.card else None,
                v.tier,
                v.reason.value if v.reason else None,
                v.store_id,
                int(v.stale),
                int(v.unresolved),
                v.arrival.reader_id,
                v.arrival.antenna,
                v.arrival.read_count,
                v.arrival.peak_rssi,
                v.arrived_at,
                v.resolved_at,
            )
            for v in visits
        ]
        if not rows:
            return
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO visits (visit_id, branch_id, kind, epc, tid, customer_no, tier, reason,"
                " store_id, stale, unresolved, reader_id, antenna, read_count, peak_rssi, arrived_at,"
                " resolved_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (visit_id) DO UPDATE SET kind=excluded.kind, tid=excluded.tid,"
                " customer_no=excluded.customer_no, tier=excluded.tier, reason=excluded.reason,"
                " store_id=excluded.store_id, stale=excluded.stale, unresolved=excluded.unresolved,"
                " resolved_at=excluded.resolved_at",
                rows,
            )

    def departed(self, departures: Iterable[tuple[str, float]]) -> None:
        """Mark ``(visit_id, departed_at)`` pairs; ``departed_at`` is the card's last sighting."""
        rows = [(at, at, vid) for vid, at in departures]
        if rows:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("UPDATE visits SET departed_at=?, last_seen_at=? WHERE visit_id=?", rows)

    def seen(self, sightings: Iterable[tuple[str, float]]) -> None:
        """Record ``(visit_id, last_seen_at)`` for cards still in the door zone (a crash then loses at
        most the sightings since the last call)."""
        rows = [(at, vid) for vid, at in sightings]
        if rows:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany(
                    "UPDATE visits SET last_seen_at=? WHERE visit_id=? AND departed_at IS NULL", rows
                )

    def open_visits(self) -> list[OpenVisit]:
        """Visits whose card had not departed when the branch last stopped, oldest first."""
        return [
            OpenVisit(*row)
            for row in self.db.execute(
                "SELECT visit_id, kind, epc, tid, reader_id, antenna, read_count, peak_rssi, arrived_at,"
                " COALESCE(last_seen_at, arrived_at) FROM visits WHERE departed_at IS NULL"
                " ORDER BY arrived_at"
            )
        ]

    def last_quiet(self, since: float) -> list[tuple[str, float]]:
        """``(epc, last sighting)`` of each card whose latest greeted (or suppressed) visit was last
        seen at ``since`` or later: the starts of re-entry windows still running."""
        return self.db.execute(
            "SELECT epc, MAX(COALESCE(departed_at, last_seen_at, arrived_at)) AS seen FROM visits"
            f" WHERE kind IN {QUIET_KINDS!r} AND arrived_at >= ? GROUP BY epc HAVING seen >= ?",
            (since - LONGEST_VISIT, since),
        ).fetchall()

    def acknowledged(self, acks: Iterable[tuple[str, str, float]]) -> None:
        """Record ``(visit_id, staff_id, at)`` acknowledgements; the first one per visit stays."""
        rows = [(at, staff, vid) for vid, staff, at in acks]
        if rows:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany(
                    "UPDATE visits SET acknowledged_at=?, acknowledged_by=?"
                    " WHERE visit_id=? AND acknowledged_at IS NULL",
                    rows,
                )

    def changes(self, after: int, limit: int) -> list[dict[str, Any]]:
        """The change feed after ``after`` (see :func:`changes`), through this log's own connection."""
        return changes(self.db, after, limit)

    def last_change(self) -> int:
        return last_change(self.db)

    def close(self) -> None:
        self._file.close()


def changes(db: sqlite3.Connection, after: int, limit: int) -> list[dict[str, Any]]:
    """Visits changed after feed position ``after``, oldest change first, at most ``limit``: what the
    uplink ships (the wire format's VISIT rows).  ``db`` is the reader's own connection."""
    return [dict(zip(_VISIT_KEYS, row, strict=True)) for row in db.execute(_CHANGES, (after, limit))]


def last_change(db: sqlite3.Connection) -> int:
    """The feed's newest position (0 for an empty feed)."""
    return FEED.last(db)
