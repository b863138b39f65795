"""A change feed on a branch file (the visit log, the outbox): what the uplink ships to the centre.

Each row carries ``change_seq``, the feed position of its last change that the centre must hear of.
SQLite triggers set it in the same transaction as the write (a committed visit always has its
position; a rolled-back one never took one), from a one-row counter table, so positions only grow
and never repeat, even when old rows are purged.  Triggers fire on insert and on an update of a
carried column whose value changed: not on ``last_seen_at``, which a card at the door rewrites every
few seconds.  The uplink reads the feed through its own read-only connection (:func:`open_reader`):
WAL lets it read while the pipeline writes, and the pipeline's connection is never shared.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs


@attrs.frozen
class Feed:
    """The feed of ``table``, counted in the one-row table ``counter``; ``carried`` are the columns
    whose changes move a row to the feed's end."""

    table: str
    counter: str
    carried: tuple[str, ...]

    def _trigger(self, name: str, event: str, when: str) -> str:
        return (
            f"CREATE TRIGGER IF NOT EXISTS {self.table}_feed_{name} AFTER {event} ON {self.table}{when}"
            f" BEGIN UPDATE {self.counter} SET seq = seq + 1 WHERE id = 1;"
            f" UPDATE {self.table} SET change_seq = (SELECT seq FROM {self.counter} WHERE id = 1)"
            " WHERE rowid = NEW.rowid; END"
        )

    def step(self, db: sqlite3.Connection) -> list[str]:
        """The migration step: the column, the counter, the index and the triggers; rows written
        before the feed existed get positions in the order they were written (rowid order)."""
        changed = []
        have = {row[1] for row in db.execute(f"PRAGMA table_info({self.table})")}
        if "change_seq" not in have:
            db.execute(f"ALTER TABLE {self.table} ADD COLUMN change_seq INTEGER")
            changed.append(f"{self.table}.change_seq")
        start = db.execute(f"SELECT COALESCE(MAX(change_seq), 0) FROM {self.table}").fetchone()[0]
        filled = db.execute(
            f"UPDATE {self.table} SET change_seq = s.n + ? FROM (SELECT rowid AS r, ROW_NUMBER()"
            f" OVER (ORDER BY rowid) AS n FROM {self.table} WHERE change_seq IS NULL) AS s"
            f" WHERE {self.table}.rowid = s.r",
            (start,),
        ).rowcount
        if filled:
            changed.append(f"{self.table}: {filled} rows numbered for the change feed")
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {self.counter}"
            " (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL)"
        )
        db.execute(
            f"INSERT INTO {self.counter} (id, seq) SELECT 1, COALESCE(MAX(change_seq), 0) FROM {self.table}"
            " WHERE true ON CONFLICT (id) DO UPDATE SET seq = MAX(seq, excluded.seq)"
        )
        db.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_change_seq ON {self.table} (change_seq)")
        differs = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in self.carried)
        db.execute(self._trigger("insert", "INSERT", ""))
        db.execute(self._trigger("update", f"UPDATE OF {', '.join(self.carried)}", f" WHEN {differs}"))
        return changed

    def last(self, db: sqlite3.Connection) -> int:
        """The newest position (0 when nothing was ever written)."""
        row = db.execute(f"SELECT seq FROM {self.counter} WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def move_past(self, path: Path, position: int) -> int:
        """Renumber every row of the file's feed to follow ``position`` (order kept), if the feed ends
        below it; returns the rows renumbered (0: nothing to do).  For a branch whose file was
        replaced or restored from a copy while the centre kept what the old one sent: positions the
        centre already holds would be taken for rows it has, and those rows never sent.  Renumbered,
        everything the file holds goes again, and the centre applies each row once by its key."""
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("BEGIN IMMEDIATE")  # the writer's triggers read the counter: both move at once
            if self.last(db) >= position:
                db.execute("ROLLBACK")
                return 0
            moved = db.execute(
                f"UPDATE {self.table} SET change_seq = change_seq + ? WHERE change_seq IS NOT NULL",
                (position,),
            ).rowcount
            db.execute(f"UPDATE {self.counter} SET seq = seq + ? WHERE id = 1", (position,))
            db.execute("COMMIT")
            return moved
        finally:
            db.close()


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to a branch file, for a thread that is not its writer.  Raises
    ``sqlite3.OperationalError`` when the file does not exist yet."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 1000")
    return db


__all__ = ["Feed", "open_reader"]
