"""Fault tests for the SMS pager through a running branch and its outbox: a modem that answers
``+CMS ERROR`` or disappears has the text retried, then reported; nothing is lost and nothing is
texted twice."""

from __future__ import annotations

import logging
import sqlite3
import time

import pytest

from vipsense.branch import Branch
from vipsense.model import DeliveryState, TagRead

from .conftest import wait_for
from .profiles import branch_profile, routes

ADA = "E20000000000000000000001"
SEED = """\
customers:
  - {customer_no: C1, name: Ada Wong, tier: gold, id_number: "110101199003071234", mobile: "13812345678"}
cards:
  - {epc: E20000000000000000000001, customer_no: C1}
"""
PROFILE = branch_profile(
    notifiers=[
        "{id: sms, type: sms-modem, emulate: {show: false}, command_timeout: 300ms, send_timeout: 1s,\n"
        " retry: {first: 200ms, max: 400ms}}"
    ],
    extra=["notification_ttl: %(ttl)s"],
    staff=[
        '{id: lobby, name: Lobby Person, role: lobby_manager, mobile: "+8613800138001"}',
        '{id: boss, name: Branch Boss, role: branch_manager, mobile: "13800138002"}',
    ],
    routing=routes("sms", client_manager=False, rejected_to_lobby=False),
)


class Results:
    def __init__(self) -> None:
        self.seen: list = []

    def vipsense_delivery_result(self, notification, result):
        self.seen.append(result)

    def states(self):
        return [(r.state, r.attempt) for r in self.seen]


@pytest.fixture
def branch(running_branch):
    def make(ttl: str = "10m"):
        results = Results()
        b = running_branch(PROFILE % {"ttl": ttl}, seed=SEED, plugins={"modem-fault-results": results})
        return b, b.notifiers["sms"].notifier.emulator, results

    return make


def walk_in(b: Branch) -> None:
    for _ in range(2):
        b.pipeline.submit(TagRead("door", 1, ADA, -50.0, b.clock.mono()))


def outbox(b: Branch) -> list[tuple]:
    db = sqlite3.connect(b.data_dir / "outbox.sqlite3")
    try:
        return db.execute("SELECT state, attempts, last_error FROM outbox").fetchall()
    finally:
        db.close()


@pytest.mark.slow
def test_a_temporary_cms_error_is_retried_and_texted_once(branch):
    b, emulator, results = branch()
    emulator.fail_sends(332, times=2)  # network timeout, twice
    walk_in(b)
    assert wait_for(lambda: results.states()[-1:] == [(DeliveryState.DELIVERED, 3)], timeout=5)
    assert results.states() == [
        (DeliveryState.RETRYING, 1),
        (DeliveryState.RETRYING, 2),
        (DeliveryState.DELIVERED, 3),
    ]
    assert [m.number for m in emulator.received] == ["+8613800138001"]  # once
    assert "VIP Ada Wong (GOLD)" in emulator.received[0].text
    dev = b.status.snapshot()["devices"]["sms"]
    assert dev["errors"] == 2 and "network timeout (+CMS ERROR 332)" in dev["last_error"]
    assert wait_for(lambda: outbox(b) == [("delivered", 3, "")])


@pytest.mark.slow
def test_a_permanent_cms_error_is_reported_not_retried(branch, caplog):
    b, emulator, results = branch()
    emulator.fail_sends(1, times=5)  # unassigned number
    with caplog.at_level(logging.WARNING):
        walk_in(b)
        assert wait_for(lambda: results.states() == [(DeliveryState.FAILED, 1)], timeout=5)
    time.sleep(0.6)  # past two retry slots: no second attempt
    assert results.states() == [(DeliveryState.FAILED, 1)] and emulator.received == []
    [(state, attempts, error)] = outbox(b)
    assert (state, attempts) == ("failed", 1)
    assert "unassigned number: the recipient's number does not exist (+CMS ERROR 1)" in error
    assert "13800138001" not in error  # the number is masked in the report
    assert b.status.devices["sms"].counters["failed"] == 1
    assert any("failed for good" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_modem_that_disappears_is_retried_until_it_is_back(branch):
    b, emulator, results = branch()
    emulator.stall = "all"  # hangs: nothing answered, not even the echo
    walk_in(b)
    assert wait_for(lambda: len(results.seen) >= 2, timeout=6)
    assert all(r.state is DeliveryState.RETRYING for r in results.seen)
    assert emulator.received == []
    dev = b.status.devices["sms"]
    assert dev.state == "degraded" and dev.reason == results.seen[-1].detail
    emulator.stall = ""
    assert wait_for(lambda: results.seen[-1].state is DeliveryState.DELIVERED, timeout=6)
    assert len(emulator.received) == 1
    assert (dev.state, dev.reason) == ("ready", "")
    assert wait_for(lambda: outbox(b)[0][0] == "delivered")


@pytest.mark.slow
def test_a_modem_that_never_comes_back_is_reported_when_the_text_expires(branch):
    b, emulator, results = branch(ttl="2s")
    emulator.stall = "all"
    walk_in(b)
    assert wait_for(lambda: results.seen and results.seen[-1].state is DeliveryState.EXPIRED, timeout=8)
    expired = results.seen[-1]
    assert expired.detail.startswith("customer has probably left; last error: ")
    assert "modem" in expired.detail.split("last error: ")[1]
    assert wait_for(lambda: outbox(b)[0][0] == "expired")
    dev = b.status.snapshot()["devices"]["sms"]
    assert dev["counters"]["expired"] == 1 and dev["last_error"].startswith("expired before delivery")
    assert emulator.received == []
