"""The one schema-migration helper of the branch's SQLite files (vipsense.storage.migrations)."""

from __future__ import annotations

import sqlite3

import pytest

from vipsense.storage.migrations import adding_columns, migrate, version
from vipsense.storage.outbox import Outbox
from vipsense.storage.visitlog import VisitLog
from vipsense.web.users import UserStore


def columns(path, table: str) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def test_steps_past_the_version_run_once_in_order(tmp_path):
    db = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    db.execute("CREATE TABLE t (a TEXT)")
    ran: list[int] = []

    def step(n: int):
        return lambda db: ran.append(n) or [f"step {n}"]

    assert migrate(db, (step(1), adding_columns({"t": (("b", "REAL"),)}))) == ["step 1", "t.b"]
    assert version(db) == 2
    assert migrate(db, (step(1), adding_columns({"t": (("b", "REAL"),)}), step(3))) == ["step 3"]
    assert migrate(db, (step(1), adding_columns({"t": (("b", "REAL"),)}), step(3))) == []
    assert ran == [1, 3]
    assert migrate(db, (step(1),)) == [] and version(db) == 3  # a newer file keeps its version
    db.close()


def test_a_failing_step_changes_nothing(tmp_path):
    db = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    db.execute("CREATE TABLE t (a TEXT)")

    def broken(db: sqlite3.Connection) -> list[str]:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError):
        migrate(db, (adding_columns({"t": (("b", "REAL"),)}), broken))
    assert version(db) == 0 and [r[1] for r in db.execute("PRAGMA table_info(t)")] == ["a"]
    db.close()


def test_files_of_the_first_layout_get_the_new_columns(tmp_path):
    with sqlite3.connect(tmp_path / "visits.sqlite3") as db:
        db.execute(
            "CREATE TABLE visits (visit_id TEXT PRIMARY KEY, branch_id TEXT NOT NULL, kind TEXT NOT NULL,"
            " epc TEXT NOT NULL, tid TEXT, customer_no TEXT, tier TEXT, reason TEXT, store_id TEXT,"
            " stale INTEGER NOT NULL DEFAULT 0, unresolved INTEGER NOT NULL DEFAULT 0,"
            " reader_id TEXT NOT NULL, antenna INTEGER NOT NULL, read_count INTEGER NOT NULL,"
            " peak_rssi REAL, arrived_at REAL NOT NULL, departed_at REAL)"
        )
    VisitLog(tmp_path / "visits.sqlite3").close()
    assert columns(tmp_path / "visits.sqlite3", "visits")[-5:] == [
        "acknowledged_at",
        "acknowledged_by",
        "resolved_at",
        "last_seen_at",
        "change_seq",
    ]
    Outbox(tmp_path / "outbox.sqlite3").close()
    assert "escalated_from" in columns(tmp_path / "outbox.sqlite3", "outbox")
    with sqlite3.connect(tmp_path / "users.sqlite3") as db:
        db.execute(
            "CREATE TABLE tokens (name TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, fields TEXT NOT NULL,"
            " per_minute INTEGER NOT NULL, created_at REAL NOT NULL, revoked_at REAL)"
        )
    UserStore(tmp_path / "users.sqlite3").close()
    assert columns(tmp_path / "users.sqlite3", "tokens")[-2:] == ["expires_at", "last_used_at"]
