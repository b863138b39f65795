"""Visit retention: old visits are purged from the real visit log, only those, in small batches while
the branch keeps writing, and every purge is one audit entry with its count."""

from __future__ import annotations

import sqlite3
import time

import pytest

from vipsense.model import Arrival, Visit, VisitKind
from vipsense.storage import retention
from vipsense.storage.audit import AuditLog
from vipsense.storage.retention import count_visits, purge_visits
from vipsense.storage.visitlog import VisitLog

from .lifecycle import make_branch

DAY = 86400.0
NOW = 1_780_000_000.0


def visit(n: int, arrived_at: float) -> Visit:
    arrival = Arrival(f"E2{n:022X}", "door", 1, 0.0, 0.0, 3, -50.0)
    return Visit(f"v{n}", "sh-test", VisitKind.GREETED, arrival, arrived_at)


def fill(path, ages_in_days: list[float]) -> None:
    log = VisitLog(path)
    try:
        log.record(visit(n, NOW - age * DAY) for n, age in enumerate(ages_in_days))
    finally:
        log.close()


def remaining(path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT visit_id FROM visits ORDER BY arrived_at DESC")]
    finally:
        db.close()


@pytest.fixture
def audit(tmp_path):
    log = AuditLog(tmp_path / "audit.sqlite3", synchronous="NORMAL")
    yield log
    log.close()


def entries(audit: AuditLog) -> list[tuple]:
    return [
        (e.actor, e.role, e.branch, e.action.value, e.object, e.result.value, e.reason)
        for e in audit.entries()
    ]


def test_only_visits_older_than_the_retention_are_deleted_and_the_purge_is_audited(tmp_path, audit):
    path = tmp_path / "visits.sqlite3"
    fill(path, [0.5, 29.9, 30.1, 45, 400])
    assert count_visits(path, 30 * DAY, NOW) == 3
    n = purge_visits(path, 30 * DAY, audit, "system:retention", NOW, branch="sh-test", source="branch")
    assert n == 3
    assert remaining(path) == ["v0", "v1"]
    assert entries(audit) == [
        ("system:retention", "system", "sh-test", "purge", "visits before 2026-04-28 20:26 UTC: 3 deleted",
         "success", ""),
    ]  # fmt: skip
    assert audit.verify().ok


def test_zero_retention_keeps_every_visit(tmp_path, audit):
    path = tmp_path / "visits.sqlite3"
    fill(path, [1, 1000])
    assert purge_visits(path, 0, audit, "system:retention", NOW) == 0
    assert remaining(path) == ["v0", "v1"]
    assert entries(audit)[0][4:6] == ("visits (kept for ever): 0 deleted", "success")


def test_a_missing_visit_log_is_nothing_to_purge_and_is_not_created(tmp_path, audit):
    path = tmp_path / "visits.sqlite3"
    assert purge_visits(path, DAY, audit, "boss", NOW, role="branch_manager") == 0
    assert count_visits(path, DAY, NOW) == 0
    assert not path.exists()
    assert entries(audit)[0][5] == "success"


def test_a_large_purge_goes_in_batches_while_the_branch_writes(tmp_path, audit, monkeypatch):
    monkeypatch.setattr(retention, "PURGE_BATCH", 100)
    path = tmp_path / "visits.sqlite3"
    fill(path, [100.0 + i / 1000 for i in range(1050)])
    branch_log = VisitLog(path)  # the running branch holds the file open and keeps recording
    try:
        n = purge_visits(path, 30 * DAY, audit, "system:retention", NOW)
        branch_log.record([visit(5000, NOW)])
    finally:
        branch_log.close()
    assert n == 1050
    assert remaining(path) == ["v5000"]


def test_a_failed_purge_is_audited_as_an_error_and_raised(tmp_path, audit):
    path = tmp_path / "visits.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        purge_visits(path, DAY, audit, "boss", NOW, role="branch_manager", reason="monthly")
    [entry] = entries(audit)
    assert entry[5] == "error"
    assert entry[6].startswith("monthly (error: file is not a database")


# -- the command ------------------------------------------------------------------------------------


def test_visits_purge_from_the_command_line(tmp_path, capsys):
    branch = make_branch(tmp_path, capsys)
    path = tmp_path / "data" / "visits.sqlite3"
    now = time.time()
    log = VisitLog(path)
    log.record([visit(1, now - 3600), visit(2, now - 31 * DAY), visit(3, now - 90 * DAY)])
    log.close()

    code, out, _ = branch.cli("visits", "purge", "--dry-run", who="boss")
    assert code == 0 and out.startswith("would delete 2 visits that arrived before ")
    assert remaining(path) == ["v1", "v2", "v3"]
    assert branch.entries() == []  # a dry run deletes nothing and is not audited

    code, _, err = branch.cli("visits", "purge", who="lobby")
    assert code == 1 and "lobby (lobby_manager) may not purge visits" in err
    assert remaining(path) == ["v1", "v2", "v3"]

    code, out, _ = branch.cli("visits", "purge", "--reason", "monthly retention", who="boss")
    assert code == 0
    assert out.startswith("deleted 2 visits that arrived before ") and out.rstrip().endswith(str(path))
    assert remaining(path) == ["v1"]
    actions = [e[:5] for e in branch.entries()]
    assert actions[0] == ("lobby", "lobby_manager", "purge", "visits", "denied")
    assert actions[1][:3] == ("boss", "branch_manager", "purge")
    assert actions[1][3].endswith(": 2 deleted") and actions[1][4] == "success"
    assert branch.cli("audit", "verify")[0] == 0
