"""Clocks that never lie: a sped-up replay runs presence on compressed branch time but records true
wall times, so response times are never negative and its rows can sit beside real ones."""

from __future__ import annotations

import json
import time

import pytest

import vipsense
from vipsense.api import Notifier
from vipsense.cli import main
from vipsense.clock import Clock, ManualClock
from vipsense.pluginhost import load_host

from .conftest import BASE_PROFILE, wait_for

VISITORS = (
    "  - {id: door, type: simulated, visitors: [{card: E20000000000000000000001, at: 20s, stay: 5s},"
    " {card: E20000000000000000000001, at: 700s, stay: 5s}]}\n"
)


class AckAtOnce(Notifier):
    """Staff who acknowledge the moment a notification reaches them."""

    def __init__(self, settings, ctx) -> None:
        self.ctx = ctx

    def send(self, notification) -> None:
        self.ctx.acknowledge(notification.key, notification.recipient.id)


class Types:
    @vipsense.hookimpl
    def vipsense_register_notifier_types(self, register):
        import attrs

        @attrs.frozen
        class NoSettings:
            pass

        register("ack-at-once", NoSettings, AckAtOnce)


def test_clock_converts_between_branch_and_wall_time():
    clock = Clock(speed=10)
    assert clock.real(60.0) == 6.0
    assert clock.to_mono(clock.to_wall(123.0)) == pytest.approx(123.0)
    assert abs(clock.wall() - time.time()) < 0.5  # wall time is true time, whatever the speed
    manual = ManualClock(wall0=1_000_000.0)
    manual.advance(30)
    assert (manual.mono(), manual.wall(), manual.to_wall(10.0)) == (30.0, 1_000_030.0, 1_000_010.0)
    with pytest.raises(ValueError):
        manual.advance(-1)


@pytest.mark.slow
def test_a_replay_at_ten_times_speed_records_true_times_and_no_negative_response(
    running_branch, write_profile, tmp_path, capsys, monkeypatch
):
    text = BASE_PROFILE.replace("  - {id: door, type: simulated, visitors: []}\n", VISITORS)
    text = text.replace("{id: screen, type: console, color: never}", "{id: screen, type: ack-at-once}")
    started = time.time()
    branch = running_branch(text, plugins={"t": Types()}, clock=Clock(speed=10), data_dir=tmp_path / "d")
    # 20 s of branch time pass in 2 s: the VIP arrives, is greeted and acknowledged at once; the
    # second visit at 700 s (70 s real) is not reached
    assert wait_for(lambda: branch.status.counters["acknowledged"] >= 2, 10)
    done = time.time()
    branch.stop()

    def host_with_types():
        host = load_host()
        host.add(Types(), "t")
        return host

    monkeypatch.setattr("vipsense.cli.load_host", host_with_types)  # the command knows the test type too
    assert main(["visits", "--today", str(tmp_path / "branch.yaml"), "--json", "--as", "boss",
                 "--data-dir", str(tmp_path / "d")]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    [visit] = report["visits"]
    assert started <= visit["arrived_at"] <= done  # when it really happened, not 20 s ahead
    told = {t["staff_id"]: t for t in visit["told"]}
    assert set(told) == {"lobby", "cm1"}
    for t in told.values():
        assert 0 <= t["delivered_after"] <= t["acknowledged_after"] < 5
    for staff in report["staff"].values():
        assert staff["acknowledgement_p50"] >= 0
