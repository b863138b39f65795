"""PostgreSQL's monthly partitions of ``visits`` and ``deliveries``: made ahead, made on demand, dropped
whole by retention.

A partition holds one UTC calendar month and is named after it: ``visits_p202612`` holds
``[2026-12-01 00:00 UTC, 2027-01-01 00:00 UTC)``.  Months are made ahead by :func:`ensure` (the
migration makes the current month and a few ahead), and on demand by the writes for any month a
batch reaches that has none yet (a branch's backlog from before the centre, or a clock far off), so
there is no default partition: a default partition would have to be emptied before a new month could
be attached.  Creation takes a transaction-level advisory lock, so two writers making the same month
do not collide.  Everything here runs on PostgreSQL only; SQLite's tables are not partitioned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime, timezone

from sqlalchemy import Connection, text

from .schema import PARTITIONED

#: the advisory lock the partition DDL holds (an arbitrary constant of the centre's own)
LOCK = 0x76697073  # "vips"
_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<year>\d{4})(?P<month>\d{2})$")


def month_of(when: datetime) -> date:
    """The first day of ``when``'s UTC month."""
    utc = when.astimezone(timezone.utc)
    return date(utc.year, utc.month, 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def months(first: date, count: int) -> list[date]:
    """``count`` months from ``first``'s month on."""
    found, month = [], date(first.year, first.month, 1)
    for _ in range(count):
        found.append(month)
        month = next_month(month)
    return found


def name(table: str, month: date) -> str:
    return f"{table}_p{month.year:04d}{month.month:02d}"


def _bound(month: date) -> str:
    return f"{month.isoformat()} 00:00:00+00"


def create(conn: Connection, table: str, wanted: Iterable[date]) -> list[str]:
    """Make ``table``'s partitions for the ``wanted`` months that lack one; returns those made."""
    if table not in PARTITIONED:
        raise ValueError(f"{table} is not partitioned")
    conn.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": LOCK})
    have = set(existing(conn, table))
    made = []
    for month in sorted(set(wanted)):
        partition = name(table, month)
        if partition in have:
            continue
        conn.exec_driver_sql(
            f"CREATE TABLE {partition} PARTITION OF {table} "
            f"FOR VALUES FROM ('{_bound(month)}') TO ('{_bound(next_month(month))}')"
        )
        made.append(partition)
    return made


def existing(conn: Connection, table: str) -> dict[str, date]:
    """``table``'s monthly partitions, by name, with their month (from ``pg_inherits``)."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": table},
    )
    found = {}
    for (relname,) in rows:
        match = _NAME.match(relname)
        if match and match["table"] == table:
            found[relname] = date(int(match["year"]), int(match["month"]), 1)
    return found


def drop_before(conn: Connection, table: str, cutoff: datetime) -> list[str]:
    """Drop ``table``'s partitions whose whole month ends at or before ``cutoff``; the month the
    cutoff falls in stays whole.  Returns the partitions dropped, oldest first."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": LOCK})
    dropped = []
    for partition, month in sorted(existing(conn, table).items(), key=lambda item: item[1]):
        end = datetime(next_month(month).year, next_month(month).month, 1, tzinfo=timezone.utc)
        if end <= cutoff:
            conn.exec_driver_sql(f"DROP TABLE {partition}")
            dropped.append(partition)
    return dropped


__all__ = ["LOCK", "create", "drop_before", "existing", "month_of", "months", "name", "next_month"]
