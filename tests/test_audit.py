"""The audit log is append-only, tamper-evident, and names the first broken entry precisely.

Tampering is done the way an attacker would: a raw sqlite3 connection to the real file, dropping the
triggers first where needed.  Concurrency uses two real OS processes on the same file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vipsense.audit import GENESIS_HASH, AuditAction, AuditLog, AuditResult, entry_hash

REPO = Path(__file__).resolve().parent.parent


def fill(log: AuditLog, n: int, start: float = 1_717_000_000.0) -> list:
    return [
        log.append(
            f"teller-{i % 7}",
            "teller",
            "B001",
            AuditAction.VIEW,
            f"C{1000000 + i}",
            "10.0.0.5",
            AuditResult.SUCCESS,
            at=start + i * 0.25,
        )
        for i in range(n)
    ]


def tamper(path: Path, *statements: str, params: tuple = ()) -> None:
    """Edit the file behind the log's back: drop the triggers, run ``statements``."""
    with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for sql in statements:
            db.execute(sql, params if "?" in sql else ())


@pytest.fixture
def log(tmp_path):
    log = AuditLog(tmp_path / "audit.db", synchronous="NORMAL")
    yield log
    log.close()


def test_round_trip_of_1000_entries(log):
    written = fill(log, 1000)
    assert log.verify().ok and log.verify().checked == 1000
    assert list(log.entries()) == written
    assert written[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(written))
    assert [e.seq for e in written] == list(range(1, 1001))


def test_an_auditor_can_re_verify_with_only_hashlib_and_json(log):
    """The documented canonical encoding, re-implemented here independently of the module."""
    fill(log, 5)
    log.append("张三", "主管", "北京分行", "unmask", "C1000001", "cli", "denied", reason="客户要求核实身份")
    with closing(sqlite3.connect(str(log.path))) as db:
        cursor = db.execute("SELECT * FROM audit ORDER BY seq")
        names = [column[0] for column in cursor.description]
        prev = "0" * 64
        for values in cursor:
            row = dict(zip(names, values, strict=True))
            body = {k: v for k, v in row.items() if k not in ("prev_hash", "hash")}
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            assert row["prev_hash"] == prev
            assert row["hash"] == hashlib.sha256(prev.encode() + canonical.encode("utf-8")).hexdigest()
            prev = row["hash"]
    assert "客户要求核实身份".encode() in canonical.encode()  # UTF-8, not \u escapes


def test_entries_filters(log):
    fill(log, 20)
    log.append("auditor-1", "auditor", "B001", "export", "", "10.0.0.9", "success", at=1_717_000_100.0)
    assert [e.seq for e in log.entries(actor="teller-3")] == [4, 11, 18]
    assert [e.actor for e in log.entries(action="export")] == ["auditor-1"]
    assert [e.seq for e in log.entries(since=1_717_000_004.0)] == list(range(17, 22))
    both = log.entries(since=1_717_000_004.0, action=AuditAction.VIEW, actor="teller-2")
    assert [e.seq for e in both] == [17]
    assert list(log.entries(action="export", actor="teller-2")) == []


def test_edited_field_is_caught_at_that_entry(log):
    fill(log, 60)
    tamper(log.path, "UPDATE audit SET result='success', actor='someone-else' WHERE seq=42")
    result = log.verify()
    assert (result.ok, result.first_broken, result.checked) == (False, 42, 41)
    assert result.problem == "entry 42: hash does not match its contents (edited?)"


def test_deleted_middle_row_is_a_gap(log):
    fill(log, 60)
    tamper(log.path, "DELETE FROM audit WHERE seq=42")
    result = log.verify()
    assert (result.ok, result.first_broken) == (False, 42)
    assert result.problem == "entry 43 follows 41: entry 42 is missing"


def test_deleted_range_and_deleted_first_row(log):
    fill(log, 20)
    tamper(log.path, "DELETE FROM audit WHERE seq BETWEEN 5 AND 7")
    assert log.verify().problem == "entry 8 follows 4: entries 5..7 are missing"
    tamper(log.path, "DELETE FROM audit WHERE seq=1")
    assert log.verify().problem == "entry 2 is the first: entry 1 is missing"


def test_deleted_last_row_needs_an_external_anchor(log):
    # Honest limit: cutting entries off the END leaves a shorter chain that is still perfectly valid,
    # so the chain alone cannot detect it.  What does: an anchor kept outside the file, e.g. the
    # last (seq, hash) printed in yesterday's daily report.  Both halves are asserted here.
    written = fill(log, 60)
    anchor = (written[-1].seq, written[-1].hash)
    assert log.verify(anchor=anchor).ok
    tamper(log.path, "DELETE FROM audit WHERE seq=60")
    assert log.verify() == log.verify()  # (no state)
    assert log.verify().ok and log.verify().checked == 59  # undetectable by the chain alone
    result = log.verify(anchor=anchor)
    assert (result.ok, result.first_broken) == (False, 60)
    assert result.problem == "entry 60 is missing: the anchor says it existed (log truncated?)"
    # ...and an attacker who appends a fresh entry 60 in its place does not match the anchor either.
    log.append("teller-1", "teller", "B001", "view", "C1", "cli", "success")
    assert log.verify(anchor=anchor).problem == "entry 60: hash does not match the anchor"


def test_reordered_rows_are_caught(log):
    fill(log, 10)
    tamper(
        log.path,
        "UPDATE audit SET seq=-5 WHERE seq=5",
        "UPDATE audit SET seq=5 WHERE seq=6",
        "UPDATE audit SET seq=6 WHERE seq=-5",
    )
    result = log.verify()
    assert (result.ok, result.first_broken) == (False, 5)
    assert result.problem == "entry 5: prev_hash does not match entry 4"


def test_recomputed_hash_is_caught_at_the_next_link(log):
    """An attacker who edits entry 7 and fixes its hash, but not entry 8's prev_hash."""
    fill(log, 10)
    seven = next(e for e in log.entries() if e.seq == 7)
    fields = {
        name: getattr(seven, name)
        for name in ("seq", "at", "actor", "role", "branch", "action", "object", "source", "reason", "result")
    }
    fields["actor"] = "innocent-bystander"
    new_hash = entry_hash(seven.prev_hash, fields)
    tamper(log.path, "UPDATE audit SET actor=?, hash=? WHERE seq=7", params=("innocent-bystander", new_hash))
    result = log.verify()
    assert (result.ok, result.first_broken, result.checked) == (False, 8, 7)
    assert result.problem == "entry 8: prev_hash does not match entry 7"


def test_triggers_refuse_update_and_delete(log):
    fill(log, 3)
    with closing(sqlite3.connect(str(log.path), isolation_level=None)) as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only: UPDATE refused"):
            db.execute("UPDATE audit SET actor='x' WHERE seq=2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only: DELETE refused"):
            db.execute("DELETE FROM audit")
    assert log.verify().checked == 3


def test_reopening_restores_dropped_triggers(tmp_path):
    path = tmp_path / "audit.db"
    log = AuditLog(path)
    fill(log, 1)
    log.close()
    tamper(path)  # drops the triggers
    with closing(sqlite3.connect(str(path))) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE type='trigger'").fetchone() == (0,)
    AuditLog(path).close()
    with closing(sqlite3.connect(str(path))) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("DELETE FROM audit")


def test_unmask_needs_a_reason(log):
    for reason in ("", "   "):
        with pytest.raises(ValueError, match="'unmask' needs a reason"):
            log.append("teller-1", "teller", "B001", "unmask", "C1000001", "cli", "success", reason=reason)
    with pytest.raises(ValueError, match="actor"):
        log.append(" ", "teller", "B001", "view", "C1", "cli", "success")
    with pytest.raises(ValueError):
        log.append("teller-1", "teller", "B001", "dance", "C1", "cli", "success")
    with pytest.raises(ValueError):
        log.append("teller-1", "teller", "B001", "view", "C1", "cli", "maybe")
    with pytest.raises(ValueError, match="finite"):
        log.append("teller-1", "teller", "B001", "view", "C1", "cli", "success", at=float("nan"))
    with pytest.raises(TypeError, match="'object' must be a str"):
        log.append("teller-1", "teller", "B001", "view", 110101199003071234, "cli", "success")
    assert list(log.entries()) == []
    log.append("teller-1", "teller", "B001", "unmask", "C1000001", "cli", "success", reason="customer asked")
    assert log.verify().checked == 1


def test_id_and_mobile_numbers_are_stored_masked(log):
    cases = {
        "110101199003071234": "**************1234",
        "11010119900307123X": "**************123X",
        "13812345678": "138****5678",
        "id:110101199003071234/tel 13812345678": "id:**************1234/tel 138****5678",
        "C1000001": "C1000001",
        "E28011606000020916061234": "E28011606000020916061234",  # a 24-hex EPC is not an ID number
        "300000000000000000001234": "300000000000000000001234",  # nor is an all-digit one
        "1381234567": "1381234567",  # 10 digits: not a mobile number
    }
    for raw, stored in cases.items():
        entry = log.append(
            "teller-1", "teller", "B001", "lookup", raw, "cli", "success", reason=f"asked {raw}"
        )
        assert (entry.object, entry.reason) == (stored, f"asked {stored}")
    assert [e.object for e in log.entries()] == list(cases.values())
    raw_file = log.path.read_bytes() + Path(str(log.path) + "-wal").read_bytes()
    assert b"110101199003071234" not in raw_file and b"13812345678" not in raw_file
    assert "13812345678" not in repr(list(log.entries()))
    assert log.verify().ok


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from vipsense.audit import AuditLog
    path, actor, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    log = AuditLog(path)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    for i in range(200):
        log.append(actor, "service", "B001", "view", f"C{i}", "cli", "success")
        time.sleep(0.0005)  # pacing, like real callers: otherwise one writer can finish in one busy wait
    log.close()
""")


def test_two_processes_appending_at_once_form_one_chain(tmp_path):
    path, go = tmp_path / "audit.db", tmp_path / "go"
    AuditLog(path).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), actor, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for actor in ("writer-a", "writer-b")
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = AuditLog(path)
    try:
        assert log.verify().ok and log.verify().checked == 400
        actors = [e.actor for e in log.entries()]
        assert actors.count("writer-a") == actors.count("writer-b") == 200
        switches = sum(a != b for a, b in itertools.pairwise(actors))
        assert switches >= 2, "the writers ran one after the other: the test proved nothing"
    finally:
        log.close()


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30) | st.sampled_from(
    ["'); DROP TABLE audit;--", "张三", "北京市朝阳支行", "\x00", "Robert'); --", '"\\u0000"']
)
APPEND = st.fixed_dictionaries(
    {
        "actor": TEXT.filter(str.strip),
        "role": TEXT,
        "branch": TEXT,
        "action": st.sampled_from(list(AuditAction)),
        "object": TEXT,
        "source": TEXT,
        "result": st.sampled_from(list(AuditResult)),
        "reason": TEXT.filter(str.strip),
        "at": st.floats(0, 4e9, allow_nan=False),
    }
)
FIELDS = (
    "seq",
    "at",
    "actor",
    "role",
    "branch",
    "action",
    "object",
    "source",
    "reason",
    "result",
    "prev_hash",
    "hash",
)


def flipped(name: str, value, n: int):
    """A different value for a stored field, as an attacker with SQL would write it."""
    if name == "seq":
        return n + 10
    if name == "at":
        return value + 1.0
    if name == "action":
        return next(a.value for a in AuditAction if a.value != value)
    if name == "result":
        return next(r.value for r in AuditResult if r.value != value)
    if name in ("prev_hash", "hash"):
        return ("1" if value[0] == "0" else "0") + value[1:]
    return value + "Δ"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appends=st.lists(APPEND, min_size=1, max_size=8), data=st.data())
def test_any_appends_verify_and_any_single_flip_is_caught_there(appends, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.db"
        log = AuditLog(path, synchronous="OFF")
        try:
            written = [log.append(**kwargs) for kwargs in appends]
            assert log.verify().ok and log.verify().checked == len(appends)
            assert list(log.entries()) == written
            target = data.draw(st.sampled_from(written), label="entry")
            name = data.draw(st.sampled_from(FIELDS), label="field")
            value = getattr(target, name)
            new = flipped(name, getattr(value, "value", value), len(written))
            tamper(path, f"UPDATE audit SET {name}=? WHERE seq=?", params=(new, target.seq))
            result = log.verify()
            assert (result.ok, result.first_broken) == (False, target.seq), result
            assert result.checked == target.seq - 1
        finally:
            log.close()
