"""Acknowledgements and escalation: the first acknowledgement is recorded on the visit and in the
outbox and stops other channels; a recipient who does not acknowledge in time (or cannot be reached)
has their rule's fallback told once, also when the deadline passed while the hub was down."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from vipsense.config.errors import ProfileError
from vipsense.config.profile import load_profile
from vipsense.model import DeliveryState
from vipsense.pluginhost import load_host
from vipsense.storage.outbox import Outbox

from .conftest import wait_for
from .profiles import alarm_routes, branch_profile
from .test_outbox import ADA, SEED, Types, walk_in

PROFILE = branch_profile(
    notifiers=["{id: pda, type: scripted, %(pda)s}", "{id: pager, type: scripted, %(pager)s}"],
    routing=[
        "{event: arrival, to: client_manager, via: [pda, pager],\n"
        " escalate: {after: %(after)s, to: branch_manager, via: [pager]}}",
        *alarm_routes("pda"),
    ],
)
FAST = "retry: {first: 50ms, max: 100ms}"


@pytest.fixture
def start(running_branch):
    def make(pda: str = FAST, pager: str = FAST, after: str = "400ms"):
        types, acks = Types(), []

        class Watch:
            @staticmethod
            def vipsense_acknowledged(ack):
                acks.append(ack)

        text = PROFILE % {"pda": pda, "pager": pager, "after": after}
        branch = running_branch(
            text, seed=SEED, plugins={"escalation-test-types": types, "ack-watch": Watch()}
        )
        return branch, types, acks

    return make


def told(types, notifier="pager"):
    return [(n.recipient.id, n.escalated_from) for _, n in types.notifiers[notifier].sent]


def outbox_rows(branch, columns):
    db = sqlite3.connect(branch.data_dir / "outbox.sqlite3")
    try:
        return sorted(db.execute(f"SELECT {columns} FROM outbox").fetchall(), key=repr)
    finally:
        db.close()


def visit_ack(branch):
    db = sqlite3.connect(branch.data_dir / "visits.sqlite3")
    try:
        return db.execute(
            "SELECT acknowledged_by, acknowledged_at FROM visits WHERE kind='greeted'"
        ).fetchall()
    finally:
        db.close()


@pytest.mark.slow
def test_no_acknowledgement_in_time_tells_the_fallback_once(start):
    branch, types, _ = start()
    walk_in(branch, ADA)
    assert wait_for(lambda: ("cm1", "") in told(types))
    t0 = time.monotonic()
    assert wait_for(lambda: ("boss", "cm1") in told(types), timeout=3)
    assert time.monotonic() - t0 >= 0.2  # not before the deadline
    time.sleep(0.6)  # several more escalation rounds: still told once
    assert sorted(told(types)) == [("boss", "cm1"), ("cm1", "")]
    rows = outbox_rows(
        branch, "notifier_id, recipient_id, escalated_from, escalated_at IS NOT NULL, payload IS NULL"
    )
    assert rows == sorted(
        [
            ("pager", "boss", "cm1", False, True),  # the fallback itself does not escalate again
            ("pager", "cm1", "", True, True),
            ("pda", "cm1", "", True, True),
        ],
        key=repr,
    )


@pytest.mark.slow
def test_an_acknowledgement_is_recorded_on_the_visit_and_stops_the_escalation(start):
    branch, types, acks = start(after="1s")
    walk_in(branch, ADA)
    assert wait_for(lambda: len(told(types, "pda")) == 1)
    key = types.notifiers["pda"].sent[0][1].key
    ctx = types.notifiers["pda"].ctx
    assert not ctx.acknowledge(key, "lobby")  # not theirs
    assert not ctx.acknowledge("no-such-visit:cm1", "cm1")
    assert ctx.acknowledge(key, "cm1", time.time())
    assert ctx.acknowledge(key, "cm1")  # again: fine, and changes nothing
    assert [(a.staff_id, a.via, a.key) for a in acks] == [("cm1", "pda", key)]
    assert wait_for(lambda: [r[0] for r in visit_ack(branch)] == ["cm1"])
    assert outbox_rows(branch, "notifier_id, state, acknowledged_at IS NOT NULL, payload IS NULL") == [
        ("pager", "acknowledged", True, True),
        ("pda", "acknowledged", True, True),
    ]
    time.sleep(1.4)  # past the deadline: nobody else is told
    assert told(types) == [("cm1", "")]
    assert branch.status.counters["acknowledged"] == 1


@pytest.mark.slow
def test_an_acknowledgement_on_one_channel_stops_retries_on_the_other(start):
    branch, types, _ = start(pager="away: [cm1], retry: {first: 300ms, max: 300ms}", after="5s")
    walk_in(branch, ADA)
    assert wait_for(lambda: len(told(types, "pda")) == 1)
    pager = types.notifiers["pager"]
    assert wait_for(lambda: pager.attempts)
    key = types.notifiers["pda"].sent[0][1].key
    assert types.notifiers["pda"].ctx.acknowledge(key, "cm1")
    tries = pager.attempts[key]
    time.sleep(0.8)  # two more retry slots
    assert pager.attempts[key] == tries
    assert branch.status.devices["pager"].counters["skipped"] == 1


def test_a_notification_that_fails_for_good_escalates_at_once(start):
    branch, types, _ = start(pda="permanent: true", pager="permanent: true", after="30s")
    walk_in(branch, ADA)
    # both channels to cm1 failed for good: the fallback (also through a failing pager) is tried now
    assert wait_for(lambda: any(k.endswith(":boss") for k in types.notifiers["pager"].attempts), timeout=3)
    assert any(r.state is DeliveryState.FAILED for r in types.results)


@pytest.mark.slow
def test_an_escalation_due_while_the_hub_was_down_happens_after_the_restart(start):
    branch, types, _ = start(after="600ms")
    walk_in(branch, ADA)
    assert wait_for(lambda: len(told(types, "pda")) == 1)
    branch.stop()
    assert told(types) == [("cm1", "")]
    time.sleep(0.8)  # the deadline passes while nothing runs
    _, types2, _ = start(after="600ms")
    assert wait_for(lambda: told(types2) == [("boss", "cm1")], timeout=3)
    assert told(types2, "pda") == []  # delivered ones are not sent again


@pytest.mark.parametrize(
    ("escalate", "message"),
    [
        (
            "{after: 1s, to: branch_manager, via: [fax]}",
            "routing[0].escalate.via[0]: no notifier has id 'fax'",
        ),
        ("{after: 0s, to: branch_manager, via: [pda]}", "after must be longer than 0s"),
        ("{after: 20m, to: branch_manager, via: [pda]}", "must be shorter than notification_ttl (600s)"),
        ("{after: 1s, to: head_office, via: [pda]}", "no one in 'staff:' has role 'head_office'"),
    ],
)
def test_escalation_mistakes_in_a_profile(write_profile, escalate, message):
    text = PROFILE.replace("{after: %(after)s, to: branch_manager, via: [pager]}", escalate)
    path = write_profile(text % {"pda": FAST, "pager": FAST}, seed=SEED)
    host = load_host()
    host.add(Types(), "escalation-test-types")
    with pytest.raises(ProfileError) as err:
        load_profile(path, host)
    assert message in str(err.value)


def test_suspect_cards_escalate_only_to_the_branch_manager_or_head_office(write_profile):
    text = PROFILE.replace(
        "{event: suspect, to: branch_manager, via: [pda]}",
        "{event: suspect, to: branch_manager, via: [pda],"
        " escalate: {after: 1s, to: lobby_manager, via: [pda]}}",
    )
    path = write_profile(text % {"pda": FAST, "pager": FAST, "after": "1s"}, seed=SEED)
    host = load_host()
    host.add(Types(), "escalation-test-types")
    with pytest.raises(ProfileError) as err:
        load_profile(path, host)
    assert "routing[2].escalate.to" in str(err.value)
    assert "suspect cards escalate only to the branch manager or head office" in str(err.value)


def test_an_outbox_from_before_escalation_is_migrated(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE outbox (notifier_id TEXT NOT NULL, key TEXT NOT NULL, visit_id TEXT NOT NULL,
        recipient_id TEXT NOT NULL, state TEXT NOT NULL, arrived_at REAL NOT NULL, created_at REAL NOT NULL,
        expires_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
        delivered_at REAL, acknowledged_at REAL, finished_at REAL, payload TEXT,
        PRIMARY KEY (notifier_id, key));
        INSERT INTO outbox (notifier_id, key, visit_id, recipient_id, state, arrived_at, created_at,
        expires_at, delivered_at, finished_at)
        VALUES ('pda', 'v1:cm1', 'v1', 'cm1', 'delivered', 1, 1, 2, 1, 1);"""
    )
    db.close()
    box = Outbox(path)
    try:
        assert box.acknowledge("v1:cm1", 5.0) == (True, True)
        assert box.due_escalations(10.0) == []
        [record] = box.response_times(0, 10)
        assert (record.acknowledged_at, record.escalated_at, record.escalated_from) == (5.0, None, "")
    finally:
        box.close()


# -- response times: the status object and vipsense visits --today -----------------------------------


@pytest.fixture
def cli(monkeypatch):
    """``vipsense`` in-process, with the test notifier type installed."""
    import vipsense.cli

    def host():
        h = load_host()
        h.add(Types(), "escalation-test-types")
        return h

    monkeypatch.setattr(vipsense.cli, "load_host", host)
    return vipsense.cli.main


@pytest.mark.slow
def test_response_times_in_the_status_and_in_visits_today(start, cli, capsys):
    main = cli

    branch, types, _ = start(after="400ms")
    walk_in(branch, ADA)
    assert wait_for(lambda: ("boss", "cm1") in told(types), timeout=3)  # cm1 did not respond
    [(_, to_boss)] = [(t, n) for t, n in types.notifiers["pager"].sent if n.recipient.id == "boss"]
    assert types.notifiers["pager"].ctx.acknowledge(to_boss.key, "boss")
    snap = branch.status.snapshot()["responses"]
    time.sleep(1.1)  # the status object reuses its figures for a second
    snap = branch.status.snapshot()["responses"]
    assert (snap["cm1"]["told"], snap["cm1"]["delivered"], snap["cm1"]["acknowledged"]) == (1, 1, 0)
    assert snap["cm1"]["escalated"] == 1
    assert (snap["boss"]["acknowledged"], snap["boss"]["escalated"]) == (1, 0)
    assert 0 < snap["boss"]["acknowledgement_p50"] < 5
    branch.stop()

    profile, data = str(branch.profile.source), str(branch.data_dir)
    assert main(["visits", "--today", profile, "--data-dir", data, "--as", "boss"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "1 visit" in lines[0]
    assert lines[1].split() == [
        "TIME",
        "KIND",
        "CUSTOMER",
        "TIER",
        "STAFF",
        "VIA",
        "DELIVERED",
        "ACKNOWLEDGED",
    ]
    cm1, boss = lines[2].split(), lines[3].split()
    assert cm1[1:7] == ["greeted", "C1", "Gold", "cm1", "pager,pda", "+0.0s"]
    assert cm1[7:] == ["-", "no", "response:", "escalated"]
    assert boss[:2] == ["boss", "pager"] and boss[4:] == ["escalated", "from", "cm1"]
    summary = {line.split()[0]: line.split() for line in lines[lines.index("") + 3 :] if line}
    assert summary["cm1"][-7:-3] == ["1", "1", "0", "1"] and summary["cm1"][-2:] == ["-", "-"]
    assert summary["boss"][-7:-3] == ["1", "1", "1", "0"]

    assert main(["visits", "list", profile, "--data-dir", data, "--as", "boss", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [visit] = doc["visits"]
    told_ = {t["staff_id"]: t for t in visit["told"]}
    assert told_["cm1"]["escalated"] and told_["cm1"]["acknowledged_after"] is None
    assert told_["boss"]["escalated_from"] == "cm1" and told_["boss"]["state"] == "acknowledged"
    assert doc["staff"]["boss"]["name"] == "Branch Boss"
    assert visit["acknowledged_by"] == "boss"


def test_visits_today_is_for_the_branch_manager_and_head_office(start, cli, capsys):
    from vipsense.storage.audit import AuditLog

    main = cli

    branch, _, _ = start()
    branch.stop()
    profile, data = str(branch.profile.source), str(branch.data_dir)
    assert main(["visits", "--today", profile, "--data-dir", data, "--as", "lobby"]) == 1
    err = capsys.readouterr().err
    assert "lobby (lobby_manager) may not view visits and response times" in err
    log = AuditLog(branch.data_dir / "audit.sqlite3")
    try:
        assert [(e.actor, e.result.value) for e in log.entries() if e.action.value == "view"] == [
            ("lobby", "denied")
        ]
    finally:
        log.close()
