"""Response times: for each visit, when each member of staff was told and when they acknowledged;
per member of staff, how fast.  This is the staff assessment head office reads (``vipsense visits
--today`` and the status object's ``responses``).

A person reached through several notifiers (PDA and pager) counts once per visit: delivered at the
first delivery, acknowledged at the acknowledgement.  Times are seconds after the customer arrived.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from ..model import parse_notification_key
from ..stats import percentile
from ..storage.outbox import DeliveryRecord


@attrs.frozen
class Told:
    """One member of staff told of one visit, over every notifier that carried it."""

    staff_id: str
    via: tuple[str, ...]
    state: str  #: the most advanced: acknowledged > delivered > retrying/pending > failed > expired
    delivered_after: float | None  #: seconds from arrival to the first delivery
    acknowledged_after: float | None
    escalated: bool  #: they did not respond in time, so their rule's fallback was told
    escalated_from: str  #: this was an escalation: who had not responded


@attrs.frozen
class StaffResponse:
    staff_id: str
    told: int
    delivered: int
    acknowledged: int
    escalated: int  #: visits where their fallback had to be told
    delivery_p50: float | None
    acknowledgement_p50: float | None
    acknowledgement_p90: float | None

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


_RANK = {"acknowledged": 5, "delivered": 4, "retrying": 3, "pending": 2, "failed": 1, "expired": 0}


def _pct(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 3) if values else None


def told_by_visit(records: Iterable[DeliveryRecord]) -> dict[str, list[Told]]:
    """``visit_id -> [Told]``, one per member of staff: the routed recipients, then escalations."""
    groups: dict[tuple[str, str], list[DeliveryRecord]] = {}
    for r in records:
        groups.setdefault((r.visit_id, r.recipient_id), []).append(r)
    out: dict[str, list[Told]] = {}
    for (visit_id, staff_id), group in groups.items():
        # "card seen" for an unresolved arrival counts only until the greeting that follows it
        rs = [r for r in group if not parse_notification_key(r.key)[2]] or group
        delivered = [r.delivered_at for r in rs if r.delivered_at is not None]
        acked = [r.acknowledged_at for r in rs if r.acknowledged_at is not None]
        arrived = rs[0].arrived_at
        out.setdefault(visit_id, []).append(
            Told(
                staff_id=staff_id,
                via=tuple(sorted({r.notifier_id for r in rs})),
                state=max((r.state for r in rs), key=lambda s: _RANK.get(s, -1)),
                delivered_after=round(min(delivered) - arrived, 3) if delivered else None,
                acknowledged_after=round(min(acked) - arrived, 3) if acked else None,
                escalated=any(r.escalated_at is not None for r in rs) and not acked,
                escalated_from=next((r.escalated_from for r in rs if r.escalated_from), ""),
            )
        )
    for told in out.values():  # the rule's own recipients first, then whoever was told instead
        told.sort(key=lambda t: (bool(t.escalated_from), t.staff_id))
    return out


def per_staff(records: Iterable[DeliveryRecord]) -> dict[str, StaffResponse]:
    """Counts and percentiles per member of staff."""
    acc: dict[str, list[Told]] = {}
    for told in told_by_visit(records).values():
        for t in told:
            acc.setdefault(t.staff_id, []).append(t)
    out = {}
    for staff_id, ts in sorted(acc.items()):
        deliveries = [t.delivered_after for t in ts if t.delivered_after is not None]
        acks = [t.acknowledged_after for t in ts if t.acknowledged_after is not None]
        out[staff_id] = StaffResponse(
            staff_id=staff_id,
            told=len(ts),
            delivered=len(deliveries),
            acknowledged=len(acks),
            escalated=sum(t.escalated for t in ts),
            delivery_p50=_pct(deliveries, 0.5),
            acknowledgement_p50=_pct(acks, 0.5),
            acknowledgement_p90=_pct(acks, 0.9),
        )
    return out


@attrs.frozen
class VisitRow:
    visit_id: str
    arrived_at: float
    kind: str
    customer_no: str | None
    tier: str | None
    reason: str | None
    acknowledged_at: float | None
    acknowledged_by: str | None


def _read_only(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def load(data_dir: Path, since: float, until: float) -> tuple[list[VisitRow], list[DeliveryRecord]]:
    """A running or stopped branch's visits and delivery records in ``[since, until)``, read-only."""
    visits: list[VisitRow] = []
    records: list[DeliveryRecord] = []
    db = _read_only(data_dir / "visits.sqlite3")
    if db is not None:
        with contextlib.closing(db):
            have = {row[1] for row in db.execute("PRAGMA table_info(visits)")}
            ack = "acknowledged_at, acknowledged_by" if "acknowledged_at" in have else "NULL, NULL"
            visits = [
                VisitRow(*row)
                for row in db.execute(
                    f"SELECT visit_id, arrived_at, kind, customer_no, tier, reason, {ack} FROM visits"
                    " WHERE arrived_at >= ? AND arrived_at < ? AND kind != 'suppressed' ORDER BY arrived_at",
                    (since, until),
                )
            ]
    db = _read_only(data_dir / "outbox.sqlite3")
    if db is not None:
        with contextlib.closing(db):
            have = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
            esc = "escalated_at, escalated_from" if "escalated_at" in have else "NULL, ''"
            records = [
                DeliveryRecord(*row)
                for row in db.execute(
                    "SELECT key, notifier_id, recipient_id, visit_id, state, arrived_at, delivered_at,"
                    f" acknowledged_at, attempts, last_error, {esc} FROM outbox"
                    " WHERE arrived_at >= ? AND arrived_at < ? ORDER BY arrived_at, key, notifier_id",
                    (since, until),
                )
            ]
    return visits, records
