"""The audit log is append-only, tamper-evident, and names the first broken entry precisely.

Tampering is done the way an attacker would: a raw sqlite3 connection to the real file, dropping the
triggers first where needed, and recomputing the chain where the attack needs it.  Concurrency uses
two real OS processes on the same file.  The chain is keyed (HMAC-SHA256), old plain logs still
verify, anchors catch a truncated tail, and a damaged file is one clear line.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from contextlib import closing
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vipsense.storage import auditanchors
from vipsense.storage.audit import (
    GENESIS_HASH,
    HASHED_FIELDS,
    SCHEMA,
    AuditAction,
    AuditKey,
    AuditKeyError,
    AuditLog,
    AuditResult,
    anchor_policy,
    audit_path,
    canonical_bytes,
    data_dir_key,
    entry_hash,
    open_audit_log,
    profile_keys,
    verify_file,
)
from vipsense.storage.auditanchors import AnchorPolicy

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


def test_an_auditor_can_re_verify_with_only_hmac_hashlib_and_json(log):
    """The documented canonical encoding, re-implemented here independently of the module: the key is
    the text of the data directory's key file (no audit_key in a profile here)."""
    fill(log, 5)
    log.append("张三", "主管", "北京分行", "unmask", "C1000001", "cli", "denied", reason="客户要求核实身份")
    key = (log.path.parent / "audit.key").read_text().strip().encode("utf-8")
    assert (log.path.parent / "audit.key").stat().st_mode & 0o777 == 0o600
    with closing(sqlite3.connect(str(log.path))) as db:
        cursor = db.execute("SELECT * FROM audit ORDER BY seq")
        names = [column[0] for column in cursor.description]
        prev = "0" * 64
        for values in cursor:
            row = dict(zip(names, values, strict=True))
            body = {k: v for k, v in row.items() if k not in ("prev_hash", "hash")}
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            assert row["prev_hash"] == prev
            message = prev.encode() + canonical.encode("utf-8")
            assert row["hash"] == hmac.new(key, message, "sha256").hexdigest()
            assert row["hash"] != hashlib.sha256(message).hexdigest()
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
    """An insider who holds the key edits entry 7 and fixes its hash, but not entry 8's prev_hash."""
    fill(log, 10)
    seven = next(e for e in log.entries() if e.seq == 7)
    fields = {
        name: getattr(seven, name)
        for name in ("seq", "at", "actor", "role", "branch", "action", "object", "source", "reason", "result")
    }
    fields["actor"] = "innocent-bystander"
    new_hash = entry_hash(seven.prev_hash, fields, log.key.secret)
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
        "1381234567": "******4567",  # 10 digits: no mobile, but a landline with its area code
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
    from vipsense.storage.audit import AuditLog
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# -- the key: an attacker who can write the file cannot rechain it (pentest, point 5) ------------------

SECRET = "9f1c2b7e4d3a5f6e8b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a"  #: a test key, 64 characters
ROW = (*HASHED_FIELDS, "prev_hash", "hash")


def rechain(
    path: Path, first: int, key: bytes | None, edit: dict | None = None, last: int | None = None
) -> None:
    """What the penetration test did: edit entry ``first`` and recompute every hash from it on (to
    ``last``), with ``key`` (None: the plain SHA-256 any tool computes)."""
    with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        prev = GENESIS_HASH
        for values in db.execute(f"SELECT {', '.join(ROW)} FROM audit ORDER BY seq").fetchall():
            row = dict(zip(ROW, values, strict=True))
            if row["seq"] < first or (last is not None and row["seq"] > last):
                prev = row["hash"]
                continue
            if row["seq"] == first:
                row |= edit or {}
            row["prev_hash"], row["hash"] = prev, entry_hash(prev, row, key)
            sets = ", ".join(f"{name}=?" for name in ROW if name != "seq")
            db.execute(
                f"UPDATE audit SET {sets} WHERE seq=?", [*(row[n] for n in ROW if n != "seq"), row["seq"]]
            )
            prev = row["hash"]


def legacy_log(path: Path, n: int) -> None:
    """A log as vipsense wrote it before keyed chaining: the same table, plain SHA-256 hashes."""
    with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
        db.executescript(SCHEMA)
        prev = GENESIS_HASH
        for seq in range(1, n + 1):
            fields = dict(seq=seq, at=1_700_000_000.0 + seq, actor=f"old-{seq}", role="teller", branch="B001")
            fields |= dict(action="view", object=f"C{seq}", source="cli", reason="", result="success")
            digest = hashlib.sha256(prev.encode() + canonical_bytes(fields)).hexdigest()
            db.execute(
                f"INSERT INTO audit ({', '.join(ROW)}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [*fields.values(), prev, digest],
            )
            prev = digest


def test_an_edit_with_the_whole_chain_recomputed_is_caught(log):
    """ATTACK (pentest point 5): edit entry 12, recompute the chain from there with SHA-256 as the
    documentation used to say.  Before the chain was keyed, verify() passed."""
    fill(log, 30)
    rechain(log.path, 12, None, {"actor": "someone-else", "result": "success"})
    result = log.verify()
    assert (result.ok, result.first_broken, result.checked) == (False, 12, 11)
    assert result.problem == "entry 12: hash does not match its contents (edited?)"


def test_a_chain_recomputed_with_a_guessed_key_is_caught(log):
    fill(log, 10)
    rechain(log.path, 1, b"0" * 64, {"object": "C0"})
    result = log.verify()
    assert (result.ok, result.first_broken, result.checked) == (False, 1, 0)
    assert "under any audit key this check has" in result.problem and log.key.id in result.problem


def test_an_old_plain_log_still_verifies_and_the_switch_to_the_key_is_recorded(tmp_path):
    path = tmp_path / "audit.sqlite3"
    legacy_log(path, 5)
    log = AuditLog(path)
    try:
        before = log.verify()
        assert (before.ok, before.checked, before.keyed_from) == (True, 5, None)
        assert "not keyed" in before.notes[0]
        entry = log.append("teller-1", "teller", "B001", "view", "C9", "cli", "success")
        assert entry.seq == 7  # entry 6 records the switch
        switch = list(log.entries())[5]
        assert (switch.actor, switch.action, switch.object) == (
            "system:audit",
            AuditAction.CONFIG_CHANGE,
            "audit chain",
        )
        assert log.key.id in switch.reason and "plain SHA-256" in switch.reason
        after = log.verify()
        assert (after.ok, after.checked, after.keyed_from, after.key_ids, after.notes) == (
            True, 7, 6, (log.key.id,), ()
        )  # fmt: skip
    finally:
        log.close()
    # The plain part is held by the first keyed entry: recomputing it breaks the link to entry 6.
    rechain(path, 3, None, {"actor": "nobody"}, last=5)
    result = AuditLog(path).verify()
    assert (result.ok, result.first_broken) == (False, 6)
    assert result.problem == "entry 6: prev_hash does not match entry 5"


def test_a_plain_entry_after_keyed_ones_is_caught(log):
    """No downgrade: once the chain is keyed, an entry hashed without the key is refused."""
    fill(log, 4)
    last = list(log.entries())[-1]
    fields = dict(seq=5, at=1.0, actor="x", role="", branch="B001", action="view", object="C1", source="s")
    fields |= dict(reason="", result="success")
    with closing(sqlite3.connect(str(log.path), isolation_level=None)) as db:
        db.execute(
            f"INSERT INTO audit ({', '.join(ROW)}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [*fields.values(), last.hash, entry_hash(last.hash, fields)],
        )
    result = log.verify()
    assert (result.ok, result.first_broken) == (False, 5)


def test_a_forged_switch_to_another_key_is_caught_and_named(log):
    """An attacker who writes a switch entry under a key of their own does not get a verified chain."""
    fill(log, 3)
    last = list(log.entries())[-1]
    theirs = AuditKey(b"a" * 64)
    fields = dict(seq=4, at=2.0, actor="system:audit", role="system", branch="B001", action="config_change")
    fields |= dict(object="audit chain", source="vipsense", result="success")
    fields["reason"] = f"chained with HMAC-SHA256 under key {theirs.id} from this entry on; before it ..."
    with closing(sqlite3.connect(str(log.path), isolation_level=None)) as db:
        db.execute(
            f"INSERT INTO audit ({', '.join(ROW)}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [*(fields[n] for n in HASHED_FIELDS), last.hash, entry_hash(last.hash, fields, theirs.secret)],
        )
    result = log.verify()
    assert (result.ok, result.first_broken) == (False, 4)
    assert f"switches the chain to key {theirs.id}, which this check does not have" in result.problem


def test_a_writer_with_another_key_refuses_to_append(tmp_path):
    path = tmp_path / "audit.sqlite3"
    log = AuditLog(path)
    fill(log, 2)
    log.close()
    other = AuditLog(path, keys=[AuditKey(SECRET.encode(), "privacy.audit_key")])
    try:
        with pytest.raises(
            AuditKeyError, match=r"newest entry \(2\) is not chained with this branch's audit key"
        ):
            other.append("x", "r", "B001", "view", "C1", "cli", "success")
        assert [e.seq for e in other.entries()] == [1, 2]
    finally:
        other.close()


# -- the branch's key from its profile, and the handover from the data directory's key ------------------


def branch_profile(write_profile, tmp_path: Path, privacy: str = "", secret: str | None = None):
    from vipsense.config.profile import load_profile
    from vipsense.pluginhost import load_host

    from .conftest import BASE_PROFILE

    if secret is not None:
        (tmp_path / "secrets.yaml").write_text(f"audit_key: {secret}\n", encoding="utf-8")
    text = BASE_PROFILE + (f"privacy: {{{privacy}}}\n" if privacy else "")
    return load_profile(write_profile(text), load_host(), data_dir=tmp_path / "data")


def test_a_branch_that_names_its_key_later_hands_over_and_the_cli_verifies(write_profile, tmp_path, capsys):
    from vipsense.cli import main

    before = branch_profile(write_profile, tmp_path)
    log = open_audit_log(before)
    fill(log, 3)
    log.close()
    after = branch_profile(write_profile, tmp_path, "audit_key: !secret audit_key", SECRET)
    log = open_audit_log(after)
    fill(log, 2)
    log.close()
    result = verify_file(audit_path(after), profile_keys(after, create=False), anchor_policy(after))
    own = data_dir_key(after.data_dir, create=False)
    assert (result.ok, result.checked, result.keyed_from) == (True, 6, 1)
    assert result.key_ids == (own.id, AuditKey(SECRET.encode()).id)
    assert main(["audit", "verify", str(tmp_path / "branch.yaml"), "--data-dir", str(tmp_path / "data")]) == 0
    assert capsys.readouterr().out == f"{audit_path(after)}: 6 entries, hash chain intact\n"
    # A verify with another key (a secrets file that does not belong to this branch) says so.
    (tmp_path / "secrets.yaml").write_text(f"audit_key: {'e' * 64}\n", encoding="utf-8")
    assert main(["audit", "verify", str(tmp_path / "branch.yaml"), "--data-dir", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(
        f"{audit_path(after)}: BROKEN after 3 good entries: entry 4 switches the chain to key"
    )
    assert SECRET not in err and "e" * 64 not in err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (f'audit_key: "{SECRET}"', "the audit key is a secret: write !secret audit_key"),
        ("audit_key: !secret audit_key", "the audit key needs at least 32 characters"),
        ("audit_anchor_every: 0", "must be greater than 0"),
    ],
)
def test_audit_settings_are_checked(write_profile, tmp_path, setting, message):
    from vipsense.config.errors import ProfileError

    with pytest.raises(ProfileError) as caught:
        branch_profile(write_profile, tmp_path, setting, "short")
    assert (
        message in str(caught.value) and "short" not in str(caught.value) and SECRET not in str(caught.value)
    )


def test_check_notes_a_profile_without_its_own_key_or_anchors(write_profile, tmp_path):
    """A key or anchors kept beside the log they protect is said by ``vipsense check`` (a note: the
    demo runs so, and every other command stays quiet)."""
    from vipsense.config.profile import audit_note

    (tmp_path / "worm").mkdir()
    cases = {
        "": "the audit log's key and anchors are kept in the data directory",
        "audit_key: !secret audit_key": "no privacy.audit_anchors: the audit log's anchors go to",
        "audit_anchors: worm": "no privacy.audit_key: the audit log is chained with a key kept in the data",
        "audit_key: !secret audit_key, audit_anchors: worm": None,
    }
    for setting, expected in cases.items():
        profile = branch_profile(write_profile, tmp_path, setting, SECRET)
        assert [w for w in profile.warnings if "audit" in w.message] == [], setting
        note = audit_note(profile.privacy, profile.data_dir)
        assert (note is None) if expected is None else note.startswith(expected), (setting, note)
        if "worm" in setting:  # relative to the profile's own file
            assert profile.privacy.audit_anchors == str(tmp_path / "worm")


# -- anchors: a truncated tail is caught against the last one ----------------------------------------


def anchored(tmp_path: Path, every: int = 10, seen: list | None = None) -> AuditLog:
    policy = AnchorPolicy(tmp_path / "worm" / "B001.audit-anchors.jsonl", every=every, interval=3600.0)
    return AuditLog(
        tmp_path / "audit.sqlite3", anchors=policy, on_anchor=None if seen is None else seen.append
    )


def test_anchors_are_published_signed_every_n_entries_and_at_close(tmp_path):
    seen: list = []
    log = anchored(tmp_path, every=10, seen=seen)
    fill(log, 25)
    assert [a.count for a in seen] == [1, 11, 21]  # the first entry at once, then every 10
    log.close()
    assert [a.count for a in seen] == [1, 11, 21, 25]  # and what is left at close
    lines = auditanchors.read(log.anchors.file)
    assert [a for _, a in lines] == seen
    heads = {e.seq: e.hash for e in AuditLog(tmp_path / "audit.sqlite3").entries()}
    for anchor in seen:
        assert anchor.head == heads[anchor.count] and anchor.key == log.key.id
        assert anchor.valid(log.key.secret) and not anchor.valid(b"x" * 64)
    assert log.key.secret.decode() not in log.anchors.file.read_text()
    assert (
        AuditLog(tmp_path / "audit.sqlite3", anchors=log.anchors)
        .verify()
        .anchor.startswith(f"entry 25 matches anchor {log.anchors.file}:4 of ")
    )


def test_an_anchor_is_due_by_time_too(tmp_path):
    log = anchored(tmp_path, every=1000)
    try:
        fill(log, 5)
        log.anchor_if_due()
        assert [a.count for _, a in auditanchors.read(log.anchors.file)] == [1]
        log.anchors = attrs.evolve(log.anchors, interval=0.0)  # the interval has passed
        log.anchor_if_due()
        assert [a.count for _, a in auditanchors.read(log.anchors.file)] == [1, 5]
    finally:
        log.close()


def test_a_truncated_tail_is_caught_against_the_last_anchor(tmp_path):
    """ATTACK (pentest point 5): cut the last entries off.  The shorter chain is still valid; before
    anchors, verify() passed."""
    log = anchored(tmp_path, every=10)
    fill(log, 30)
    log.close()
    tamper(log.path, "DELETE FROM audit WHERE seq > 24")
    result = AuditLog(log.path, anchors=log.anchors).verify()
    assert (result.ok, result.first_broken, result.checked) == (False, 25, 24)
    assert result.problem.startswith(
        f"the log ends at entry 24, but anchor {log.anchors.file}:4 of "
    ) and result.problem.endswith("says it had 30 entries: entries 25..30 were cut off the end")


def test_a_log_rewritten_wholesale_without_the_key_does_not_match_its_anchors(tmp_path):
    """Rewrite every entry as a plain (pre-key) chain: it walks, but the signed anchors expose it."""
    log = anchored(tmp_path, every=10)
    fill(log, 20)
    log.close()
    rechain(log.path, 1, None, {"actor": "nobody"})
    result = AuditLog(log.path, anchors=log.anchors).verify()
    assert (result.ok, result.first_broken) == (False, 1)
    assert result.problem.startswith(f"entry 1 does not match anchor {log.anchors.file}:1 of ")


def test_an_altered_anchor_is_caught(tmp_path):
    log = anchored(tmp_path, every=10)
    fill(log, 20)
    log.close()
    lines = log.anchors.file.read_text().splitlines()
    lines[-1] = lines[-1].replace('"count":20', '"count":19')
    log.anchors.file.write_text("\n".join(lines) + "\n")
    result = AuditLog(log.path, anchors=log.anchors).verify()
    assert not result.ok and result.problem == (
        f"anchor {log.anchors.file}:3: its signature does not match"
        " (altered, or not signed with the audit key)"
    )


def test_the_anchor_hook_reaches_observing_plugins(write_profile, tmp_path):
    import vipsense
    from vipsense.pluginhost import load_host

    class Uplink:
        def __init__(self) -> None:
            self.shipped: list[dict] = []

        @vipsense.hookimpl
        def vipsense_audit_anchor(self, anchor):
            self.shipped.append(anchor.as_dict())

    uplink, host = Uplink(), load_host()
    host.add(uplink, "head-office-uplink")
    profile = branch_profile(
        write_profile, tmp_path, "audit_key: !secret audit_key, audit_anchors: worm", SECRET
    )
    log = open_audit_log(profile, on_anchor=lambda a: host.hook.vipsense_audit_anchor(anchor=a))
    fill(log, 3)
    log.close()
    assert [a["count"] for a in uplink.shipped] == [1, 3]
    assert {a["branch"] for a in uplink.shipped} == {"B001"} and SECRET not in json.dumps(uplink.shipped)
    assert anchor_policy(profile).file == tmp_path / "worm" / "test-branch.audit-anchors.jsonl"
    assert [
        json.loads(line) for line in anchor_policy(profile).file.read_text().splitlines()
    ] == uplink.shipped


# -- a damaged file: one clear line, never a traceback -------------------------------------------------


@pytest.mark.parametrize("where", ["header", "page"])
def test_verify_on_a_physically_damaged_file_prints_one_line(tmp_path, capsys, where):
    """ATTACK (pentest point 5): ``vipsense audit verify`` on a corrupt file printed a DatabaseError
    traceback."""
    from vipsense.cli import main

    log = AuditLog(tmp_path / "audit.sqlite3")
    fill(log, 400)
    log.close()
    with open(log.path, "r+b") as f:
        if where == "header":
            f.write(b"this is not an sqlite file at all" * 3)
        else:
            f.seek(4096 * 3)
            f.write(os.urandom(4096 * 4))
    code = main(["audit", "verify", str(REPO / "profiles" / "demo.yaml"), "--data-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if "warning" not in line]
    assert code == 1 and out == ""
    assert len(lines) == 1 and lines[0].startswith(f"{log.path}: "), err
    assert "Traceback" not in err and "DatabaseError" not in err
    assert "cannot read the audit log" in lines[0] or "BROKEN" in lines[0]
