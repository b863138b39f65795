"""The demo centre's history: months of plausible, invented activity for a few branches.

The demo centre (``profiles/demo/centre.yaml``) shows the board, search and, later, issue 15's
reports over branches that never ran here, so their past is generated: customers (Chinese names,
fewer at the top tiers), their cards and the cards' histories, staff, and each day's visits,
deliveries, acknowledgements and sightings, with the shapes reports look for: a morning peak and a
lunch dip inside opening hours (09:00-17:00 in the branch's own time zone), busier weekdays than
weekends, regulars who come weekly, others monthly, customers who stopped coming in the last 30
days, lost, revoked and expired cards turning up at the door, and the odd suspect card.

Every figure comes from one ``random.Random`` per branch seeded with ``settings.seed`` and the branch
id, and every time is counted back from ``now``: the same seed and the same ``now`` give the same
rows.  :func:`generate` is idempotent: a branch that already has visits is left alone (the marker),
so running the demo twice adds nothing.  Visits and deliveries go through the real ingest, a day a
batch (each its own transaction), so a run stopped in the middle leaves that branch with part of its
history: remove the demo centre's database to make it again.

Generated customers have no ID number and no mobile number at all (``id_number_enc`` and
``mobile_enc`` stay NULL): nothing personal exists to mask or to leak.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import attrs
from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from .. import __version__
from . import schema
from .database import Database
from .ingest import MAX_ROWS, apply_batch, parse_batch

log = logging.getLogger("vipsense.centre.demo")

OPENS, CLOSES = 9, 17  #: opening hours, in the branch's own time zone
CUSTOMERS = 480  #: generated customers per branch
LAPSED_DAYS = 30  #: a lapsed customer has not come for at least this long (issue 15's reports)

#: tiers and their shares: fewer at the top
TIERS = (("standard", 0.45), ("gold", 0.30), ("platinum", 0.18), ("diamond", 0.07))

#: how customers come: (habit, share).  ``weekly``: a weekday of their own, most weeks; ``monthly``:
#: about once a month; ``occasional``: once a quarter or so; ``lapsed``: weekly until a day 30 to 80
#: days ago, then never again; ``new``: first card issued inside the window, then about fortnightly
HABITS = (("weekly", 0.16), ("monthly", 0.42), ("occasional", 0.24), ("lapsed", 0.10), ("new", 0.08))

#: how busy each quarter hour from 09:00 is (32 slots): a morning peak, a lunch dip, a second wind
SLOT_WEIGHTS = (
    *(1.0, 1.3, 1.9, 2.2, 2.4, 2.4, 2.2, 2.0, 1.7, 1.5, 1.3, 1.2),  # 09:00-12:00
    *(0.7, 0.6, 0.55, 0.6, 0.7, 0.9),  # 12:00-13:30: lunch
    *(1.1, 1.2, 1.3, 1.4, 1.5, 1.5, 1.5, 1.4, 1.3, 1.2, 1.0, 0.9, 0.7, 0.5),  # 13:30-17:00
)
#: visits a day of the habits that do not keep a weekday
RATES = {"monthly": 1 / 30, "occasional": 1 / 80, "new": 1 / 14}
WEEKEND = 0.4  #: a weekend day's visits against a weekday's

SURNAMES = (
    ("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("刘", "Liu"), ("陈", "Chen"), ("杨", "Yang"),
    ("黄", "Huang"), ("赵", "Zhao"), ("吴", "Wu"), ("周", "Zhou"), ("徐", "Xu"), ("孙", "Sun"),
    ("马", "Ma"), ("朱", "Zhu"), ("胡", "Hu"), ("郭", "Guo"), ("何", "He"), ("高", "Gao"),
    ("林", "Lin"), ("罗", "Luo"), ("郑", "Zheng"), ("梁", "Liang"), ("谢", "Xie"), ("宋", "Song"),
    ("唐", "Tang"), ("许", "Xu"), ("韩", "Han"), ("冯", "Feng"), ("邓", "Deng"), ("曹", "Cao"),
)  # fmt: skip
GIVEN = (
    ("伟", "Wei"), ("芳", "Fang"), ("娜", "Na"), ("敏", "Min"), ("静", "Jing"), ("丽", "Li"),
    ("强", "Qiang"), ("磊", "Lei"), ("军", "Jun"), ("洋", "Yang"), ("勇", "Yong"), ("艳", "Yan"),
    ("杰", "Jie"), ("娟", "Juan"), ("涛", "Tao"), ("明", "Ming"), ("超", "Chao"), ("秀兰", "Xiulan"),
    ("霞", "Xia"), ("平", "Ping"), ("刚", "Gang"), ("桂英", "Guiying"), ("建华", "Jianhua"),
    ("志强", "Zhiqiang"), ("晓东", "Xiaodong"), ("海燕", "Haiyan"), ("国庆", "Guoqing"),
    ("文博", "Wenbo"), ("雨桐", "Yutong"), ("子涵", "Zihan"), ("思远", "Siyuan"), ("嘉怡", "Jiayi"),
)  # fmt: skip
COMPANIES = (
    "恒信贸易有限公司", "华东精密机械", "瑞丰投资管理", "新城置业", "中科智能科技", "远航物流",
    "天和医药", "金桥进出口", "博雅教育咨询", "东方纺织集团", None, None, None, None,
)  # fmt: skip
BUSINESS = ("大额存单", "私人银行理财", "外汇结算", "对公结算", "贵金属", "保险与基金", "个人贷款")


class DemoBranch(Protocol):
    """A branch the demo invents (the demo centre profile's ``demo: branches:`` entries)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def timezone(self) -> str: ...


class DemoSettings(Protocol):
    """The demo centre profile's ``demo:`` section: which branches, how many days, which seed."""

    @property
    def branches(self) -> Sequence[DemoBranch]: ...
    @property
    def days(self) -> int: ...
    @property
    def seed(self) -> int: ...


@attrs.frozen
class Branch:
    """A plain :class:`DemoBranch`, for callers without a profile (tests, benches)."""

    id: str
    name: str
    timezone: str = "Asia/Shanghai"


@attrs.frozen
class Settings:
    """A plain :class:`DemoSettings`."""

    branches: tuple[Branch, ...]
    days: int = 90
    seed: int = 1


@attrs.frozen
class Summary:
    """What :func:`generate` wrote: rows per table per branch; branches it found done are
    ``skipped`` (the second run of the demo writes nothing)."""

    written: Mapping[str, Mapping[str, int]]
    skipped: tuple[str, ...]
    seconds: float

    @property
    def total(self) -> dict[str, int]:
        """Rows per table over all branches."""
        out: dict[str, int] = {}
        for counts in self.written.values():
            for table, n in counts.items():
                out[table] = out.get(table, 0) + n
        return out


def generate(database: Database, settings: DemoSettings, now: datetime | None = None) -> Summary:
    """Write each demo branch's history for the ``settings.days`` days up to ``now`` (default: the
    current time), skipping branches that already have visits.  Returns what was written.

    The branch, its staff, customers and cards are written straight into their tables (one
    transaction); visits and deliveries go through the ingest a real branch's batches go through
    (:func:`vipsense.centre.ingest.parse_batch` and :func:`~vipsense.centre.ingest.apply_batch`), one
    batch a day, the last one carrying the heartbeat, so sightings, acknowledgements, stream
    positions and device states are derived exactly as for a branch that reports."""
    began = time.perf_counter()
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    written: dict[str, dict[str, int]] = {}
    skipped: list[str] = []
    for index, branch in enumerate(settings.branches):
        with database.begin() as conn:
            if _has_history(conn, branch.id):
                skipped.append(branch.id)
                continue
            history = _History(branch, index, settings, now)
            rows = history.build()
            counts = _write_registry(conn, database, branch, rows)
        for batch, received in history.batches():
            apply_batch(database, branch.id, parse_batch(batch), received)
        counts.update(demo_counts(database, branch.id, registry=False))
        written[branch.id] = counts
    seconds = time.perf_counter() - began
    log.info(
        "demo centre: generated %d days for %s in %.2f s (skipped, already there: %s)",
        settings.days,
        ", ".join(written) or "no branch",
        seconds,
        ", ".join(skipped) or "none",
    )
    return Summary(written, tuple(skipped), seconds)


def _has_history(conn: Connection, branch_id: str) -> bool:
    """The marker: a branch with any visit has its history already."""
    visits = schema.visits
    found = conn.execute(select(visits.c.visit_id).where(visits.c.branch_id == branch_id).limit(1))
    return found.first() is not None


def _write_registry(
    conn: Connection, database: Database, branch: DemoBranch, rows: Mapping[str, list[dict[str, Any]]]
) -> dict[str, int]:
    """The branch (keyless: it never reports live), its staff, customers, cards and the cards'
    history, batched; rows already there (a run that stopped before its first visit) are kept."""
    dialect = postgresql if database.is_postgresql else sqlite
    made = conn.execute(
        dialect.insert(schema.branches)
        .values(
            branch_id=branch.id,
            name=branch.name,
            timezone=branch.timezone,
            created_at=rows["created_at"][0]["at"],
        )
        .on_conflict_do_nothing(index_elements=["branch_id"])
        .returning(schema.branches.c.branch_id)
    ).all()
    counts: dict[str, int] = {}
    for table in ("staff", "customers", "cards"):
        target = schema.metadata.tables[table]
        key = next(iter(target.primary_key.columns))
        statement = dialect.insert(target).on_conflict_do_nothing().returning(key)
        counts[table] = sum(len(conn.execute(statement, chunk).all()) for chunk in _chunks(rows[table], 2000))
    # the history has no natural key: written only with the branch's first run
    counts["card_events"] = len(rows["card_events"]) if made else 0
    if made and rows["card_events"]:
        conn.execute(schema.card_events.insert(), rows["card_events"])
    return counts


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _unix(value: datetime | None) -> float | None:
    return None if value is None else round(value.timestamp(), 3)


@attrs.define
class _Customer:
    customer_no: str
    tier: str
    habit: str
    manager: str | None
    epc: str
    weekday: int  #: a weekly customer's day
    rate: float  #: visits a day, for the habits that are not weekly
    first_day: int  #: index of the first day they may come (new customers)
    last_day: int  #: index of the last day they may come (lapsed customers)
    old_epc: str | None = None  #: a card reported lost (or revoked) they may still carry
    old_status: str | None = None
    expired_on: int | None = None  #: day index from which their card has expired


class _History:
    """One branch's generated history: ``build()`` returns rows per table."""

    def __init__(self, branch: DemoBranch, index: int, settings: DemoSettings, now: datetime) -> None:
        self.branch = branch
        self.zone = ZoneInfo(branch.timezone)
        self.rng = random.Random(f"vipsense-demo:{settings.seed}:{branch.id}")
        self.days = max(int(settings.days), 1)
        self.now = now
        self.today = now.astimezone(self.zone).date()
        self.first = self.today - timedelta(days=self.days - 1)
        self.prefix = f"C{index + 2}"  #: the demo branch's own customers are C1xxxxxx
        self.epc_prefix = f"E28011606000{0xD0 + index:02X}"
        self.rows: dict[str, list[dict[str, Any]]] = {
            name: []
            for name in (
                "staff",
                "customers",
                "cards",
                "card_events",
                "visits",
                "deliveries",
                "created_at",
            )
        }
        self.cards_made = 0
        self.lobby: list[str] = []
        self.managers: list[str] = []
        self.branch_manager = ""
        #: (day's end as the branch sends it, visits and deliveries made by then) for each day
        self.marks: list[tuple[datetime, int, int]] = []
        self.devices: list[dict[str, Any]] = []
        self.offset_s = 0.0  #: the branch's clock against the centre's
        self.audit_head: dict[str, Any] | None = None
        self.cum_slots = _cumulative(SLOT_WEIGHTS)

    # -- helpers ---------------------------------------------------------------------------------

    def _name(self) -> tuple[str, str]:
        surname, surname_py = self.rng.choice(SURNAMES)
        given, given_py = self.rng.choice(GIVEN)
        return f"{surname}{given} {surname_py} {given_py}", f"{surname_py}.{given_py}".lower()

    def _epc(self) -> str:
        self.cards_made += 1
        return f"{self.epc_prefix}{self.cards_made:010X}"

    def _local(self, day: date, hour: float) -> datetime:
        """``hour`` o'clock (a float) on ``day`` in the branch's zone, as an aware UTC time."""
        whole = int(hour)
        minutes = (hour - whole) * 60
        local = datetime(day.year, day.month, day.day, whole, tzinfo=self.zone) + timedelta(minutes=minutes)
        return local.astimezone(timezone.utc)

    def _id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    # -- the branch, its staff and customers ----------------------------------------------------

    def build(self) -> dict[str, list[dict[str, Any]]]:
        opened = self._local(self.first - timedelta(days=400), 9)
        self.rows["created_at"].append({"at": opened})
        self._staff()
        customers = self._customers()
        for offset in range(self.days):
            self._day(offset, customers)
        self._devices()
        return self.rows

    def _staff(self) -> None:
        short = self.branch.id
        roles = [("branch_manager", 1), ("lobby_manager", 3), ("client_manager", 4)]
        for role, count in roles:
            for _ in range(count):
                name, handle = self._name()
                staff_id = f"{handle}@{short}"
                while any(s["staff_id"] == staff_id for s in self.rows["staff"]):
                    name, handle = self._name()
                    staff_id = f"{handle}@{short}"
                self.rows["staff"].append(
                    {"staff_id": staff_id, "branch_id": short, "name": name, "role": role, "active": True}
                )
                if role == "lobby_manager":
                    self.lobby.append(staff_id)
                elif role == "client_manager":
                    self.managers.append(staff_id)
                else:
                    self.branch_manager = staff_id

    def _customers(self) -> list[_Customer]:
        rng = self.rng
        out = []
        window_start = self._local(self.first, 0)
        for n in range(1, CUSTOMERS + 1):
            customer_no = f"{self.prefix}{n:06d}"
            tier = _pick(rng, TIERS)
            habit = _pick(rng, HABITS)
            name, _handle = self._name()
            manager = None if tier == "standard" and rng.random() < 0.5 else rng.choice(self.managers)
            first_day, last_day = 0, self.days - 1
            if habit == "new":
                first_day = rng.randrange(self.days)
            if habit == "lapsed":
                # weekly until a day between 80 and 30 days ago (inside the window when it is long
                # enough), then never again: issue 15's "not seen for 30 days" list
                last_day = self.days - 1 - rng.randint(LAPSED_DAYS, max(LAPSED_DAYS, min(80, self.days - 1)))
            rate = RATES.get(habit, 0.0)
            issued = (
                self._local(self.first + timedelta(days=first_day), 10) - timedelta(days=1)
                if habit == "new"
                else window_start - timedelta(days=rng.randint(30, 1200))
            )
            consent_day = issued.date()
            self.rows["customers"].append(
                {
                    "customer_no": customer_no,
                    "name": name,
                    "tier": tier,
                    "client_manager": manager,
                    "home_branch_id": self.branch.id,
                    "id_number_enc": None,  # generated customers have no ID number at all
                    "mobile_enc": None,  # nor a mobile number
                    "updated_at": issued,
                    "company": rng.choice(COMPANIES),
                    "usual_business": rng.choice(BUSINESS),
                    "consent": True,
                    "consent_date": consent_day,
                    "id_index": None,
                }
            )
            customer = _Customer(
                customer_no,
                tier,
                habit,
                manager,
                self._epc(),
                weekday=rng.choice((0, 1, 2, 3, 4, 4, 5)),
                rate=rate,
                first_day=first_day,
                last_day=last_day,
            )
            self._cards(customer, issued)
            out.append(customer)
        return out

    def _cards(self, customer: _Customer, issued: datetime) -> None:
        """The customer's card and its history: most active; some lost (and reissued), revoked
        (and reissued) or expired, the old card sometimes turning up at the door later."""
        rng = self.rng
        valid_until = (issued + timedelta(days=365 * 3)).date()
        fate = rng.random()
        staff = rng.choice(self.lobby)
        if fate < 0.05 or (fate < 0.08 and customer.habit != "new"):
            # lost inside the window, a new card issued a few days later
            old = customer.epc
            event_day = rng.randrange(max(self.days - 3, 1))
            lost_at = self._local(self.first + timedelta(days=event_day), rng.uniform(OPENS, CLOSES))
            reissued_at = lost_at + timedelta(days=rng.randint(1, 3), hours=rng.uniform(0, 2))
            reason_lost = fate < 0.05
            customer.epc = self._epc()
            customer.old_epc = old
            customer.old_status = "lost" if reason_lost else "revoked"
            self._card(old, customer, issued, customer.old_status, valid_until, reissued_at)
            self._event(old, customer, "issued", issued, staff)
            if reason_lost:
                self._event(old, customer, "lost", lost_at, staff, reason="customer reported it lost")
            else:
                self._event(
                    old,
                    customer,
                    "revoked",
                    lost_at,
                    self.branch_manager,
                    reason="tier review: card replaced",
                )
            new_until = (reissued_at + timedelta(days=365 * 3)).date()
            self._card(customer.epc, customer, reissued_at, "active", new_until, reissued_at)
            self._event(customer.epc, customer, "reissued", reissued_at, staff, detail=f"replaces {old}")
            return
        self._card(customer.epc, customer, issued, "active", valid_until, issued)
        self._event(customer.epc, customer, "issued", issued, staff)
        if fate > 0.97 and customer.habit in ("weekly", "monthly"):
            # expired during the window and not yet renewed: still shown at the door, refused
            expired = rng.randrange(max(self.days - 1, 1))
            customer.expired_on = expired
            self.rows["cards"][-1]["valid_until"] = self.first + timedelta(days=expired - 1)

    def _card(
        self,
        epc: str,
        customer: _Customer,
        issued: datetime,
        status: str,
        valid_until: date,
        updated: datetime,
    ) -> None:
        self.rows["cards"].append(
            {
                "epc": epc,
                "tid": f"E2003412{self.rng.getrandbits(64):016X}",
                "customer_no": customer.customer_no,
                "status": status,
                "issued_at": issued,
                "updated_at": updated,
                "tier": customer.tier,
                "valid_from": issued.date(),
                "valid_until": valid_until,
                "allowed_branches": "",
            }
        )

    def _event(
        self,
        epc: str,
        customer: _Customer,
        event: str,
        at: datetime,
        staff: str,
        reason: str = "",
        detail: str = "",
    ) -> None:
        self.rows["card_events"].append(
            {
                "epc": epc,
                "customer_no": customer.customer_no,
                "event": event,
                "at": at,
                "staff_id": staff,
                "station": self.branch.id,
                "reason": reason,
                "detail": detail,
            }
        )

    # -- one day ---------------------------------------------------------------------------------

    def _day(self, offset: int, customers: list[_Customer]) -> None:
        rng = self.rng
        day = self.first + timedelta(days=offset)
        weekend = day.weekday() >= 5
        factor = WEEKEND if weekend else 1.0
        on_duty = self.lobby[offset % len(self.lobby)]
        first_visit, first_delivery = len(self.rows["visits"]), len(self.rows["deliveries"])
        for c in customers:
            if offset < c.first_day or offset > c.last_day:
                continue
            if c.habit in ("weekly", "lapsed"):
                p = 0.8 if day.weekday() == c.weekday else 0.015 * factor
            else:
                p = c.rate * factor * (1.2 if not weekend else 1.0)
            if rng.random() < p:
                self._visit(day, offset, c, on_duty)
        # tags that are no card of ours: a visitor's own RFID badge, a parcel
        for _ in range(rng.randint(0, 2)):
            self._visit(day, offset, None, on_duty)
        # the day's batch: sent after closing (today's: now); a day's rows in the order they happened
        self.rows["visits"][first_visit:] = sorted(
            self.rows["visits"][first_visit:], key=lambda v: v["arrived_at"]
        )
        self.rows["deliveries"][first_delivery:] = sorted(
            self.rows["deliveries"][first_delivery:], key=lambda d: d["created_at"]
        )
        sent = min(self._local(day, CLOSES) + timedelta(minutes=90), self.now)
        self.marks.append((sent, len(self.rows["visits"]), len(self.rows["deliveries"])))

    def _visit(self, day: date, offset: int, c: _Customer | None, on_duty: str) -> None:
        rng = self.rng
        slot = _bisect(self.cum_slots, rng.random() * self.cum_slots[-1])
        arrived = self._local(day, OPENS + (slot + rng.random()) / 4)
        if arrived > self.now - timedelta(seconds=30):
            return  # not yet happened
        reader = "door" if rng.random() < 0.8 else "side-door"
        stay = timedelta(minutes=rng.uniform(8, 75))
        departed: datetime | None = arrived + stay
        if departed is not None and departed > self.now:
            departed = None  # still in the branch
        kind, reason, epc = "greeted", None, ""
        customer_no = tier = None
        if c is None:
            kind, epc = "unknown", f"3000{rng.getrandbits(80):020X}"
        else:
            customer_no, tier, epc = c.customer_no, c.tier, c.epc
            roll = rng.random()
            if c.expired_on is not None and offset >= c.expired_on:
                kind, reason = "rejected", "expired"
            elif c.old_epc is not None and roll < 0.25 and self._after_replacement(c.old_epc, arrived):
                kind, reason, epc = "rejected", c.old_status, c.old_epc  # the old card, still carried
            elif roll > 0.996:
                kind, reason = "suspect", rng.choice(("tid_mismatch", "too_fast"))
        visit: dict[str, Any] = {
            "visit_id": self._id(),
            "arrived_at": arrived,
            "kind": kind,
            "epc": epc,
            "customer_no": customer_no,
            "tier": tier,
            "reason": reason,
            "reader_id": reader,
            "read_count": rng.randint(2, 40),
            "peak_rssi": round(rng.uniform(-72, -45), 1),
            "departed_at": departed,
            "acknowledged_at": None,
            "acknowledged_by": None,
        }
        self.rows["visits"].append(visit)
        if kind in ("greeted", "rejected", "suspect") and c is not None:
            self._deliveries(visit, c, on_duty)
        # a greeted customer stepping out and back in within minutes: recorded, nobody told
        if kind == "greeted" and departed is not None and rng.random() < 0.04:
            back = arrived + timedelta(minutes=rng.uniform(2, 8))
            if back < min(self.now, self._local(day, CLOSES)):
                again = dict(visit, visit_id=self._id(), arrived_at=back, kind="suppressed")
                again.update(acknowledged_at=None, acknowledged_by=None)
                again.update(read_count=rng.randint(2, 20), peak_rssi=round(rng.uniform(-72, -45), 1))
                self.rows["visits"].append(again)

    def _after_replacement(self, old_epc: str, at: datetime) -> bool:
        for card in self.rows["cards"]:
            if card["epc"] == old_epc:
                return bool(at > card["updated_at"])
        return False

    def _deliveries(self, visit: dict[str, Any], c: _Customer, on_duty: str) -> None:
        """The lobby manager's PDA always; the client manager's console for gold and up, and an SMS
        for platinum and diamond; a refused or suspect card goes to the branch manager's console too.
        Most PDA messages are acknowledged within 5-60 s; some escalate, a few fail or expire."""
        rng = self.rng
        arrived = visit["arrived_at"]
        plan: list[tuple[str, str]] = [("pda", on_duty)]
        if visit["kind"] == "greeted":
            if c.manager and c.tier != "standard":
                plan.append(("console", c.manager))
            if c.manager and c.tier in ("platinum", "diamond"):
                plan.append(("sms", c.manager))
        else:
            plan.append(("console", self.branch_manager))
        first_ack: tuple[datetime, str] | None = None
        for notifier, recipient in plan:
            created = arrived + timedelta(seconds=rng.uniform(0.05, 0.4))
            row = self._delivery(visit, notifier, recipient, created)
            roll = rng.random()
            if notifier == "sms":
                if roll < 0.02:
                    self._finish(row, "failed", attempts=3)
                elif roll < 0.03:
                    self._finish(row, "expired", attempts=0)
                else:
                    self._finish(row, "delivered", delivered=created + timedelta(seconds=rng.uniform(1, 6)))
                continue
            delivered = created + timedelta(seconds=rng.uniform(0.1, 1.5))
            if notifier == "pda" and roll < 0.015:
                self._finish(row, "failed", attempts=5)  # the PDA was off the network
                continue
            if notifier == "pda" and roll < 0.025:
                self._finish(row, "expired", attempts=1)
                continue
            acked = rng.random() < (0.9 if notifier == "pda" else 0.55)
            if notifier == "pda" and (not acked or rng.random() < 0.05):
                # not acknowledged within the rule's 60 s: escalated to the branch manager
                self._finish(row, "delivered", delivered=delivered)
                escalated_at = arrived + timedelta(seconds=60)
                up = self._delivery(visit, "pda", self.branch_manager, escalated_at, escalated_from=recipient)
                if rng.random() < 0.85:
                    at = escalated_at + timedelta(seconds=rng.lognormvariate(3.0, 0.6))
                    self._acknowledge(up, at, escalated_at + timedelta(seconds=0.5))
                    first_ack = first_ack or (at, self.branch_manager)
                else:
                    self._finish(up, "delivered", delivered=escalated_at + timedelta(seconds=0.5))
                continue
            if acked:
                # most within 5-60 s: a log-normal around 15 s, clipped
                wait = min(max(rng.lognormvariate(2.7, 0.55), 5.0), 58.0 if notifier == "pda" else 180.0)
                at = delivered + timedelta(seconds=wait)
                self._acknowledge(row, at, delivered)
                if notifier == "pda" and (first_ack is None or at < first_ack[0]):
                    first_ack = (at, recipient)
            else:
                self._finish(row, "delivered", delivered=delivered)
        if first_ack is not None and first_ack[0] < self.now:
            visit["acknowledged_at"], visit["acknowledged_by"] = first_ack

    def _delivery(
        self,
        visit: dict[str, Any],
        notifier: str,
        recipient: str,
        created: datetime,
        escalated_from: str = "",
    ) -> dict[str, Any]:
        row = {
            "delivery_key": f"{notifier}/{visit['visit_id']}:{recipient}",  # as the outbox names it
            "created_at": created,
            "visit_id": visit["visit_id"],
            "notifier_id": notifier,
            "recipient_id": recipient,
            "state": "delivered",
            "attempts": 1,
            "delivered_at": None,
            "acknowledged_at": None,
            "finished_at": None,
            "escalated_from": escalated_from or None,
        }
        self.rows["deliveries"].append(row)
        return row

    def _finish(
        self, row: dict[str, Any], state: str, *, delivered: datetime | None = None, attempts: int = 1
    ) -> None:
        created: datetime = row["created_at"]
        row["state"], row["attempts"], row["delivered_at"] = state, attempts, delivered
        row["finished_at"] = delivered or created + timedelta(seconds=60 if state == "expired" else 95)

    def _acknowledge(self, row: dict[str, Any], at: datetime, delivered: datetime) -> None:
        if at >= self.now:  # not yet: still only delivered
            self._finish(row, "delivered", delivered=delivered)
            return
        row.update(state="acknowledged", delivered_at=delivered, acknowledged_at=at, finished_at=at)

    # -- devices and the heartbeat ---------------------------------------------------------------

    def _devices(self) -> None:
        rng = self.rng
        sms = ("degraded", "modem signal weak") if rng.random() < 0.5 else ("ready", None)
        devices = [
            ("reader", "door", "connected", None),
            ("reader", "side-door", "connected", None),
            ("store", "local", "ready", None),
            ("store", "central", "ready", None),
            ("notifier", "pda", "ready", None),
            ("notifier", "console", "ready", None),
            ("notifier", "sms", *sms),
            ("sync", "central", "ready", None),
        ] + [("pda", staff_id, "connected", None) for staff_id in self.lobby]
        self.devices = [
            {"kind": kind, "id": device_id, "state": state, "reason": reason}
            for kind, device_id, state, reason in devices
        ]
        self.offset_s = round(rng.uniform(-0.4, 0.4), 3)
        self.audit_head = {"seq": 40 * len(self.rows["visits"]), "hash": f"{rng.getrandbits(256):064x}"}

    # -- what the branch would have sent --------------------------------------------------------

    def batches(self) -> Iterator[tuple[bytes, datetime]]:
        """Wire format 1 batches (``body``, the centre's time of receipt): one a day (split at the
        ingest's row limit), sent as the branch closes, today's now; the last carries the
        heartbeat."""
        sent = {"visits": 0, "deliveries": 0}
        start = {"visits": 0, "deliveries": 0}
        for number, (received, visits_end, deliveries_end) in enumerate(self.marks):
            last_day = number == len(self.marks) - 1
            ends = {"visits": visits_end, "deliveries": deliveries_end}
            while True:
                streams: dict[str, Any] = {}
                for name, wire in (("visits", _wire_visit), ("deliveries", _wire_delivery)):
                    upto = min(ends[name], start[name] + MAX_ROWS)
                    rows = [
                        wire(r, seq)
                        for seq, r in enumerate(self.rows[name][start[name] : upto], start[name] + 1)
                    ]
                    streams[name] = {"after": sent[name], "upto": upto, "rows": rows}
                    start[name] = sent[name] = upto
                done = all(start[name] == ends[name] for name in ends)
                beat = None
                if last_day and done:
                    beat = {
                        "at": _unix(received),
                        "devices": self.devices,
                        "audit_head": self.audit_head,
                        "backlog": {"visits": 0, "deliveries": 0},
                        "version": __version__,
                    }
                body = {
                    "format": 1,
                    "branch_id": self.branch.id,
                    "sent_at": _unix(received + timedelta(seconds=self.offset_s)),
                    "streams": streams,
                    "heartbeat": beat,
                }
                yield json.dumps(body, ensure_ascii=False).encode("utf-8"), received
                if done:
                    break


def _wire_visit(row: dict[str, Any], seq: int) -> dict[str, Any]:
    """A generated visit as a branch sends it (times as unix seconds)."""
    times = ("arrived_at", "departed_at", "acknowledged_at")
    return {**row, **{t: _unix(row[t]) for t in times}, "seq": seq}


def _wire_delivery(row: dict[str, Any], seq: int) -> dict[str, Any]:
    """A generated delivery as a branch sends it."""
    times = ("created_at", "delivered_at", "acknowledged_at", "finished_at")
    return {**row, **{t: _unix(row[t]) for t in times}, "seq": seq}


def _pick(rng: random.Random, shares: Sequence[tuple[str, float]]) -> str:
    roll, total = rng.random(), 0.0
    for value, share in shares:
        total += share
        if roll < total:
            return value
    return shares[-1][0]


def _cumulative(weights: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def _bisect(cumulative: list[float], value: float) -> int:
    lo, hi = 0, len(cumulative) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cumulative[mid] > value:
            hi = mid
        else:
            lo = mid + 1
    return lo


def demo_counts(database: Database, branch_id: str, registry: bool = True) -> dict[str, int]:
    """Rows per table held for ``branch_id`` (the demo's and the tests' check); ``registry``: its
    customers and staff too."""
    out = {}
    with database.begin() as conn:
        for table in ("visits", "deliveries", "acknowledgements", "sightings", "device_status"):
            target = schema.metadata.tables[table]
            out[table] = int(
                conn.execute(
                    select(func.count()).select_from(target).where(target.c.branch_id == branch_id)
                ).scalar_one()
            )
        if not registry:
            return out
        staff = schema.staff
        out["staff"] = int(
            conn.execute(
                select(func.count()).select_from(staff).where(staff.c.branch_id == branch_id)
            ).scalar_one()
        )
        customers = schema.customers
        out["customers"] = int(
            conn.execute(
                select(func.count()).select_from(customers).where(customers.c.home_branch_id == branch_id)
            ).scalar_one()
        )
    return out


__all__ = ["Branch", "DemoBranch", "DemoSettings", "Settings", "Summary", "demo_counts", "generate"]
