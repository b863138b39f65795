"""Each branch's arrivals per day (``branch_days``): what the board shows, kept by the writes.

The board of a bank shows, for 1,000 branches at once, today's arrivals and how many were greeted,
rejected or suspect.  Aggregating the day's visits for that took most of its 100 ms budget (issue 14
part 7), so every write of visits recounts, in its own transaction, the days it touched of the
branch it wrote: one indexed range of one branch's day, exact whatever changed (a visit whose kind
changed, a replay, a backlog of old days), and the board reads one row per branch.

"Today" is the branch's own day (``branches.timezone``; a name that is not a zone falls back to the
bank's, as on the board).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, Date, bindparam, select, text

from . import schema
from .schema import UtcDateTime

COUNTED = ("greeted", "rejected", "suspect")  #: the kinds the board counts apart
#: the kinds that are a person at the door (a suppressed re-entry or a foreign tag is not an arrival)
ARRIVALS = ("greeted", "rejected", "suspect", "unresolved")
BANK_ZONE = "Asia/Shanghai"  #: a branch without a usable zone is counted on the bank's

_KINDS = ", ".join(f"'{k}'" for k in ARRIVALS)  # constants of this module: no input reaches the SQL
_COUNTS = ", ".join(f"count(*) FILTER (WHERE v.kind = '{k}')" for k in COUNTED)
_SET = ", ".join(f"{c} = excluded.{c}" for c in ("arrivals", *COUNTED, "last_arrival_at"))
#: one branch's day recounted from its visits (an aggregate without GROUP BY: always one row)
RECOUNT = (
    "INSERT INTO branch_days (branch_id, day, arrivals, greeted, rejected, suspect, last_arrival_at)"
    f" SELECT :branch, :day, count(*), {_COUNTS}, max(v.arrived_at) FROM visits v"
    f" WHERE v.branch_id = :branch AND v.arrived_at >= :start AND v.arrived_at < :end"
    f" AND v.kind IN ({_KINDS})"
    f" ON CONFLICT (branch_id, day) DO UPDATE SET {_SET}"
)
_RECOUNT = text(RECOUNT).bindparams(
    bindparam("day", type_=Date),
    bindparam("start", type_=UtcDateTime),
    bindparam("end", type_=UtcDateTime),
)
_RECOUNT_PG = RECOUNT.replace(":branch", "%(branch)s").replace(":day", "%(day)s")
_RECOUNT_PG = _RECOUNT_PG.replace(":start", "%(start)s").replace(":end", "%(end)s")


def zone(name: str | None) -> ZoneInfo:
    """A branch's zone; an unknown name falls back to the bank's (never fails the whole board)."""
    try:
        return ZoneInfo(name or BANK_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(BANK_ZONE)


def day_window(now: dt.datetime, tz: ZoneInfo, day: dt.date | None = None) -> tuple[dt.datetime, dt.datetime]:
    """``[start, end)`` of ``day`` (default: today at ``now``) in ``tz``, as aware UTC datetimes; a
    day across a daylight-saving change is 23 or 25 hours, as it should be."""
    day = day or now.astimezone(tz).date()
    start = dt.datetime.combine(day, dt.time(0), tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tz)
    return start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)


def days_of(times: Iterable[dt.datetime], tz: ZoneInfo) -> set[dt.date]:
    """The local dates of ``times`` (aware) in ``tz``."""
    return {t.astimezone(tz).date() for t in times}


def recount(
    conn: Connection, postgresql: bool, branch_id: str, tz_name: str | None, days: Iterable[dt.date]
) -> None:
    """Recount ``days`` of ``branch_id`` from its visits, in the caller's transaction (after the
    visits are written).  On PostgreSQL the days go in one pipeline, straight through psycopg."""
    found = recount_statement(postgresql, branch_id, tz_name, days)
    if found is None:
        return
    statement, params = found
    if postgresql:
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            cur.executemany(statement, params)
    else:
        conn.execute(statement, params)


def recount_statement(
    postgresql: bool, branch_id: str, tz_name: str | None, days: Iterable[dt.date]
) -> tuple[Any, list[dict[str, Any]]] | None:
    """The statement recounting ``days`` of ``branch_id`` and its parameters, one set a day (psycopg's
    text on PostgreSQL, SQLAlchemy's on SQLite), or None for no days: the ingest sends it in the
    round trip of its writes (:meth:`~vipsense.centre.database.Database.upserts`' ``also``)."""
    tz = zone(tz_name)
    params = []
    for day in sorted(set(days)):
        start, end = day_window(dt.datetime.now(tz), tz, day)
        params.append({"branch": branch_id, "day": day, "start": start, "end": end})
    if not params:
        return None
    return (_RECOUNT_PG if postgresql else _RECOUNT), params


def recount_all(conn: Connection, dialect: str) -> None:
    """Count every branch's days afresh from every visit held, in its zone: migration step 4, and
    visits written around the centre's writes (a bulk load).  On PostgreSQL one ``GROUP BY`` per
    zone; on SQLite (small by design) in Python."""
    b = schema.branches.c
    zones = dict(conn.execute(select(b.branch_id, b.timezone)).all())
    if dialect == "postgresql":
        for name in sorted(set(zones.values()), key=str):
            statement = text(
                "INSERT INTO branch_days (branch_id, day, arrivals, greeted, rejected, suspect,"
                f" last_arrival_at) SELECT v.branch_id, (v.arrived_at AT TIME ZONE :tz)::date, count(*),"
                f" {_COUNTS}, max(v.arrived_at) FROM visits v JOIN branches b ON b.branch_id = v.branch_id"
                f" WHERE b.timezone IS NOT DISTINCT FROM :name AND v.kind IN ({_KINDS})"
                f" GROUP BY v.branch_id, 2 ON CONFLICT (branch_id, day) DO UPDATE SET {_SET}"
            )
            conn.execute(statement, {"tz": zone(name).key, "name": name})
        return
    touched: dict[str, set[dt.date]] = {}
    v = schema.visits.c
    query = select(v.branch_id, v.arrived_at).where(v.kind.in_(ARRIVALS))
    for branch_id, arrived in conn.execute(query):
        touched.setdefault(branch_id, set()).add(arrived.astimezone(zone(zones.get(branch_id))).date())
    for branch_id, days in touched.items():
        recount(conn, False, branch_id, zones.get(branch_id), days)


def touched(rows: Iterable[dict[str, Any]]) -> dict[str, list[dt.datetime]]:
    """The arrival times of ``rows`` (visits) per branch."""
    out: dict[str, list[dt.datetime]] = {}
    for row in rows:
        out.setdefault(row["branch_id"], []).append(row["arrived_at"])
    return out


__all__ = [
    "ARRIVALS",
    "COUNTED",
    "day_window",
    "days_of",
    "recount",
    "recount_all",
    "recount_statement",
    "touched",
    "zone",
]
