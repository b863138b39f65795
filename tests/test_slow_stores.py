"""A VIP is never silently lost to a slow store: arrivals wait for a store that is still opening,
unresolved arrivals are judged again while the card is in the door zone, and staff are told a card
was seen when no store answers.  Each test runs a real Branch (pipeline, visit log, outbox) on the real
SQLite store, which a test plugin slows down at its door: a slower ``open`` and a gate ``find_card``
waits behind."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from vipsense.cli.run import _status_line
from vipsense.model import TagRead, VisitKind

from .branch_support import Types
from .conftest import wait_for
from .profiles import alarm_routes, branch_profile

pytestmark = pytest.mark.slow  # each test waits out store delays and stalls of a second or more

VIPS = [f"E2801160600002084C{i:06X}" for i in range(1, 51)]

SEED = (
    "customers:\n"
    + "".join(
        f"  - {{customer_no: C{i:03d}, name: 客户{i}, tier: gold, client_manager: cm1}}\n"
        for i in range(1, 51)
    )
    + "cards:\n"
    + "".join(f"  - {{epc: {epc}, customer_no: C{i:03d}}}\n" for i, epc in enumerate(VIPS, 1))
)

PROFILE = branch_profile(
    stores=["{id: local, type: gated-sqlite, seed: [seed.yaml], open_delay: %(open_delay)s, timeout: 500ms}"],
    notifiers=["{id: pda, type: recording}"],
    presence="{min_reads: 2, window: 1s, depart_after: 1s, reentry_suppress: 10m}",
    routing=[
        "{event: arrival, to: lobby_manager, via: [pda]}",
        "{event: unresolved, to: lobby_manager, via: [pda]}",
        *alarm_routes("pda"),
    ],
)


class Zone(threading.Thread):
    """Cards standing in the door zone, each read every 0.1 s until it leaves."""

    def __init__(self, branch) -> None:
        super().__init__(name="door", daemon=True)
        self.branch = branch
        self.present: list[str] = []
        self.stopping = threading.Event()

    def enter(self, epc: str) -> None:
        self.present.append(epc)

    def leave(self, epc: str) -> None:
        self.present.remove(epc)

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            for epc in list(self.present):
                self.branch.pipeline.submit(TagRead("door", 1, epc, -50.0, self.branch.clock.mono()))


@pytest.fixture
def door():
    made: list[Zone] = []

    def make(branch) -> Zone:
        d = Zone(branch)
        d.start()
        made.append(d)
        return d

    yield make
    for d in made:
        d.stopping.set()
        d.join(2)


@pytest.fixture
def types():
    t = Types()
    yield t
    t.release()


def visits(branch) -> dict[str, tuple]:
    db = sqlite3.connect(branch.data_dir / "visits.sqlite3")
    rows = db.execute(
        "SELECT epc, kind, unresolved, arrived_at, resolved_at, departed_at FROM visits ORDER BY arrived_at"
    ).fetchall()
    db.close()
    return {r[0]: r[1:] for r in rows}


def test_arrivals_wait_in_order_for_a_store_that_is_still_opening(running_branch, types):
    branch = running_branch(PROFILE % {"open_delay": "3s"}, seed=SEED, plugins={"t": types}, wait_open=False)
    t0 = time.monotonic()
    for epc in VIPS:  # 50 VIPs in the first second
        for _ in range(2):
            branch.pipeline.submit(TagRead("door", 1, epc, -50.0, branch.clock.mono()))
        time.sleep(0.015)
    assert wait_for(lambda: len(branch.status.snapshot()["held"]) == 50, 2.0)
    local = branch.status.devices["local"]
    assert (local.state, local.reason) == ("starting", "opening; arrivals wait for it up to 10 s")
    assert all(h["state"] == "waiting" for h in branch.status.snapshot()["held"])
    assert types.sent == []  # nobody is told anything while the store opens

    assert wait_for(lambda: len(types.told(VisitKind.GREETED)) == 50, 10.0)
    assert types.store.opened_at - t0 >= 2.9  # they waited for the open, and were greeted after it
    assert types.told(VisitKind.GREETED) == VIPS  # in the order they came in
    assert types.told(VisitKind.UNRESOLVED) == []  # a store inside its grace period is not a failure
    c = branch.status.counters
    assert (c["arrivals"], c["greeted"], c["unresolved"], c["unknown"], c["resolved_late"]) == (
        50,
        50,
        0,
        0,
        50,
    )
    assert local.stats.errors == 0 and local.state == "ready"
    assert branch.status.snapshot()["held"] == []
    rows = visits(branch)
    assert {kind for kind, *_ in rows.values()} == {"greeted"}
    delays = [resolved - arrived for _, unresolved, arrived, resolved, _ in rows.values()]
    assert all(unresolved == 1 for _, unresolved, *_ in rows.values())  # the visit says it was held
    assert min(delays) > 1.5 and max(delays) < 6.0, delays  # both times kept: the wait is visible


def test_vips_present_during_a_stall_are_greeted_after_it(running_branch, types, door):
    branch = running_branch(PROFILE % {"open_delay": "0s"}, seed=SEED, plugins={"t": types})
    zone = door(branch)
    zone.enter(VIPS[0])
    assert wait_for(lambda: types.told(VisitKind.GREETED) == VIPS[:1])

    types.store.gate.clear()  # mid-morning the store stalls ...
    zone.enter(VIPS[1])
    time.sleep(0.3)
    zone.enter(VIPS[2])
    # ... so staff are told a card was seen that no store could look up, once per arrival
    assert wait_for(lambda: sorted(types.told(VisitKind.UNRESOLVED)) == sorted(VIPS[1:3]), 3.0)
    assert branch.status.devices["local"].state == "stuck"
    held = {h["epc"]: h["state"] for h in branch.status.snapshot()["held"]}
    assert held == {VIPS[1]: "unresolved", VIPS[2]: "unresolved"}
    assert "unresolved 2" in _status_line(branch)
    time.sleep(2.0 - 0.3)
    types.store.gate.set()  # ... for 2 s

    assert wait_for(lambda: sorted(types.told(VisitKind.GREETED)) == sorted(VIPS[:3]), 6.0)
    time.sleep(0.5)  # nothing more follows: one alert and one greeting each
    assert sorted(types.told(VisitKind.UNRESOLVED)) == sorted(VIPS[1:3])
    assert sorted(types.told(VisitKind.GREETED)) == sorted(VIPS[:3])
    assert branch.status.devices["local"].state == "ready"
    rows = visits(branch)
    for epc in VIPS[1:3]:
        kind, unresolved, arrived, resolved, _ = rows[epc]
        assert (kind, unresolved) == ("greeted", 1)
        assert resolved - arrived > 1.0  # the stall is visible in the visit
    assert rows[VIPS[0]][:2] == ("greeted", 0)
    assert branch.status.snapshot()["held"] == []
    assert branch.status.counters["unresolved"] == 2 and branch.status.counters["resolved_late"] == 2


def test_a_store_that_never_answers_shows_each_arrival_once_and_departures_close_them(
    running_branch, types, door
):
    branch = running_branch(PROFILE % {"open_delay": "0s"}, seed=SEED, plugins={"t": types})
    zone = door(branch)
    types.store.gate.clear()  # and never opened again while the test runs
    for epc in VIPS[:3]:
        zone.enter(epc)
        time.sleep(0.2)
    assert wait_for(lambda: len(types.told(VisitKind.UNRESOLVED)) == 3, 3.0)
    time.sleep(1.5)  # standing there, judged again and again: still told once
    assert sorted(types.told(VisitKind.UNRESOLVED)) == sorted(VIPS[:3])
    assert {h["epc"] for h in branch.status.snapshot()["held"]} == set(VIPS[:3])
    alert = types.sent[0]
    assert alert.key.endswith("~unresolved:lobby") and alert.visit.customer is None

    for epc in VIPS[:3]:
        zone.leave(epc)
    assert wait_for(lambda: branch.status.snapshot()["held"] == [], 3.0)
    assert types.told(VisitKind.GREETED) == []
    rows = visits(branch)
    assert [(kind, unresolved, resolved) for kind, unresolved, _, resolved, _ in rows.values()] == [
        ("unresolved", 1, None)
    ] * 3
    # the pipeline lets go of a held arrival, then writes its departure: the status can be read between
    assert wait_for(lambda: all(departed is not None for *_, departed in visits(branch).values()), 3.0)
    assert branch.status.counters["unknown"] == 0  # not answered is never "not found"
    assert "unresolved 3" in _status_line(branch)


def test_the_status_page_and_the_console_show_a_card_no_store_could_look_up(web_branch, types, door):
    from .test_web_console import Stream
    from .web_support import CARD, WEB_PROFILE

    text = WEB_PROFILE.replace("type: sqlite", "type: gated-sqlite").replace(
        "routing:\n", "routing:\n  - {event: unresolved, to: lobby_manager, via: [screen]}\n"
    )
    w = web_branch(text, plugins={"t": types})
    lobby = Stream(w, "lobby")
    try:
        assert lobby.next_event()[0] == "snapshot"
        types.store.gate.clear()
        zone = door(w.branch)
        zone.enter(CARD[1])
        name, _, seen = lobby.next_event()
        assert (name, seen["kind"], seen["customer"], seen["told"]) == (
            "arrival",
            "unresolved",
            None,
            ["lobby"],
        )

        status = w.client("boss").get("/api/status").json
        [held] = status["held"]
        assert (held["visit_id"], held["state"], held["present"]) == (seen["visit_id"], "unresolved", True)
        assert any("card seen, identity stores not answering" in p for p in status["problems"])
        [local] = status["stores"]
        assert (local["state"], local["start_grace_s"]) == ("down", 10.0)  # stuck
        page = w.client("boss").get("/status").text
        assert "card seen, identity stores not answering" in page and f"…{CARD[1][-4:]}" in page
        assert "(start-up grace 10 s)" in page

        types.store.gate.set()  # the store answers again: the same visit, judged, reaches the console
        name, _, judged = lobby.next_event(timeout=8)
        assert (name, judged["visit_id"], judged["kind"]) == ("arrival", seen["visit_id"], "greeted")
        assert judged["customer"]["customer_no"] == "C1"
        assert wait_for(lambda: w.client("boss").get("/api/status").json["held"] == [], 3)
    finally:
        lobby.close()
