"""The durable notification outbox: stored before delivery, retried with backoff without blocking
other recipients, expired rather than sent late, payload dropped once closed, and at-least-once
across ``kill -9`` of a real ``vipsense run``."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs
import pytest

import vipsense
from vipsense.api import DeliveryFailed, Notifier
from vipsense.clock import Clock
from vipsense.config.errors import ProfileError
from vipsense.config.profile import load_profile
from vipsense.model import (
    Arrival,
    Customer,
    DeliveryResult,
    DeliveryState,
    Notification,
    Photo,
    Role,
    Staff,
    TagRead,
    Visit,
    VisitKind,
)
from vipsense.pluginhost import load_host
from vipsense.storage.outbox import Outbox

from .conftest import REPO, wait_for
from .profiles import BOSS, LOBBY, branch_profile, routes

ADA = "E20000000000000000000001"  # customer C1 (client manager cm1)
CAI = "E20000000000000000000003"  # customer C3 (client manager cm1)
SEED = """\
customers:
  - {customer_no: C1, name: Ada Wong, tier: gold, id_number: "110101199003071234",
     mobile: "13812345678", client_manager: cm1}
  - {customer_no: C3, name: Cai Yun, tier: gold, client_manager: cm1}
cards:
  - {epc: E20000000000000000000001, customer_no: C1}
  - {epc: E20000000000000000000003, customer_no: C3}
"""


@attrs.frozen
class ScriptSettings:
    away: tuple[str, ...] = ()  #: recipients whose device is away: every attempt fails
    fail_times: int = 0  #: every notification fails this many times, then goes through
    permanent: bool = False  #: fail with DeliveryFailed(retry=False)


class ScriptedNotifier(Notifier):
    def __init__(self, settings: ScriptSettings) -> None:
        self.s = settings
        self.attempts: dict[str, int] = {}
        self.sent: list[tuple[float, Notification]] = []

    def send(self, notification: Notification) -> None:
        n = self.attempts[notification.key] = self.attempts.get(notification.key, 0) + 1
        if self.s.permanent:
            raise DeliveryFailed("invalid number", retry=False)
        if notification.recipient.id in self.s.away or n <= self.s.fail_times:
            raise ConnectionError(f"{notification.recipient.id}'s PDA is away")
        self.sent.append((time.monotonic(), notification))


class Types:
    def __init__(self) -> None:
        self.notifiers: dict[str, ScriptedNotifier] = {}
        self.results: list[DeliveryResult] = []

    @vipsense.hookimpl
    def vipsense_register_notifier_types(self, register):
        def factory(settings, ctx):
            self.notifiers[ctx.item_id] = ScriptedNotifier(settings)
            self.notifiers[ctx.item_id].ctx = ctx
            return self.notifiers[ctx.item_id]

        register("scripted", ScriptSettings, factory)

    @vipsense.hookimpl
    def vipsense_delivery_result(self, notification, result):
        self.results.append(result)


PROFILE = branch_profile(
    notifiers=["{id: pda, type: scripted, %(settings)s}"],
    extra=["notification_ttl: %(ttl)s"],
    routing=routes("pda", rejected_to_lobby=False),
)


@pytest.fixture
def start(running_branch):
    def make(settings: str = "retry: {first: 50ms, max: 200ms}", ttl: str = "10m", seed: str = SEED):
        types = Types()
        text = PROFILE % {"settings": settings, "ttl": ttl}
        return running_branch(text, seed=seed, plugins={"outbox-test-types": types}), types

    return make


def walk_in(branch, epc=ADA):
    for _ in range(2):
        branch.pipeline.submit(TagRead("door", 1, epc, -50.0, branch.clock.mono()))


def rows(branch, columns="recipient_id, state, attempts"):
    db = sqlite3.connect(branch.data_dir / "outbox.sqlite3")
    try:
        return sorted(db.execute(f"SELECT {columns} FROM outbox").fetchall())
    finally:
        db.close()


# -- delivery, retries, backoff ------------------------------------------------------------------


@pytest.mark.slow
def test_failures_are_retried_with_backoff_until_delivered(start):
    branch, types = start("fail_times: 2, retry: {first: 100ms, max: 150ms}")
    t0 = time.monotonic()
    walk_in(branch)
    pda = types.notifiers["pda"]
    assert wait_for(lambda: len(pda.sent) == 2)
    took = time.monotonic() - t0
    assert 0.25 <= took < 2.0  # waited 100 ms, then 150 ms (capped), before the third attempt
    states = [(r.state, r.attempt) for r in types.results if r.notification_key.endswith(":lobby")]
    assert states == [
        (DeliveryState.RETRYING, 1),
        (DeliveryState.RETRYING, 2),
        (DeliveryState.DELIVERED, 3),
    ]
    assert wait_for(lambda: rows(branch) == [("cm1", "delivered", 3), ("lobby", "delivered", 3)])
    counters = branch.status.snapshot()["devices"]["pda"]["counters"]
    assert counters == {"pending": 0, "retrying": 0, "retries": 4, "delivered": 2, "failed": 0, "expired": 0}


def test_a_recipient_away_does_not_delay_the_others(start):
    branch, types = start("away: [lobby], retry: {first: 5s, max: 5s}")
    pda = types.notifiers["pda"]
    walk_in(branch, ADA)
    assert wait_for(lambda: [n.recipient.id for _, n in pda.sent] == ["cm1"], timeout=1.0)
    # a second customer's message to the client manager goes out at once, while the lobby
    # manager's PDA is away and its first message waits 5 s for a retry
    t0 = time.monotonic()
    walk_in(branch, CAI)
    assert wait_for(lambda: len(pda.sent) == 2, timeout=1.0)
    assert pda.sent[1][0] - t0 < 2.0  # not behind the lobby's 5 s retry
    assert [n.visit.customer.name for _, n in pda.sent] == ["Ada Wong", "Cai Yun"]
    assert sorted(v for k, v in pda.attempts.items() if k.endswith(":lobby")) == [1, 1]
    counters = branch.status.devices["pda"].counters
    assert wait_for(lambda: (counters["pending"], counters["retrying"]) == (2, 2))
    assert wait_for(
        lambda: (
            rows(branch, "recipient_id, state") == [("cm1", "delivered")] * 2 + [("lobby", "retrying")] * 2
        )
    )


def test_delivery_failed_without_retry_fails_at_once_and_drops_the_payload(start):
    branch, types = start("permanent: true")
    walk_in(branch)
    assert wait_for(lambda: sum(r.state is DeliveryState.FAILED for r in types.results) == 2)
    assert {(r.attempt, r.detail) for r in types.results} == {(1, "DeliveryFailed: invalid number")}
    assert wait_for(lambda: rows(branch, "state, attempts, payload IS NULL") == [("failed", 1, 1)] * 2)
    assert rows(branch, "last_error") == [("DeliveryFailed: invalid number",)] * 2
    assert branch.status.devices["pda"].counters["failed"] == 2


def test_each_batch_is_stored_before_delivery(start):
    branch, _ = start("away: [lobby, cm1], retry: {first: 10s, max: 10s}")
    walk_in(branch)
    assert wait_for(lambda: len(rows(branch)) == 2)
    [(payload,)] = set(rows(branch, "payload"))
    assert "Ada Wong" in payload
    assert "110101199003071234" not in payload and "13812345678" not in payload  # masked at rest
    assert "**************1234" in payload and "138****5678" in payload
    assert branch.status.stages["outbox"].count == 2


# -- stopping, restarting, expiry ------------------------------------------------------------------


@pytest.mark.slow
def test_pending_notifications_survive_a_stop_and_go_out_at_the_next_start(start, tmp_path):
    branch, _ = start("away: [lobby, cm1], retry: {first: 10s, max: 10s}")
    walk_in(branch)
    assert wait_for(lambda: rows(branch, "state") == [("retrying",)] * 2)
    t0 = time.monotonic()
    branch.stop()
    assert time.monotonic() - t0 < 2.0
    again, types = start()
    pda = types.notifiers["pda"]
    assert wait_for(lambda: len(pda.sent) == 2)
    assert sorted(n.key.split(":")[1] for _, n in pda.sent) == ["cm1", "lobby"]
    assert pda.sent[0][1].visit.customer.name == "Ada Wong"
    assert again.resent == 2
    assert wait_for(lambda: rows(again, "state, attempts, payload IS NULL") == [("delivered", 2, 1)] * 2)


@pytest.mark.slow
def test_notifications_whose_ttl_passed_while_stopped_are_expired_not_sent(start):
    branch, _ = start("away: [lobby, cm1], retry: {first: 10s, max: 10s}", ttl="1s")
    walk_in(branch)
    assert wait_for(lambda: rows(branch, "state") == [("retrying",)] * 2)
    branch.stop()
    time.sleep(1.1)
    again, types = start(ttl="1s")
    assert wait_for(lambda: rows(again, "state, payload IS NULL") == [("expired", 1)] * 2)
    assert types.notifiers["pda"].sent == []
    assert {r.state for r in types.results} == {DeliveryState.EXPIRED}
    assert again.status.devices["pda"].counters["expired"] == 2


@pytest.mark.slow
def test_a_retry_past_the_ttl_is_expired(start):
    branch, types = start("away: [lobby], retry: {first: 5s, max: 5s}", ttl="300ms")
    walk_in(branch)
    assert wait_for(lambda: DeliveryState.EXPIRED in {r.state for r in types.results}, timeout=2.0)
    assert wait_for(
        lambda: rows(branch, "recipient_id, state") == [("cm1", "delivered"), ("lobby", "expired")]
    )


# -- the delivery record ---------------------------------------------------------------------------


def test_an_acknowledgement_reported_later_is_recorded(start):
    branch, types = start()
    walk_in(branch)
    pda = types.notifiers["pda"]
    assert wait_for(lambda: len(pda.sent) == 2)
    _, first = pda.sent[0]
    seen = time.time()
    ack = DeliveryResult(first.key, "pda", DeliveryState.ACKNOWLEDGED, seen, "seen on PDA")
    threading.Thread(target=pda.ctx.report, args=(first, ack)).start()  # the PDA's reply thread
    assert wait_for(lambda: ("acknowledged", seen) in rows(branch, "state, acknowledged_at"))
    [record] = [r for r in branch.outbox.response_times(0, time.time()) if r.key == first.key]
    assert record.arrived_at <= record.delivered_at <= record.acknowledged_at == seen


def _visit(visit_id: str, at: float) -> Visit:
    customer = Customer(
        "C1",
        "Ada Wong",
        tier="gold",
        id_number="110101199003071234",
        mobile="13812345678",
        photo=Photo(b"\xff\xd8jpeg"),
    )
    arrival = Arrival(ADA, "door", 1, 10.0, 10.5, 3, -50.0)
    return Visit(visit_id, "b", VisitKind.GREETED, arrival, at, customer=customer, tier="gold")


def test_response_times_per_staff_member(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    lobby, cm1 = Staff("lobby", "Lobby", Role.LOBBY_MANAGER), Staff("cm1", "CM", Role.CLIENT_MANAGER)
    v1, v2 = _visit("v1", 1000.0), _visit("v2", 2000.0)
    n1 = Notification("v1:lobby", v1, lobby, "pda", 1000.1, 1600.0)
    n2 = Notification("v1:cm1", v1, cm1, "pda", 1000.1, 1600.0)
    n3 = Notification("v2:lobby", v2, lobby, "pda", 2000.1, 2600.0)
    outbox.add([n1, n2, n3])
    outbox.result(n1, DeliveryResult(n1.key, "pda", DeliveryState.DELIVERED, 1000.2))
    outbox.result(n1, DeliveryResult(n1.key, "pda", DeliveryState.ACKNOWLEDGED, 1030.0, "seen"))
    outbox.result(n2, DeliveryResult(n2.key, "pda", DeliveryState.RETRYING, 1000.2, "away", 1))
    outbox.flush()
    got = outbox.response_times(900.0, 1500.0)
    assert [(r.key, r.state, r.arrived_at, r.delivered_at, r.acknowledged_at, r.attempts) for r in got] == [
        ("v1:cm1", "retrying", 1000.0, None, None, 1),
        ("v1:lobby", "acknowledged", 1000.0, 1000.2, 1030.0, 1),
    ]
    assert got[0].last_error == "away"
    staff = {"lobby": lobby, "cm1": cm1}
    pending, broken = outbox.pending(Clock(), staff)
    assert broken == []
    assert sorted(p.notification.key for p in pending) == ["v1:cm1", "v2:lobby"]
    restored = pending[0].notification.visit
    assert restored.customer.name == "Ada Wong" and restored.customer.photo is None
    assert restored.customer.id_number == "**************1234"
    assert restored.arrival.arrived_mono - restored.arrival.first_seen_mono == pytest.approx(0.5)
    assert outbox.purge(1500.0) == 1  # v1:lobby is closed; v1:cm1 is still open and stays
    outbox.close()


def test_a_recipient_who_left_the_staff_is_failed_at_restart(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    gone = Staff("gone", "Gone", Role.LOBBY_MANAGER)
    outbox.add([Notification("v1:gone", _visit("v1", 1000.0), gone, "pda", 1000.0, 1600.0)])
    pending, broken = outbox.pending(Clock(), {})
    assert pending == [] and broken == [
        ("pda", "v1:gone", "recipient 'gone' is no longer in the profile's staff")
    ]
    outbox.close_rows(broken, DeliveryState.FAILED, 1001.0)
    assert [r.state for r in outbox.response_times(0, 2000)] == ["failed"]
    outbox.close()


# -- profile keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        ("retry: {first: 0s}", "retry.first: must be greater than 0, got 0"),
        ("retry: {first: 2s, max: 1s}", "retry: max (1s) must not be shorter than first (2s)"),
        ("retry: 5s", "retry: expected a mapping such as {first: 1s, max: 15s}, got '5s'"),
        ("retry: {frist: 1s}", "retry.frist: unknown key; did you mean 'first'?"),
        ("retry: {max: soon}", "retry.max: expected a duration such as 500ms, 2s or 10m, got 'soon'"),
    ],
)
def test_retry_keys_are_checked(write_profile, retry, message):
    host = load_host()
    host.add(Types(), "outbox-test-types")
    path = write_profile(PROFILE % {"settings": retry, "ttl": "10m"})
    with pytest.raises(ProfileError) as exc:
        load_profile(path, host)
    assert message in str(exc.value)
    assert "notifiers[0].retry" in str(exc.value)


def test_retry_defaults(write_profile):
    host = load_host()
    host.add(Types(), "outbox-test-types")
    profile = load_profile(write_profile(PROFILE % {"settings": "away: []", "ttl": "10m"}), host)
    assert (float(profile.notifiers[0].retry.first), float(profile.notifiers[0].retry.max)) == (1.0, 15.0)
    assert profile.notifiers[0].settings == ScriptSettings()


# -- at-least-once across kill -9 of a real `vipsense run` -----------------------------------------

FILE_NOTIFIER = """
import time
from pathlib import Path

import attrs

import vipsense
from vipsense.api import Notifier


@attrs.frozen
class FileSettings:
    marker: str  #: while this file exists the channel is "offline"
    out: str  #: delivered messages are appended here, one line each


class FileNotifier(Notifier):
    def __init__(self, settings, ctx):
        self.s = settings

    def send(self, n):
        if Path(self.s.marker).exists():
            raise ConnectionError("offline")
        name = n.visit.customer.name if n.visit.customer else "-"
        with open(self.s.out, "a", encoding="utf-8") as f:
            f.write(f"{n.key}\\t{n.visit.visit_id}\\t{n.recipient.id}\\t{name}\\n")


@vipsense.hookimpl
def vipsense_register_notifier_types(register):
    register("file", FileSettings, FileNotifier, summary="appends messages to a file")
"""

KILL_PROFILE = branch_profile(
    readers="""\
  - id: door
    type: simulated
    visitors:
%(visitors)s      - {card: E20000000000000000000001, at: 1h, reads: 1}   # keeps the replay running
""",
    notifiers=[
        "{id: pager, type: file, marker: %(marker)s, out: %(out)s, retry: {first: 100ms, max: 300ms}}"
    ],
    staff=[LOBBY, BOSS],
    routing=routes("pager", client_manager=False, rejected_to_lobby=False),
)

MORNING = """\
      - {card: E20000000000000000000001, at: 0.2s, reads: 3, rate: 20}
      - {card: E20000000000000000000002, at: 0.4s, reads: 3, rate: 20}
      - {card: E20000000000000000000003, at: 0.6s, reads: 3, rate: 20}
"""

KILL_SEED = """\
customers:
  - {customer_no: C1, name: Ada Wong, tier: gold}
  - {customer_no: C2, name: Bo Li, tier: platinum}
  - {customer_no: C3, name: Cai Yun, tier: gold}
cards:
  - {epc: E20000000000000000000001, customer_no: C1}
  - {epc: E20000000000000000000002, customer_no: C2, status: lost}
  - {epc: E20000000000000000000003, customer_no: C3}
"""


def _query(path: Path, sql: str) -> list[tuple]:
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=5)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the table is not made yet
        return []
    finally:
        db.close()


@pytest.mark.slow
def test_kill_9_then_restart_delivers_everything_that_was_pending(fake_distribution, write_profile, tmp_path):
    fake_distribution("vipsense-filepager", {"filepager": FILE_NOTIFIER})
    marker, out, data = tmp_path / "offline", tmp_path / "delivered.txt", tmp_path / "data"
    marker.touch()
    settings = {"marker": marker, "out": out}
    profile = write_profile(KILL_PROFILE % {**settings, "visitors": MORNING}, seed=KILL_SEED)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{REPO}"}
    cmd = [sys.executable, "-m", "vipsense.cli", "run", str(profile), "--data-dir", str(data), "--no-status"]

    def run() -> subprocess.Popen:
        return subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env
        )

    outbox = data / "outbox.sqlite3"
    proc = run()
    try:
        # two greetings for the lobby and the lost card's alert for the branch manager, each
        # tried at least twice while "offline"
        ok = wait_for(
            lambda: (
                _query(outbox, "SELECT COUNT(*) FROM outbox WHERE payload IS NOT NULL AND attempts >= 2")
                == [(3,)]
            ),
            timeout=20,
        )
        if not ok:
            proc.kill()
            pytest.fail(f"notifications never pending: {proc.communicate()[1]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not out.exists()
    visits = _query(data / "visits.sqlite3", "SELECT visit_id, kind FROM visits")
    assert sorted(kind for _, kind in visits) == ["greeted", "greeted", "rejected"]
    expected = {
        f"{vid}:{'lobby' if kind == 'greeted' else 'boss'}" for vid, kind in visits if kind != "unknown"
    }

    # the branch comes back online, with nobody new at the door: only what was pending goes out
    marker.unlink()
    write_profile(KILL_PROFILE % {**settings, "visitors": ""}, seed=KILL_SEED)
    proc = run()
    try:

        def delivered() -> set[str]:
            return {line.split("\t")[0] for line in out.read_text().splitlines()} if out.exists() else set()

        assert wait_for(lambda: delivered() == expected, timeout=20), (delivered(), expected)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line.split("\t") for line in out.read_text().splitlines()]
    assert all(key == f"{vid}:{who}" for key, vid, who, _ in lines)  # each carries its idempotency key
    assert {name for *_, name in lines} == {"Ada Wong", "Bo Li", "Cai Yun"}  # rendered after the restart
    closed = _query(outbox, "SELECT state, payload IS NULL FROM outbox")
    assert sorted(closed) == [("delivered", 1)] * 3
