"""The pipeline end to end inside one process: policy, routing, store and notifier isolation,
reader reconnects, suppression across restarts, masking.  Real threads, real SQLite files."""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
import threading
import time

import attrs
import pytest

import vipsense
from vipsense.api import IdentityStore, Notifier, Reader
from vipsense.branch import Branch
from vipsense.config.profile import load_profile
from vipsense.model import Card, CardStatus, DeliveryResult, DeliveryState, RejectReason, TagRead
from vipsense.output import Output
from vipsense.pipeline.policy import judge
from vipsense.pluginhost import load_host

from .conftest import wait_for
from .profiles import LOCAL_SQLITE, SCREEN, alarm_routes, branch_profile

ADA = "E20000000000000000000001"  # customer C1, active
LOST = "E20000000000000000000002"  # customer C2, lost
STRANGER = "E2000000000000000000FFFF"  # no card


@attrs.frozen
class NoSettings:
    pass


@attrs.frozen
class FlakySettings:
    mode: str = "raise"


class RecordingNotifier(Notifier):
    def __init__(self, fail=False, ctx=None):
        self.sent = []
        self.fail = fail
        self.ctx = ctx

    def send(self, notification):
        if self.fail:
            raise ConnectionError("pager gateway unreachable")
        self.sent.append(notification)


class FlakyStore(IdentityStore):
    def __init__(self, settings):
        self.mode = settings.mode
        self.calls = 0

    def find_card(self, epc):
        self.calls += 1
        if self.mode == "hang":
            time.sleep(1.0)
        raise TimeoutError("directory unreachable")

    def find_customer(self, customer_no):
        return self.find_card(customer_no)


class TypesForTests:
    """Test-only types, registered straight into the host (no entry point needed)."""

    def __init__(self):
        self.notifiers = {}
        self.stores = []
        self.events = []

    @vipsense.hookimpl
    def vipsense_register_notifier_types(self, register):
        def make(fail):
            def factory(settings, ctx):
                self.notifiers[ctx.item_id] = RecordingNotifier(fail, ctx)
                return self.notifiers[ctx.item_id]

            return factory

        register("recording", NoSettings, make(False))
        register("broken-pager", NoSettings, make(True))

    @vipsense.hookimpl
    def vipsense_register_store_types(self, register):
        def factory(settings, ctx):
            store = FlakyStore(settings)
            self.stores.append(store)
            return store

        register("flaky", FlakySettings, factory)

    @vipsense.hookimpl
    def vipsense_delivery_result(self, notification, result):
        self.events.append(("delivery", notification.recipient.id, result.state))

    @vipsense.hookimpl
    def vipsense_card_rejected(self, visit):
        self.events.append(("rejected", visit.arrival.epc, visit.reason))

    @vipsense.hookimpl
    def vipsense_unknown_tag(self, visit):
        self.events.append(("unknown", visit.arrival.epc))


PROFILE = branch_profile(
    stores="%(stores)s\n  - " + LOCAL_SQLITE,
    notifiers=[SCREEN, "{id: pda, type: recording}", "{id: pager, type: broken-pager}"],
    presence="{min_reads: 2, window: 1s, depart_after: 1s, reentry_suppress: 10m}",
    routing=[
        "{event: arrival, to: lobby_manager, via: [screen, pda, pager]}",
        "{event: arrival, to: client_manager, via: [pda]}",
        "{event: arrival, tiers: [gold], to: lobby_manager, via: [pda]}",
        "{event: rejected, to: lobby_manager, via: [pda]}",
        *alarm_routes("pda"),
    ],
)


@pytest.fixture
def branch_factory(running_branch):
    """``make(stores, data_dir, local)``: a started branch of :data:`PROFILE`, its test types and output."""

    def make(stores: str = "", data_dir=None, local: bool = True):
        plugin = TypesForTests()
        text = PROFILE % {"stores": stores}
        if not local:
            text = text.replace("  - {id: local, type: sqlite, seed: [seed.yaml]}\n", "")
        out = io.StringIO()
        branch = running_branch(
            text, plugins={"test-types": plugin}, data_dir=data_dir, output=Output(out, live=False)
        )
        return branch, plugin, out

    return make


def walk_in(branch, epc, n=3):
    for _ in range(n):
        branch.pipeline.submit(TagRead("door", 1, epc, -50.0, branch.clock.mono()))


def test_valid_card_is_greeted_recorded_and_routed(branch_factory):
    branch, plugin, out = branch_factory()
    walk_in(branch, ADA)
    pda = plugin.notifiers["pda"]
    assert wait_for(lambda: len(pda.sent) == 2)
    # lobby manager twice via pda (two rules) collapses to one; the client manager gets their own
    assert sorted(n.recipient.id for n in pda.sent) == ["cm1", "lobby"]
    [visit] = {n.visit.visit_id: n.visit for n in pda.sent}.values()
    assert (visit.kind.value, visit.customer.name, visit.tier, visit.store_id) == (
        "greeted",
        "Ada Wong",
        "gold",
        "local",
    )
    assert {n.key for n in pda.sent} == {f"{visit.visit_id}:cm1", f"{visit.visit_id}:lobby"}
    assert wait_for(lambda: "Ada Wong" in out.getvalue())
    branch.stop()
    rows = (
        sqlite3.connect(branch.data_dir / "visits.sqlite3")
        .execute("SELECT kind, epc, customer_no, tier FROM visits")
        .fetchall()
    )
    assert rows == [("greeted", ADA, "C1", "gold")]


def test_notifier_reports_a_later_acknowledgement(branch_factory):
    branch, plugin, _ = branch_factory()
    walk_in(branch, ADA)
    pda = plugin.notifiers["pda"]
    assert wait_for(lambda: len(pda.sent) == 2)
    first = pda.sent[0]
    ack = DeliveryResult(first.key, "pda", DeliveryState.ACKNOWLEDGED, time.time(), "seen on PDA")
    threading.Thread(target=pda.ctx.report, args=(first, ack)).start()  # e.g. the PDA's reply thread
    assert wait_for(lambda: ("delivery", first.recipient.id, DeliveryState.ACKNOWLEDGED) in plugin.events)


def test_console_masks_id_and_mobile(branch_factory):
    branch, _, out = branch_factory()
    walk_in(branch, ADA)
    assert wait_for(lambda: "Ada Wong" in out.getvalue())
    text = out.getvalue()
    assert "ID **************1234" in text
    assert "mobile 138****5678" in text
    assert "110101199003071234" not in text and "13812345678" not in text


def test_customer_repr_is_masked(branch_factory):
    branch, plugin, _ = branch_factory()
    walk_in(branch, ADA)
    assert wait_for(lambda: plugin.notifiers["pda"].sent)
    text = repr(plugin.notifiers["pda"].sent[0])
    assert "Ada Wong" in text and "1234" in text
    assert "110101199003071234" not in text and "13812345678" not in text


def test_lost_card_is_rejected_and_alerts_branch_manager(branch_factory):
    branch, plugin, out = branch_factory()
    walk_in(branch, LOST)
    pda = plugin.notifiers["pda"]
    assert wait_for(lambda: len(pda.sent) == 2)
    assert sorted(n.recipient.id for n in pda.sent) == ["boss", "lobby"]
    assert all(n.visit.kind.value == "rejected" for n in pda.sent)
    assert ("rejected", LOST, RejectReason.LOST) in plugin.events
    assert branch.status.counters["greeted"] == 0
    assert "VIP ARRIVAL" not in out.getvalue()


@pytest.mark.slow
def test_unknown_tag_is_counted_and_nobody_is_told(branch_factory):
    branch, plugin, out = branch_factory()
    walk_in(branch, STRANGER)
    assert wait_for(lambda: branch.status.counters["unknown"] == 1)
    time.sleep(0.2)
    assert plugin.notifiers["pda"].sent == []
    assert out.getvalue() == ""
    assert ("unknown", STRANGER) in plugin.events


def test_failing_notifier_degrades_only_itself(branch_factory):
    branch, plugin, out = branch_factory()
    walk_in(branch, ADA)
    assert wait_for(lambda: ("delivery", "lobby", DeliveryState.RETRYING) in plugin.events)
    assert wait_for(lambda: len(plugin.notifiers["pda"].sent) == 2)
    pager = branch.status.devices["pager"]
    assert pager.stats.errors >= 1  # and it is retried (tests/test_outbox.py)
    assert pager.stats.last_error == "ConnectionError: pager gateway unreachable"
    assert "Ada Wong" in out.getvalue()


def test_failing_store_is_skipped_and_counted(branch_factory):
    branch, plugin, _ = branch_factory(stores="  - {id: central, type: flaky}")
    walk_in(branch, ADA)
    assert wait_for(lambda: len(plugin.notifiers["pda"].sent) == 2)
    assert plugin.notifiers["pda"].sent[0].visit.customer.name == "Ada Wong"
    central = branch.status.devices["central"]
    assert central.stats.errors == 2  # the card lookup and the customer lookup
    assert central.state == "unavailable"
    assert central.reason == "TimeoutError: directory unreachable"


def test_no_store_answering_is_recorded_as_unresolved_and_nobody_is_greeted(branch_factory):
    branch, plugin, _ = branch_factory(stores="  - {id: central, type: flaky}", local=False)
    walk_in(branch, ADA)
    assert wait_for(lambda: branch.status.counters["unresolved"] == 1)
    assert branch.status.counters["unknown"] == 0  # not answered is never "not found"
    branch.stop()
    row = (
        sqlite3.connect(branch.data_dir / "visits.sqlite3")
        .execute("SELECT kind, epc, unresolved, resolved_at FROM visits")
        .fetchall()
    )
    assert row == [("unresolved", ADA, 1, None)]
    assert plugin.notifiers["pda"].sent == []
    cards = branch.status.stages["cards"]
    assert (cards.errors, cards.last_error) == (1, "no identity store could answer")


@pytest.mark.slow
def test_hanging_store_costs_one_timeout_then_is_skipped(branch_factory):
    branch, plugin, _ = branch_factory(stores="  - {id: central, type: flaky, mode: hang, timeout: 200ms}")
    t0 = time.monotonic()
    walk_in(branch, ADA)
    assert wait_for(lambda: len(plugin.notifiers["pda"].sent) == 2)
    first = time.monotonic() - t0
    assert plugin.stores[0].calls == 1  # the customer lookup skipped the stuck store at once
    assert first < 0.9  # one 200 ms timeout, not a wait for the 1 s hang
    central = branch.status.snapshot()["devices"]["central"]
    assert (central["state"], central["reason"]) == (
        "stuck",
        "a call has not returned after 200 ms; look-ups skip this store until it does",
    )
    assert central["errors"] == 2
    assert central["last_error"] == "skipped: an earlier call is still running"
    # the stuck call returns after its 1 s: its answer is discarded and the store is used again
    assert wait_for(lambda: branch.status.devices["central"].state != "stuck", 2.0)


@pytest.mark.slow
def test_a_card_still_at_the_door_across_a_restart_continues_its_visit(branch_factory, tmp_path):
    branch, _, _ = branch_factory(data_dir=tmp_path / "d")
    walk_in(branch, ADA)
    assert wait_for(lambda: branch.status.counters["greeted"] == 1)
    branch.stop()  # the card has not left: the stop records its last sighting, the visit stays open
    again, plugin2, _ = branch_factory(data_dir=tmp_path / "d")
    assert again.restored.present == 1
    walk_in(again, ADA)
    assert wait_for(lambda: again.status.counters["reads"] == 3)
    time.sleep(0.3)
    assert again.status.counters["arrivals"] == 0 and plugin2.notifiers["pda"].sent == []
    assert wait_for(lambda: again.status.counters["departures"] == 1, 5)  # then it leaves
    again.stop()
    rows = (
        sqlite3.connect(tmp_path / "d" / "visits.sqlite3")
        .execute("SELECT kind, departed_at, last_seen_at FROM visits")
        .fetchall()
    )
    [(kind, departed, last_seen)] = rows
    assert kind == "greeted" and departed is not None and departed == last_seen


@pytest.mark.slow
def test_a_card_that_left_before_a_restart_and_returns_is_a_re_entry(branch_factory, tmp_path):
    branch, _, _ = branch_factory(data_dir=tmp_path / "d")
    walk_in(branch, ADA)
    assert wait_for(lambda: branch.status.counters["departures"] == 1, 5)
    branch.stop()
    again, plugin2, _ = branch_factory(data_dir=tmp_path / "d")
    assert (again.restored.present, again.restored.quiet) == (0, 1)
    walk_in(again, ADA)
    assert wait_for(lambda: again.status.counters["suppressed"] == 1)
    time.sleep(0.2)
    assert plugin2.notifiers["pda"].sent == []
    again.stop()
    kinds = (
        sqlite3.connect(tmp_path / "d" / "visits.sqlite3")
        .execute("SELECT kind FROM visits ORDER BY arrived_at")
        .fetchall()
    )
    assert kinds == [("greeted",), ("suppressed",)]


def test_observer_that_raises_is_counted_in_status_and_the_branch_goes_on(branch_factory):
    branch, plugin, out = branch_factory()

    class Clumsy:
        @staticmethod
        def vipsense_arrival(visit):
            raise KeyError("dashboard field")

    branch.host.add(Clumsy, "clumsy-observer")
    walk_in(branch, ADA)
    assert wait_for(lambda: len(plugin.notifiers["pda"].sent) == 2)
    entry = branch.status.snapshot()["plugins"]["clumsy-observer"]
    assert entry["hook_errors"] == {
        "vipsense_arrival": {"count": 1, "last_error": "KeyError: 'dashboard field'"}
    }
    assert branch.status.snapshot()["plugins"]["sqlite-store"]["state"] == "loaded"
    assert wait_for(lambda: "Ada Wong" in out.getvalue())


def test_status_snapshot_has_every_stage(branch_factory):
    branch, plugin, _ = branch_factory()
    walk_in(branch, ADA)
    assert wait_for(lambda: len(plugin.notifiers["pda"].sent) == 2)
    snap = branch.status.snapshot()
    assert set(snap["stages"]) == {
        "presence",
        "cards",
        "customers",
        "visit_log",
        "routing",
        "outbox",
        "notify",
    }
    assert snap["stages"]["presence"]["count"] == 3
    assert snap["stages"]["cards"]["count"] == 1
    assert snap["stages"]["visit_log"]["count"] == 1
    assert snap["stages"]["notify"]["count"] >= 2
    assert snap["counters"]["arrivals"] == 1
    assert snap["devices"]["pda"]["latency_ms_p99"] is not None


# -- readers ---------------------------------------------------------------------------------------


class FlakyReader(Reader):
    """Loses its link twice, then works: the core must reconnect it with backoff."""

    def __init__(self):
        self.runs = 0

    def run(self, ctx):
        self.runs += 1
        if self.runs <= 2:
            raise OSError(f"port /dev/ttyUSB0 disappeared (run {self.runs})")
        ctx.connected("back")
        ctx.read(ADA, antenna=1, rssi=-50)
        ctx.read(ADA, antenna=1, rssi=None)  # a reader without RSSI still counts
        ctx.stop.wait()


@pytest.mark.slow
def test_reader_that_fails_is_reconnected_and_factory_failure_is_isolated(tmp_path, write_profile):
    flaky = FlakyReader()
    states = []

    class Readers:
        @vipsense.hookimpl
        def vipsense_register_reader_types(self, register):
            register("flaky", NoSettings, lambda s, c: flaky)

            def broken(s, c):
                raise FileNotFoundError("/dev/ttyACM9")

            register("broken", NoSettings, broken)

        @vipsense.hookimpl
        def vipsense_reader_status_changed(self, reader_id, status):
            states.append((reader_id, status.state.value, status.reason))

    host = load_host()
    host.add(Readers(), "test-readers")
    text = (
        (PROFILE % {"stores": ""})
        .replace(
            "  - {id: door, type: simulated, visitors: []}",
            "  - {id: door, type: flaky}\n  - {id: side, type: broken}",
        )
        .replace("pda, pager", "screen")
        .replace("[pda]", "[screen]")
        .replace("  - {id: pda, type: recording}\n  - {id: pager, type: broken-pager}\n", "")
    )
    profile = load_profile(write_profile(text), host, data_dir=tmp_path / "r")
    out = io.StringIO()
    branch = Branch(profile, host, output=Output(out, live=False))
    branch.start()
    try:
        assert wait_for(lambda: branch.status.counters["greeted"] == 1)
        assert flaky.runs == 3
        assert ("door", "disconnected", "OSError: port /dev/ttyUSB0 disappeared (run 1)") in states
        assert ("door", "connected", "back") in states
        side = branch.status.devices["side"]
        assert (side.state, side.reason) == ("failed", "FileNotFoundError: /dev/ttyACM9")
    finally:
        branch.stop()
    assert branch.status.devices["door"].state == "stopped"


# -- policy ----------------------------------------------------------------------------------------

TODAY = dt.date(2026, 11, 22)


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        (Card("E1", "C1"), None),
        (Card("E1", "C1", status=CardStatus.LOST), RejectReason.LOST),
        (Card("E1", "C1", status=CardStatus.REVOKED), RejectReason.REVOKED),
        (Card("E1", "C1", valid_until=dt.date(2026, 11, 21)), RejectReason.EXPIRED),
        (Card("E1", "C1", valid_until=TODAY), None),
        (Card("E1", "C1", valid_from=dt.date(2026, 11, 23)), RejectReason.NOT_YET_VALID),
        (Card("E1", "C1", allowed_branches=("bj-guomao",)), RejectReason.WRONG_BRANCH),
        (Card("E1", "C1", allowed_branches=("bj-guomao", "sh-lujiazui")), None),
        (Card("E1", "C1", status=CardStatus.LOST, valid_until=dt.date(2020, 1, 1)), RejectReason.LOST),
    ],
)
def test_policy(card, reason):
    assert judge(card, "sh-lujiazui", TODAY) is reason


def test_stop_flushes_and_finishes_quickly(branch_factory):
    branch, _, _ = branch_factory()
    walk_in(branch, ADA)
    t0 = time.monotonic()
    branch.stop()
    assert time.monotonic() - t0 < 2.0
    rows = sqlite3.connect(branch.data_dir / "visits.sqlite3").execute("SELECT kind FROM visits").fetchall()
    assert rows == [("greeted",)]
    assert not any(t.name == "pipeline" and t.is_alive() for t in threading.enumerate())


def test_visits_wait_while_the_visit_log_cannot_write(branch_factory):
    """A full disk cannot be made on demand here, so the write itself is made to fail."""
    branch, plugin, _ = branch_factory()
    real_record = branch.visit_log.record
    failing = [True]

    def record(visits):
        if failing[0]:
            raise sqlite3.OperationalError("database or disk is full")
        real_record(visits)

    branch.visit_log.record = record
    walk_in(branch, ADA)
    assert wait_for(lambda: len(plugin.notifiers["pda"].sent) == 2), "staff are told all the same"
    assert branch.status.stages["visit_log"].last_error == "OperationalError: database or disk is full"
    failing[0] = False  # the disk has room again
    walk_in(branch, LOST)
    assert wait_for(lambda: branch.status.counters["rejected"] == 1)
    branch.stop()
    rows = sqlite3.connect(branch.data_dir / "visits.sqlite3").execute(
        "SELECT kind, epc FROM visits ORDER BY arrived_at"
    )
    assert rows.fetchall() == [("greeted", ADA), ("rejected", LOST)]
