"""The one way a SQLite file of the branch (visit log, outbox, web users, the SQLite identity store)
is brought up to date: ordered steps, numbered by ``PRAGMA user_version``, in one transaction.

Step ``n`` (1-based) brings a file from version ``n - 1`` to ``n``.  A file made before it had a
version is at 0, so every step must also leave a file that already has its change unchanged (adding a
column checks that the column is missing first).  Each step returns what it changed, for a report.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence

#: One step: changes the file inside the migration's transaction; returns what it changed.
Step = Callable[[sqlite3.Connection], list[str]]


def version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def add_columns(db: sqlite3.Connection, columns: Mapping[str, Iterable[tuple[str, str]]]) -> list[str]:
    """Add each ``(name, declaration)`` its table lacks; returns the ones added, as ``table.name``."""
    added = []
    for table, wanted in columns.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, declaration in wanted:
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
                added.append(f"{table}.{name}")
    return added


def adding_columns(columns: Mapping[str, Iterable[tuple[str, str]]]) -> Step:
    """A step that adds the columns of a newer layout (see :func:`add_columns`)."""
    return lambda db: add_columns(db, columns)


def migrate(db: sqlite3.Connection, steps: Sequence[Step], then: Step | None = None) -> list[str]:
    """Run the steps past the file's version, in order, then ``then`` (checks every opening needs),
    and record the new version; all in one immediate transaction, taken before the version is read,
    so two processes opening an old file migrate it once.  Returns what the steps changed.

    ``db`` must not be inside a transaction (``isolation_level=None``, or nothing pending)."""
    if then is None and version(db) >= len(steps):
        return []  # up to date: no write lock for a file that needs nothing
    changed: list[str] = []
    with db:
        db.execute("BEGIN IMMEDIATE")
        found = version(db)
        for step in steps[found:]:
            changed += step(db)
        if then is not None:
            changed += then(db)
        if found < len(steps):  # a newer file keeps its version
            db.execute(f"PRAGMA user_version = {len(steps)}")
    return changed


__all__ = ["Step", "add_columns", "adding_columns", "migrate", "version"]
