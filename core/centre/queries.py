"""What the centre's pages read: the live board, one branch's feed, one customer's visits everywhere.

SQLAlchemy Core over :mod:`vipsense.centre.schema`, the same statements on SQLite and PostgreSQL.
The board is a handful of queries for all branches together, never one per branch (issue 14 part
7: 1,000 branches in ≤ 100 ms p99 on PostgreSQL): the branches, their devices, and per time zone
the branches joined with their day's counts in ``branch_days`` (kept by every write of visits,
:mod:`vipsense.centre.days`: no aggregate over the day's visits) plus one look-up of each branch's
last arrival by the ``(branch_id, arrived_at)`` index.

"Today" is the branch's own day (``branches.timezone``): a visit at 23:30 yesterday in Shanghai is
not today's, even where the centre's clock is in another zone.  Nothing here holds ID or mobile
numbers in clear: visits carry customer numbers, the names shown pass through
:func:`vipsense.privacy.mask_personal_numbers` (and on the board are cut to their first character),
and a search by ID number goes through the blind index ``customers.id_index``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from sqlalchemy import Row, select, true, tuple_

from ..crypto import FieldCipher, normalise_id_number
from ..privacy import MASK_CHAR, mask_personal_numbers
from .database import Database
from .days import ARRIVALS as ARRIVALS
from .days import COUNTED as COUNTED
from .days import day_window as day_window
from .days import zone as zone
from .schema import branch_days, branches, customers, deliveries, device_status, unix_seconds, visits

ONLINE_WITHIN = 30.0  #: seconds: a heartbeat this recent is online (3 × a branch's usual 10 s report)
LATE_WITHIN = 300.0  #: seconds: older than ONLINE_WITHIN and at most this is late; older is offline
CLOCK_FLAG = 60.0  #: seconds: a branch clock further off than this is flagged on the board
FEED_LIMIT = 500  #: rows of one feed or search answer at most
#: the branch's own count of rows not yet sent, where the schema keeps it (a heartbeat's backlog)
BACKLOG = ("backlog_visits", "backlog_deliveries")
ID_COLUMN = "customers.id_number"  #: the associated data the identity store seals ID numbers with


@attrs.frozen
class Device:
    """One device's last reported state (``device_status``)."""

    kind: str
    device_id: str
    state: str
    reason: str | None
    updated_unix: float


@attrs.frozen
class LastArrival:
    """A branch's latest arrival today: when, what, and who (masked for a wall screen)."""

    visit_id: str
    arrived_unix: float
    kind: str
    tier: str | None
    customer_no: str | None
    name: str  #: the first character and stars: a board may hang where customers see it


@attrs.frozen
class BranchRow:
    """One branch on the board."""

    branch_id: str
    name: str
    timezone: str
    state: str  #: online, late or offline (also offline: never reported)
    revoked: bool
    last_heartbeat_unix: float | None
    heartbeat_age_s: float | None
    clock_offset_s: float | None  #: the branch's clock minus the centre's, at its last report
    clock_flag: bool  #: |offset| > CLOCK_FLAG
    devices: tuple[Device, ...]
    arrivals_today: int
    greeted: int
    rejected: int
    suspect: int
    last_arrival: LastArrival | None
    backlog: dict[str, int] | None  #: rows the branch still has to send, if it reported them
    #: what the centre found wrong with the branch's audit chain (vipsense.centre.anchors), or None
    audit_alarm: str | None = None

    @property
    def devices_down(self) -> int:
        """Devices whose last state is not ``ok`` (the board's warning count)."""
        return sum(1 for d in self.devices if d.state != "ok")

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``/api/board`` and the SSE events): plain values only."""
        return attrs.asdict(self) | {"devices_down": self.devices_down}


def state_of(last: dt.datetime | None, now: dt.datetime) -> tuple[str, float | None]:
    """``online`` / ``late`` / ``offline`` by the last heartbeat's age, and the age in seconds."""
    return _state(None if last is None else (now - last).total_seconds())


def _state(age: float | None) -> tuple[str, float | None]:
    if age is None:
        return "offline", None
    if age <= ONLINE_WITHIN:
        return "online", age
    if age <= LATE_WITHIN:
        return "late", age
    return "offline", age


def board_name(name: str | None) -> str:
    """A name as a wall screen shows it: its first character, the rest stars (``王**``)."""
    if not name:
        return ""
    clean = mask_personal_numbers(name).strip()
    return clean[:1] + MASK_CHAR * min(max(len(clean) - 1, 1), 3) if clean else ""


def unix(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def board(database: Database, now: dt.datetime, branch_ids: Iterable[str] | None = None) -> list[BranchRow]:
    """Every branch (or those of ``branch_ids``) with its state, devices and today's figures, by name.

    Queries: the zones, the devices, and per time zone one statement: the zone's branches joined
    with their rows of ``branch_days`` for the zone's day and, on PostgreSQL, a ``LATERAL`` look-up
    of each branch's last arrival (on SQLite a second statement by ``(branch_id, arrived_at)``).  A
    bank in one zone answers in three statements on PostgreSQL."""
    wanted = None if branch_ids is None else sorted(set(branch_ids))
    if wanted is not None and not wanted:
        return []
    with database.begin() as conn:
        zq = select(branches.c.timezone).distinct()
        c = device_status.c
        # unix seconds computed by the database: 6,000 datetimes parsed, checked and converted cost
        # the board more than its queries
        dq = select(c.branch_id, c.kind, c.device_id, c.state, c.reason, unix_seconds(c.updated_at)).order_by(
            device_status.c.branch_id, device_status.c.kind, device_status.c.device_id
        )
        if wanted is not None:
            zq = zq.where(branches.c.branch_id.in_(wanted))
            dq = dq.where(device_status.c.branch_id.in_(wanted))
        zones = sorted(conn.execute(zq).scalars().all())
        devices: dict[str, list[Device]] = {}
        # fetched whole (one fetch, not one per row) and read as tuples: 6,000 devices on a bank's board
        for branch_id, kind, device_id, state, reason, updated_unix in conn.execute(dq).all():
            devices.setdefault(branch_id, []).append(Device(kind, device_id, state, reason, updated_unix))
        out: list[BranchRow] = []
        for tz_name in zones:
            start, end = day_window(now, zone(tz_name))
            rows = _zone(conn, database.is_postgresql, tz_name, len(zones) == 1, start, end, wanted)
            if database.is_postgresql:
                lasts = {r.branch_id: _last(r) for r in rows if r.visit_id is not None}
            else:
                keys = [(r.branch_id, r.last_at) for r in rows if r.last_at is not None]
                lasts = _last_arrivals(conn, start, end, keys)
            out += [_row(r, now, devices, lasts) for r in rows]
    return sorted(out, key=lambda r: (r.name, r.branch_id))


def _row(
    r: Row[Any], now: dt.datetime, devices: dict[str, list[Device]], lasts: dict[str, LastArrival]
) -> BranchRow:
    heartbeat = r.heartbeat_unix
    state, age = _state(None if heartbeat is None else now.timestamp() - heartbeat)
    offset = r.clock_offset_s
    backlog = {c.removeprefix("backlog_"): getattr(r, c) for c in BACKLOG}
    return BranchRow(
        branch_id=r.branch_id,
        name=r.name,
        timezone=r.timezone,
        state=state,
        revoked=bool(r.revoked),
        last_heartbeat_unix=heartbeat,
        heartbeat_age_s=age,
        clock_offset_s=offset,
        clock_flag=offset is not None and abs(offset) > CLOCK_FLAG,
        devices=tuple(devices.get(r.branch_id, ())),
        arrivals_today=int(r.arrivals or 0),
        greeted=int(r.greeted or 0),
        rejected=int(r.rejected or 0),
        suspect=int(r.suspect or 0),
        last_arrival=lasts.get(r.branch_id),
        backlog={k: int(v) for k, v in backlog.items()}
        if any(v is not None for v in backlog.values())
        else None,
        audit_alarm=r.audit_alarm,
    )


def _last(r: Row[Any]) -> LastArrival:
    return LastArrival(r.visit_id, r.arrived_unix, r.kind, r.tier, r.customer_no, board_name(r.customer_name))


def _zone(
    conn: Any,
    postgresql: bool,
    tz_name: str,
    only_zone: bool,
    start: dt.datetime,
    end: dt.datetime,
    wanted: Sequence[str] | None,
) -> list[Row[Any]]:
    """The branches of one zone with their day's counts (and on PostgreSQL their last arrival)."""

    # the day's counts as the ingest keeps them (``branch_days``, one row per branch and day)
    day = start.astimezone(zone(tz_name)).date()
    counts = select(branch_days).where(branch_days.c.day == day).subquery("today")
    columns: list[Any] = [
        branches.c.branch_id,
        branches.c.name,
        branches.c.timezone,
        branches.c.revoked_at.is_not(None).label("revoked"),
        unix_seconds(branches.c.last_heartbeat_at).label("heartbeat_unix"),
        branches.c.clock_offset_s,
        *(branches.c[c] for c in BACKLOG),
        branches.c.audit_alarm,
        counts.c.arrivals,
        *(counts.c[k] for k in COUNTED),
    ]
    joined: Any = branches.outerjoin(counts, counts.c.branch_id == branches.c.branch_id)
    if postgresql:
        # the day's last arrival is known (branch_days.last_arrival_at): one exact probe of the
        # (branch_id, arrived_at) index per branch, however many visits the day holds (ordering the
        # day's visits by time and id instead read every one of them: 228 a branch took 200 ms)
        latest = (
            select(
                visits.c.visit_id,
                unix_seconds(visits.c.arrived_at).label("arrived_unix"),
                visits.c.kind,
                visits.c.tier,
                visits.c.customer_no,
            )
            .where(
                visits.c.branch_id == branches.c.branch_id,
                visits.c.arrived_at == counts.c.last_arrival_at,
                visits.c.arrived_at >= start,
                visits.c.arrived_at < end,
                visits.c.kind.in_(ARRIVALS),
            )
            .order_by(visits.c.visit_id.desc())
            .limit(1)
            .lateral("latest")
        )
        joined = joined.outerjoin(latest, true()).outerjoin(
            customers, customers.c.customer_no == latest.c.customer_no
        )
        columns += [*latest.c, customers.c.name.label("customer_name")]
    else:  # the key of the day's last arrival, looked up by _last_arrivals
        columns.append(counts.c.last_arrival_at.label("last_at"))
    query = select(*columns).select_from(joined).where(branches.c.timezone == tz_name)
    if wanted is not None:
        query = query.where(branches.c.branch_id.in_(wanted))
    return conn.execute(query).all()


def _last_arrivals(
    conn: Any, start: dt.datetime, end: dt.datetime, keys: list[tuple[str, dt.datetime]]
) -> dict[str, LastArrival]:
    """Each branch's latest arrival, by ``(branch_id, arrived_at)`` from the aggregate (the index's
    key), with its customer's name for the board (masked)."""
    out: dict[str, LastArrival] = {}
    for chunk in (keys[i : i + 500] for i in range(0, len(keys), 500)):
        query = (
            select(
                visits.c.branch_id,
                visits.c.visit_id,
                visits.c.arrived_at,
                visits.c.kind,
                visits.c.tier,
                visits.c.customer_no,
                customers.c.name,
            )
            .select_from(visits.outerjoin(customers, customers.c.customer_no == visits.c.customer_no))
            .where(
                visits.c.arrived_at >= start,
                visits.c.arrived_at < end,
                visits.c.kind.in_(ARRIVALS),
                tuple_(visits.c.branch_id, visits.c.arrived_at).in_(chunk),
            )
            .order_by(visits.c.visit_id)
        )
        for v in conn.execute(query).all():
            out.setdefault(
                v.branch_id,
                LastArrival(
                    v.visit_id, v.arrived_at.timestamp(), v.kind, v.tier, v.customer_no, board_name(v.name)
                ),
            )
    return out


# -- one branch's feed, one customer's visits -----------------------------------------------------


@attrs.frozen
class FeedVisit:
    """One visit as the feed and the search show it: the customer's name as the console shows it
    (numbers typed into it masked), who was told and when each acknowledged."""

    branch_id: str
    branch_name: str
    visit_id: str
    arrived_unix: float
    kind: str
    tier: str | None
    reason: str | None
    customer_no: str | None
    name: str
    reader_id: str | None
    departed_unix: float | None
    acknowledged_unix: float | None
    acknowledged_by: str | None
    deliveries: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _visit_query() -> Any:
    return select(
        visits.c.branch_id,
        branches.c.name.label("branch_name"),
        visits.c.visit_id,
        visits.c.arrived_at,
        visits.c.kind,
        visits.c.tier,
        visits.c.reason,
        visits.c.customer_no,
        customers.c.name,
        visits.c.reader_id,
        visits.c.departed_at,
        visits.c.acknowledged_at,
        visits.c.acknowledged_by,
    ).select_from(
        visits.join(branches, branches.c.branch_id == visits.c.branch_id).outerjoin(
            customers, customers.c.customer_no == visits.c.customer_no
        )
    )


def _feed_rows(conn: Any, rows: list[Row[Any]]) -> list[FeedVisit]:
    """Rows as :class:`FeedVisit`, each with its deliveries (one query per branch among them)."""
    told: dict[tuple[str, str], list[dict[str, Any]]] = {}
    by_branch: dict[str, list[str]] = {}
    for r in rows:
        by_branch.setdefault(r.branch_id, []).append(r.visit_id)
    for branch_id, ids in by_branch.items():
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            query = (
                select(deliveries)
                .where(deliveries.c.branch_id == branch_id, deliveries.c.visit_id.in_(chunk))
                .order_by(deliveries.c.created_at, deliveries.c.delivery_key)
            )
            for d in conn.execute(query):
                told.setdefault((branch_id, d.visit_id), []).append(
                    {
                        "recipient_id": d.recipient_id,
                        "notifier_id": d.notifier_id,
                        "state": d.state,
                        "delivered_unix": unix(d.delivered_at),
                        "acknowledged_unix": unix(d.acknowledged_at),
                        "escalated_from": d.escalated_from,
                    }
                )
    return [
        FeedVisit(
            branch_id=r.branch_id,
            branch_name=r.branch_name,
            visit_id=r.visit_id,
            arrived_unix=r.arrived_at.timestamp(),
            kind=r.kind,
            tier=r.tier,
            reason=r.reason,
            customer_no=r.customer_no,
            name=mask_personal_numbers(r.name) if r.name else "",
            reader_id=r.reader_id,
            departed_unix=unix(r.departed_at),
            acknowledged_unix=unix(r.acknowledged_at),
            acknowledged_by=r.acknowledged_by,
            deliveries=tuple(told.get((r.branch_id, r.visit_id), ())),
        )
        for r in rows
    ]


def branch_feed(
    database: Database, branch_id: str, since: dt.datetime, until: dt.datetime, limit: int = FEED_LIMIT
) -> list[FeedVisit]:
    """A branch's arrivals in ``[since, until)``, newest first, at most ``limit``, with who was told
    and when they acknowledged (the ``(branch_id, arrived_at)`` index, read backwards)."""
    query = (
        _visit_query()
        .where(
            visits.c.branch_id == branch_id,
            visits.c.arrived_at >= since,
            visits.c.arrived_at < until,
            visits.c.kind.in_(ARRIVALS),
        )
        .order_by(visits.c.arrived_at.desc(), visits.c.visit_id.desc())
        .limit(max(1, min(limit, FEED_LIMIT)))
    )
    with database.begin() as conn:
        return _feed_rows(conn, list(conn.execute(query)))


def customer_visits(
    database: Database,
    customer_no: str,
    branch_ids: Iterable[str] | None = None,
    limit: int = FEED_LIMIT,
) -> list[FeedVisit]:
    """A customer's visits at every branch (or those of ``branch_ids``), newest first: the
    ``(customer_no, arrived_at)`` index.  Exact: a customer number is never a pattern."""
    query = (
        _visit_query()
        .where(visits.c.customer_no == customer_no)
        .order_by(visits.c.arrived_at.desc(), visits.c.visit_id.desc())
        .limit(max(1, min(limit, FEED_LIMIT)))
    )
    if branch_ids is not None:
        query = query.where(visits.c.branch_id.in_(sorted(set(branch_ids))))
    with database.begin() as conn:
        return _feed_rows(conn, list(conn.execute(query)))


@attrs.frozen
class CustomerSummary:
    """A customer found by a search, masked: no ID or mobile number, the name as the console shows it."""

    customer_no: str
    name: str
    tier: str
    home_branch_id: str | None
    home_branch_name: str | None


def find_customer(database: Database, customer_no: str) -> CustomerSummary | None:
    """The centre's customer with exactly this number, or None."""
    query = _customer_query().where(customers.c.customer_no == customer_no)
    with database.begin() as conn:
        row = conn.execute(query).first()
    return _summary(row) if row else None


def find_by_id_number(database: Database, cipher: FieldCipher, id_number: str) -> list[CustomerSummary]:
    """Customers with this ID number: the blind index under every key held finds the candidates (one
    indexed lookup), and each one's decrypted number must equal the one asked for, as the central
    identity store does it; the number itself never leaves this function."""
    indexes = cipher.indexes(id_number)
    wanted = normalise_id_number(id_number)
    query = (
        _customer_query()
        .add_columns(customers.c.id_number_enc)
        .where(customers.c.id_index.in_(indexes))
        .order_by(customers.c.customer_no)
    )
    with database.begin() as conn:
        rows = list(conn.execute(query))
    found = []
    for row in rows:
        clear = cipher.decrypt(ID_COLUMN, row.customer_no, row.id_number_enc)
        if clear is not None and normalise_id_number(clear) == wanted:
            found.append(_summary(row))
    return found


def _customer_query() -> Any:
    return select(
        customers.c.customer_no,
        customers.c.name,
        customers.c.tier,
        customers.c.home_branch_id,
        branches.c.name.label("home_branch_name"),
    ).select_from(customers.outerjoin(branches, branches.c.branch_id == customers.c.home_branch_id))


def _summary(row: Row[Any]) -> CustomerSummary:
    return CustomerSummary(
        row.customer_no,
        mask_personal_numbers(row.name),
        row.tier,
        row.home_branch_id,
        row.home_branch_name,
    )


def branch_info(database: Database, branch_id: str) -> Row[Any] | None:
    """The branch's row (name, time zone ...), or None."""
    with database.begin() as conn:
        return conn.execute(select(branches).where(branches.c.branch_id == branch_id)).first()


__all__ = [
    "BranchRow",
    "CustomerSummary",
    "Device",
    "FeedVisit",
    "LastArrival",
    "board",
    "branch_feed",
    "customer_visits",
    "day_window",
    "find_by_id_number",
    "find_customer",
    "state_of",
]
