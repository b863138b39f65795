"""The demo centre's generated history (issue 14, part 5): plausible shapes, inside each branch's
opening hours in its own zone, idempotent, deterministic, and with no personal numbers at all."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from vipsense.centre import demo, migrations, schema
from vipsense.centre.database import Database, open_database

from .postgres import new_database

UTC = timezone.utc
NOW = datetime(2026, 12, 7, 6, 30, tzinfo=UTC)  # a Monday, 14:30 in Beijing
#: two zones, so a visit placed by the wrong zone's clock falls outside opening hours
BRANCHES = (
    demo.Branch("bj-xidan", "北京西单支行", "Asia/Shanghai"),
    demo.Branch("kashgar", "喀什支行", "Asia/Kashgar"),  # UTC+6 (Xinjiang time)
)


def opened(tmp_path, name: str = "centre") -> Database:
    db = open_database(f"sqlite:///{tmp_path / name}.sqlite3")
    migrations.migrate(db, now=NOW)
    return db


def rows(db: Database, table: str) -> list[dict]:
    target = schema.metadata.tables[table]
    with db.begin() as conn:
        return [dict(r._mapping) for r in conn.execute(select(target))]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """45 days of two branches (long enough for customers who lapsed 30 days ago)."""
    db = opened(tmp_path_factory.mktemp("demo"))
    summary = demo.generate(db, demo.Settings(BRANCHES, days=45, seed=7), now=NOW)
    try:
        yield db, summary
    finally:
        db.close()


def test_each_branch_has_a_plausible_history(history):
    db, summary = history
    assert summary.skipped == ()
    for branch in BRANCHES:
        counts = summary.written[branch.id]
        assert counts["customers"] == demo.CUSTOMERS
        assert 10 <= counts["visits"] / 45 <= 200, counts  # a VIP door: tens a day, not thousands
        assert counts["deliveries"] > counts["visits"] / 2
        assert counts["acknowledgements"] > 0 and counts["sightings"] == counts["visits"]
        assert counts["staff"] >= 5 and counts["device_status"] > 0
    tiers = Counter(r["tier"] for r in rows(db, "customers"))
    assert tiers["standard"] > tiers["gold"] > tiers["platinum"] > tiers["diamond"] > 0, tiers
    statuses = Counter(r["status"] for r in rows(db, "cards"))
    assert statuses["active"] > 0.85 * sum(statuses.values()) and statuses["lost"] and statuses["revoked"]
    events = Counter(r["event"] for r in rows(db, "card_events"))
    assert {"issued", "lost", "revoked", "reissued"} <= set(events), events
    branches = {r["branch_id"]: r for r in rows(db, "branches")}
    assert branches["kashgar"]["timezone"] == "Asia/Kashgar"
    assert all(b["last_heartbeat_at"] is not None and b["audit_head"] for b in branches.values())


def test_visits_keep_opening_hours_in_the_branchs_own_zone_and_weekdays_are_busier(history):
    db, _ = history
    visits = rows(db, "visits")
    for branch in BRANCHES:
        zone = ZoneInfo(branch.timezone)
        mine = [v for v in visits if v["branch_id"] == branch.id]
        local = [v["arrived_at"].astimezone(zone) for v in mine]
        assert all(9 <= t.hour < 17 for t in local), sorted({t.hour for t in local})
        assert all(v["arrived_at"] < NOW for v in mine)
        per_day = Counter(t.date() for t in local)
        today = NOW.astimezone(zone).date()
        days = [today - timedelta(days=i) for i in range(1, 45)]  # whole days only
        weekday = statistics.mean(per_day[d] for d in days if d.weekday() < 5)
        weekend = statistics.mean(per_day[d] for d in days if d.weekday() >= 5)
        assert weekday > 1.5 * weekend, (weekday, weekend)
        hours = Counter(t.hour for t in local)
        assert hours[10] > hours[12], hours  # the morning peak over the lunch dip


def test_regulars_and_lapsed_customers_and_refused_cards_exist_at_each_branch(history):
    db, _ = history
    visits = rows(db, "visits")
    for branch in BRANCHES:
        mine = [v for v in visits if v["branch_id"] == branch.id and v["customer_no"]]
        last = {}
        per_customer = Counter()
        for v in mine:
            last[v["customer_no"]] = max(last.get(v["customer_no"], v["arrived_at"]), v["arrived_at"])
            per_customer[v["customer_no"]] += v["kind"] == "greeted"
        lapsed = [c for c, at in last.items() if at < NOW - timedelta(days=30)]
        assert len(lapsed) >= 10, len(lapsed)
        assert sum(n >= 5 for n in per_customer.values()) >= 20  # weekly regulars
        kinds = Counter((v["kind"], v["reason"]) for v in visits if v["branch_id"] == branch.id)
        rejected = {reason for kind, reason in kinds if kind == "rejected"}
        assert rejected & {"lost", "revoked", "expired"}, kinds
        assert kinds[("unknown", None)] > 0 and kinds[("suppressed", None)] > 0
    assert any(v["kind"] == "suspect" for v in visits)
    assert {v["kind"] for v in visits} <= {"greeted", "rejected", "suspect", "suppressed", "unknown"}


def test_deliveries_are_mostly_acknowledged_within_seconds_with_some_escalated_and_failed(history):
    db, _ = history
    deliveries = rows(db, "deliveries")
    states = Counter(d["state"] for d in deliveries)
    assert states["acknowledged"] > states["delivered"] > 0 and states["failed"] and states["expired"], states
    assert {d["notifier_id"] for d in deliveries} == {"pda", "sms", "console"}
    assert any(d["escalated_from"] for d in deliveries)
    pda = [
        d
        for d in deliveries
        if d["notifier_id"] == "pda" and d["acknowledged_at"] and not d["escalated_from"]
    ]
    waits = [(d["acknowledged_at"] - d["delivered_at"]).total_seconds() for d in pda]
    assert 5 <= statistics.median(waits) <= 60 and max(waits) <= 60, (min(waits), max(waits))
    acks = rows(db, "acknowledgements")
    acknowledged = {(d["visit_id"], d["recipient_id"]) for d in deliveries if d["state"] == "acknowledged"}
    assert {(a["visit_id"], a["staff_id"]) for a in acks} == acknowledged  # one per person and visit
    keys = {d["delivery_key"] for d in deliveries if d["state"] == "acknowledged"}
    assert {a["delivery_key"] for a in acks} - {None} <= keys  # None: the visit's own acknowledgement
    visits = {(v["branch_id"], v["visit_id"]): v for v in rows(db, "visits")}
    acked = [v for v in visits.values() if v["acknowledged_at"]]
    assert acked and all(v["acknowledged_by"] for v in acked)
    assert all((d["branch_id"], d["visit_id"]) in visits for d in deliveries)


def test_generated_customers_carry_no_id_or_mobile_number(history):
    db, _ = history
    customers = rows(db, "customers")
    assert customers and all(c["id_number_enc"] is None and c["mobile_enc"] is None for c in customers)
    assert all(c["id_index"] is None for c in customers)


def test_a_second_run_adds_nothing(tmp_path):
    db = opened(tmp_path)
    try:
        settings = demo.Settings(BRANCHES, days=10, seed=1)
        first = demo.generate(db, settings, now=NOW)
        before = {b.id: demo.demo_counts(db, b.id) for b in BRANCHES}
        second = demo.generate(db, settings, now=NOW + timedelta(days=1))
        assert second.written == {} and second.skipped == tuple(b.id for b in BRANCHES)
        assert {b.id: demo.demo_counts(db, b.id) for b in BRANCHES} == before
        assert first.total["visits"] == sum(c["visits"] for c in before.values())
        with db.begin() as conn:
            assert (
                conn.execute(select(func.count()).select_from(schema.card_events)).scalar_one()
                == (first.total["card_events"])
            )
    finally:
        db.close()


def test_the_same_seed_gives_the_same_history_and_another_seed_another(tmp_path):
    def made(name: str, seed: int) -> tuple[dict, list]:
        db = opened(tmp_path, name)
        try:
            summary = demo.generate(db, demo.Settings(BRANCHES, days=10, seed=seed), now=NOW)
            visits = sorted((v["visit_id"], v["arrived_at"], v["kind"]) for v in rows(db, "visits"))
            return dict(summary.written), visits
        finally:
            db.close()

    one, two, other = made("a", 3), made("b", 3), made("c", 4)
    assert one == two
    assert one[1] != other[1]


@pytest.mark.postgres
def test_the_history_goes_into_postgresql_partitions(postgres_url):
    db = open_database(new_database(postgres_url))
    try:
        migrations.migrate(db, now=NOW)
        summary = demo.generate(db, demo.Settings(BRANCHES[:1], days=40, seed=1), now=NOW)
        with db.begin() as conn:
            held = conn.execute(select(func.count()).select_from(schema.visits)).scalar_one()
        assert held == summary.written["bj-xidan"]["visits"] > 0
        assert demo.generate(db, demo.Settings(BRANCHES[:1], days=40, seed=1), now=NOW).written == {}
    finally:
        db.close()
