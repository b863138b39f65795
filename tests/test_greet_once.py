"""Greet once, greet right: each scenario runs through a real Branch (pipeline, SQLite store, visit
log, outbox) on a clock the test moves, with a notifier that records who was told what.  A lobby
manager expects one greeting per visit, none for a VIP who merely stepped out or stood still through
a restart, and a greeting for a VIP whose earlier arrival was not greeted."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from vipsense.cli import main
from vipsense.clock import Clock, ManualClock
from vipsense.model import TagRead, VisitKind

from .branch_support import Door, Types, visit_rows
from .conftest import REPO, wait_for
from .profiles import BOSS, LOBBY, alarm_routes, branch_profile

VIP = "E2801160600002084C1A0001"  # customer C1, active
LOST = "E2801160600002084C1A0002"  # customer C2, reported lost
OTHER = "E2801160600002084C1A0003"  # customer C3, active

SEED = f"""\
customers:
  - {{customer_no: C1, name: 王建国 Wang Jianguo, tier: gold, client_manager: cm1}}
  - {{customer_no: C2, name: 李秀英 Li Xiuying, tier: gold}}
  - {{customer_no: C3, name: Cai Yun, tier: gold}}
cards:
  - {{epc: {VIP}, customer_no: C1}}
  - {{epc: {LOST}, customer_no: C2, status: lost}}
  - {{epc: {OTHER}, customer_no: C3}}
"""

PROFILE = branch_profile(
    stores=["{id: local, type: gated-sqlite, seed: [seed.yaml]}"],
    notifiers=["{id: pda, type: recording}"],
    presence="{min_reads: 2, window: 1s, depart_after: 3s, reentry_suppress: %(window)s}",
    staff=[LOBBY, BOSS, "{id: issuer, name: Card Issuer, role: card_issuer}"],
    routing=[
        "{event: arrival, to: lobby_manager, via: [pda]}",
        "{event: unresolved, to: lobby_manager, via: [pda]}",
        "{event: rejected, to: lobby_manager, via: [pda]}",
        *alarm_routes("pda"),
    ],
)


@pytest.fixture
def types():
    t = Types()
    yield t
    t.release()


@pytest.fixture
def branch_on(running_branch, types, tmp_path):
    """``start(clock, window="10m")``: a running branch on ``clock``; call again for a restart on
    the same data directory."""

    def start(clock, window: str = "10m"):
        return running_branch(
            PROFILE % {"window": window},
            seed=SEED,
            plugins={"t": types},
            data_dir=tmp_path / "data",
            clock=clock,
        )

    return start


def greetings(types: Types) -> list[str]:
    return types.told(VisitKind.GREETED)


@pytest.mark.slow
@pytest.mark.parametrize("restart_at", [5, 13], ids=["inside-the-window", "after-the-window"])
def test_a_restart_does_not_greet_a_vip_who_is_still_standing_there(branch_on, types, tmp_path, restart_at):
    """reentry_suppress 10 s, the VIP present for 20 s, the branch restarted (stopped, then started
    5 s later) at 5 s or at 13 s: one greeting, one visit, closed at the last sighting."""
    clock = ManualClock()
    branch = branch_on(clock, window="10s")
    door = Door(branch, clock)
    door.stay(restart_at, VIP)
    assert greetings(types) == [VIP]
    branch.stop()  # SIGTERM
    clock.advance(5.0)  # the restart takes 5 s, longer than depart_after
    again = branch_on(clock, window="10s")
    assert again.restored.present == 1
    door = Door(again, clock)
    door.stay(20 - restart_at - 5, VIP)
    last = clock.mono()
    door.wait(4.0, departures=1)
    assert greetings(types) == [VIP]  # one greeting
    [(epc, kind, _, departed, last_seen)] = visit_rows(tmp_path / "data")
    assert (epc, kind) == (VIP, "greeted")
    assert departed == last_seen == pytest.approx(clock.to_wall(last))


def test_a_stop_records_when_each_open_visit_was_last_seen(branch_on, types, tmp_path):
    clock = ManualClock()
    branch = branch_on(clock)
    Door(branch, clock).stay(7, VIP)
    branch.stop()
    [(_, kind, _, departed, last_seen)] = visit_rows(tmp_path / "data")
    assert kind == "greeted" and departed is None  # the visit goes on at the next start ...
    assert last_seen == pytest.approx(clock.to_wall(7.0))  # ... and the stop said when it was last seen


def test_a_visit_left_open_by_a_long_stop_is_closed_at_its_last_sighting(branch_on, types, tmp_path):
    clock = ManualClock()
    branch = branch_on(clock, window="1m")
    Door(branch, clock).stay(4, VIP)
    branch.stop()
    clock.advance(3600)  # off for an hour: the VIP is long gone
    again = branch_on(clock, window="1m")
    assert (again.restored.present, again.restored.closed) == (0, 1)
    [(_, _, _, departed, _)] = visit_rows(tmp_path / "data")
    assert departed == pytest.approx(clock.to_wall(4.0))
    Door(again, clock).stay(2, VIP)  # back after the hour: a new visit, greeted
    assert greetings(types) == [VIP, VIP]


@pytest.mark.slow
def test_a_crashed_branch_continues_the_visits_of_cards_still_there(running_branch, types, tmp_path):
    """kill -9 while two cards stand at the door; at the next start the one still there continues its
    visit (no second greeting) and the one gone is closed at the last sighting the crashed run wrote."""
    data = tmp_path / "data"
    script = textwrap.dedent(
        f"""
        import io, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from tests.branch_support import Types
        from vipsense.branch import Branch
        from vipsense.config.profile import load_profile
        from vipsense.model import TagRead
        from vipsense.output import Output
        from vipsense.pluginhost import load_host
        host = load_host()
        host.add(Types(), "t")
        profile = load_profile({str(tmp_path / "branch.yaml")!r}, host, data_dir={str(data)!r})
        branch = Branch(profile, host, output=Output(io.StringIO(), live=False))
        branch.start()
        branch.wait_stores_open(10)
        while True:
            for epc in ({VIP!r}, {OTHER!r}):
                branch.pipeline.submit(TagRead("door", 1, epc, -50.0, branch.clock.mono()))
            if branch.status.counters["greeted"] == 2:
                print("greeted", flush=True)
            time.sleep(0.2)
        """
    )
    (tmp_path / "seed.yaml").write_text(SEED, encoding="utf-8")
    (tmp_path / "branch.yaml").write_text(PROFILE % {"window": "10m"}, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "greeted"
        time.sleep(2.6)  # the last sightings are written every 2 s
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    open_rows = [r for r in visit_rows(data) if r[3] is None]
    assert len(open_rows) == 2 and all(r[4] is not None for r in open_rows)  # open, last sighting kept
    crashed_last = {r[0]: r[4] for r in open_rows}

    clock = Clock()
    again = running_branch(
        PROFILE % {"window": "10m"}, seed=SEED, plugins={"t": types}, data_dir=data, clock=clock
    )
    assert again.restored.present == 2
    for _ in range(20):  # VIP is still there, read for 4 s; OTHER has gone
        again.pipeline.submit(TagRead("door", 1, VIP, -50.0, clock.mono()))
        time.sleep(0.2)
    assert again.status.counters["arrivals"] == 0 and greetings(types) == []
    assert wait_for(lambda: again.status.counters["departures"] >= 1, 5)
    rows = {r[0]: r for r in visit_rows(data)}
    assert len(rows) == 2  # no new visit for either card
    assert rows[OTHER][3] == pytest.approx(crashed_last[OTHER])  # closed at its last sighting
    assert rows[VIP][3] is None  # still at the door


def test_lost_then_found_then_back_is_greeted(branch_on, types, tmp_path):
    clock = ManualClock()
    branch = branch_on(clock)
    door = Door(branch, clock)
    door.stay(5, LOST)
    door.wait(4, departures=1)
    assert types.told(VisitKind.REJECTED) == [LOST] and types.told(VisitKind.REJECTED, to="boss") == [LOST]
    # the card-issuing station: the same branch and identity file, through the real command
    station = tmp_path / "station.yaml"
    text = PROFILE.replace("type: gated-sqlite", "type: sqlite").replace("type: recording", "type: console")
    station.write_text(text % {"window": "10m"} + "data_dir: data\n", encoding="utf-8")
    assert (
        main(["cards", "found", str(station), LOST, "--as", "issuer", "--reason", "customer found it"]) == 0
    )
    clock.advance(3 * 60)
    door.stay(5, LOST)
    assert greetings(types) == [LOST]  # nobody had greeted this VIP: nothing to suppress
    assert [kind for _, kind, *_ in visit_rows(tmp_path / "data")] == ["rejected", "greeted"]


@pytest.mark.slow
def test_back_after_the_stores_were_down_is_greeted(branch_on, types, tmp_path):
    clock = ManualClock()
    branch = branch_on(clock)
    door = Door(branch, clock)
    types.store.gate.clear()  # every store down
    door.stay(5, VIP)
    door.wait(4, departures=1)
    assert types.told(VisitKind.UNRESOLVED) == [VIP] and greetings(types) == []
    types.store.gate.set()
    assert wait_for(lambda: branch.status.devices["local"].state == "ready", 3)
    clock.advance(3 * 60)
    door.stay(5, VIP)
    assert greetings(types) == [VIP]
    assert [kind for _, kind, *_ in visit_rows(tmp_path / "data")] == ["unresolved", "greeted"]


@pytest.mark.slow
def test_twelve_minutes_in_then_a_minute_outside_is_not_greeted_again(branch_on, types, tmp_path):
    clock = ManualClock()
    door = Door(branch_on(clock), clock)
    door.stay(12 * 60, VIP, every=2.0)
    door.wait(60, departures=1)
    door.stay(5, VIP)
    assert greetings(types) == [VIP]
    assert [kind for _, kind, *_ in visit_rows(tmp_path / "data")] == ["greeted", "suppressed"]


@pytest.mark.slow
def test_a_four_second_dropout_is_not_a_second_greeting(branch_on, types, tmp_path):
    clock = ManualClock()
    door = Door(branch_on(clock), clock)
    door.stay(12 * 60, VIP, every=2.0)
    door.wait(4, departures=1)  # the tag goes silent for 4 s (depart_after 3 s) while the VIP stays
    door.stay(60, VIP)
    assert greetings(types) == [VIP]


@pytest.mark.slow
def test_arrivals_at_0_9_and_11_minutes_greet_once(branch_on, types, tmp_path):
    clock = ManualClock()
    door = Door(branch_on(clock), clock)
    for n, minute in enumerate((0, 9, 11), start=1):
        clock.advance(minute * 60 - clock.mono())
        door.stay(20, VIP)
        door.wait(4, departures=n)
    assert greetings(types) == [VIP]
    assert [kind for _, kind, *_ in visit_rows(tmp_path / "data")] == ["greeted", "suppressed", "suppressed"]


@pytest.mark.slow
def test_after_the_window_since_the_last_sighting_the_vip_is_greeted_again(branch_on, types, tmp_path):
    clock = ManualClock()
    door = Door(branch_on(clock), clock)
    door.stay(20, VIP)
    door.wait(4, departures=1)
    clock.advance(10 * 60)  # 10 min 4 s after the last sighting
    door.stay(5, VIP)
    assert greetings(types) == [VIP, VIP]


def test_epcs_are_normalised_once_in_the_core(branch_on, types, tmp_path):
    """A driver hands over what it decoded; the core trims, upper-cases and checks it."""
    clock = ManualClock()
    branch = branch_on(clock)
    [reader] = branch.readers
    for epc in (f" {VIP.lower()} ", f"{VIP}\n"):  # padded, lower case: still the VIP's card
        reader.ctx.read(epc, antenna=1, rssi=-50.0)
    assert wait_for(lambda: greetings(types) == [VIP], 3)
    garbage = ["E2801160600002084C1A00", "E28011606000G2084C1A0001", "", "E2" * 64, b"\xe2\x80", None]
    for epc in garbage:  # not whole 16-bit words, not hex, empty, over 496 bits, not text
        for _ in range(3):
            reader.ctx.emit(TagRead("door", 1, epc, -50.0, clock.mono()))
    assert wait_for(lambda: branch.status.devices["door"].counters.get("bad_epc") == 3 * len(garbage), 3)
    time.sleep(0.2)
    assert branch.status.counters["arrivals"] == 1  # no visit from any of them
    assert [epc for epc, *_ in visit_rows(tmp_path / "data")] == [VIP]


def test_a_rejected_arrival_never_silences_the_greeting_of_another_card(branch_on, types):
    clock = ManualClock()
    door = Door(branch_on(clock), clock)
    door.stay(5, LOST, OTHER)
    assert types.told(VisitKind.REJECTED) == [LOST] and greetings(types) == [OTHER]


@pytest.mark.slow
def test_the_run_note_says_what_was_restored(tmp_path, capsys):
    (tmp_path / "seed.yaml").write_text(SEED, encoding="utf-8")
    text = PROFILE.replace("type: gated-sqlite", "type: sqlite").replace("type: recording", "type: console")
    visitor = f"{{id: door, type: simulated, visitors: [{{card: {VIP}, at: 0s, stay: 1s}}]}}"
    text = text.replace("{id: door, type: simulated, visitors: []}", visitor)
    (tmp_path / "branch.yaml").write_text(text % {"window": "10m"}, encoding="utf-8")
    args = [
        "run",
        str(tmp_path / "branch.yaml"),
        "--data-dir",
        str(tmp_path / "d"),
        "--no-status",
        "--no-web",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "cards were still at the door" not in first and "1 greeted" in first
    assert main(args) == 0  # the same morning again at once: the VIP's window is still running
    second = capsys.readouterr().out
    assert (
        "Note: 0 cards were still at the door when the branch last stopped (their visits continue) and 1"
        in (" ".join(second.split()))
    )
    assert "0 greeted" in second and "1 re-entries suppressed" in second
