"""Each branch's audit anchors at the centre (issue 14, part 4): every audit chain head a branch
reports is kept, and a head that contradicts them (a rewritten or shortened branch log) is flagged on
the board and audited at the centre; ``vipsense centre anchors`` writes the heads and ``vipsense
audit verify --centre-heads`` holds a branch's log against them.

Through the real ingest (signed HTTP on loopback, :mod:`tests.test_centre_ingest`'s helpers), on
SQLite and a real PostgreSQL cluster; end to end with a branch's real audit log and the centre's web.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from vipsense.centre import anchors, ingest, queries, schema
from vipsense.centre.database import Database
from vipsense.centre.keys import BranchKeys
from vipsense.cli import main
from vipsense.config.profile import load_profile
from vipsense.model import Role
from vipsense.pluginhost import load_host
from vipsense.signing import signed_headers
from vipsense.storage.audit import AuditAction, AuditResult, audit_path, open_audit_log
from vipsense.uplink.heartbeat import AuditHead

from . import test_centre_ingest
from .test_audit import fill, rechain, tamper
from .test_centre_board import KEY
from .test_centre_board import Centre as WebCentre
from .test_centre_ingest import BRANCH, OTHER, Centre, batch, heartbeat, visit

# the ingest's fixtures: a migrated database on both engines, and the ingest serving it on loopback
database = test_centre_ingest.database
centre = test_centre_ingest.centre

REPO = Path(__file__).resolve().parent.parent
H = {n: f"{n:02x}" * 32 for n in range(1, 20)}  #: a distinct 64-hex hash per entry number


KEEP_EVERY = anchors.KEEP_EVERY  #: the real interval, for the test of the thinning itself


@pytest.fixture(autouse=True)
def keep_every_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every head kept, not one in 10 minutes, so a test's few reports each leave one."""
    monkeypatch.setattr(anchors, "KEEP_EVERY", dt.timedelta(0))


def test_a_head_is_kept_once_in_ten_minutes_and_still_catches_a_rewrite(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A branch reports its head every few seconds: the centre keeps one in 10 minutes (144 a day, not
    20,000), and a report that contradicts a kept one is caught all the same."""
    monkeypatch.setattr(anchors, "KEEP_EVERY", KEEP_EVERY)
    assert dt.timedelta(minutes=10) == KEEP_EVERY
    start = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.timezone.utc)
    with database.begin() as conn:
        conn.execute(schema.branches.insert().values(branch_id=BRANCH, name=BRANCH, created_at=start))
        for minute in range(0, 30):  # heads 1..30, one a minute
            seq = minute + 1
            found = anchors.record(
                conn, BRANCH, {"seq": seq, "hash": f"{seq:064x}"}, start + dt.timedelta(minutes=minute)
            )
            assert found is None
    assert [h["seq"] for h in anchors.heads(database, BRANCH)] == [1, 11, 21]
    with database.begin() as conn:
        found = anchors.record(conn, BRANCH, {"seq": 21, "hash": "f" * 64}, start + dt.timedelta(minutes=31))
    assert found is not None and found.kind == anchors.REWRITTEN and found.seq == 21


def _post_head(centre: Centre, seq: int, digest: str, n: int) -> None:
    """Batch ``n`` (visit ``n``, sent after the one before) with the head ``(seq, digest)``."""
    beat = heartbeat(audit_head={"seq": seq, "hash": digest})
    status, answer = centre.post(batch([visit(n)], after=(n - 1, 0), beat=beat, sent_at=time.time() + n))
    assert status == 200, answer


def _heads(database: Database) -> list[tuple[int, str]]:
    return [(h["seq"], h["hash"]) for h in anchors.heads(database, BRANCH)]


def _alarm(database: Database) -> str | None:
    b = schema.branches.c
    with database.begin() as conn:
        return conn.execute(select(b.audit_alarm).where(b.branch_id == BRANCH)).scalar_one()


def _alarms_audited(centre: Centre) -> list[Any]:
    return [e for e in centre.refusals() if e.reason.startswith("audit anchors:")]


def test_each_head_is_kept_once_and_a_rewrite_or_a_shortened_log_is_flagged(centre: Centre) -> None:
    _post_head(centre, 5, H[5], 1)
    _post_head(centre, 5, H[5], 2)  # the same head again: nothing new
    _post_head(centre, 9, H[9], 3)
    assert _heads(centre.database) == [(5, H[5]), (9, H[9])]
    assert _alarm(centre.database) is None and _alarms_audited(centre) == []
    # a replay of an earlier batch is not taken as a heartbeat, so it cannot look like a shorter log
    beat = heartbeat(audit_head={"seq": 5, "hash": H[5]})
    assert centre.post(batch([visit(1)], beat=beat, sent_at=time.time() + 1))[0] == 200
    assert _alarm(centre.database) is None

    # entry 9 again with another hash: rewritten; the held head is kept, the new one is not
    _post_head(centre, 9, H[19], 4)
    assert _heads(centre.database) == [(5, H[5]), (9, H[9])]
    alarm = _alarm(centre.database)
    assert alarm is not None and alarm.startswith("audit entry 9 differs from what the centre recorded on ")
    audited = _alarms_audited(centre)
    assert len(audited) == 1 and audited[0].branch == BRANCH and audited[0].result == AuditResult.ERROR
    _post_head(centre, 9, H[19], 5)  # the same broken head every few seconds: audited once
    assert len(_alarms_audited(centre)) == 1

    # a head below one held: shortened
    _post_head(centre, 7, H[7], 6)
    alarm = _alarm(centre.database)
    assert alarm is not None and "shorter than entry 9" in alarm
    assert len(_alarms_audited(centre)) == 2 and "shorter than entry 9" in _alarms_audited(centre)[1].reason
    assert _heads(centre.database) == [(5, H[5]), (9, H[9])]
    rows = {r.branch_id: r for r in queries.board(centre.database, dt.datetime.now(dt.timezone.utc))}
    assert rows[BRANCH].audit_alarm == alarm and rows[BRANCH].as_dict()["audit_alarm"] == alarm
    assert rows[OTHER].audit_alarm is None


def test_a_malformed_head_is_refused_and_nothing_kept(centre: Centre) -> None:
    """The ingest's parser checks a head before anything is written."""
    beat = heartbeat(audit_head={"seq": "9", "hash": H[9]})
    status, answer = centre.post(batch([visit(1)], beat=beat))
    assert status == 400 and answer["code"] == "bad_request", answer
    assert _heads(centre.database) == []


# -- end to end: a branch's real audit log, the centre's web, the two commands -------------------------


class Branch:
    """The demo branch's profile on a data directory of its own, and its audit log's head."""

    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "branch"
        self.profile = load_profile(REPO / "profiles" / "demo.yaml", load_host(), data_dir=self.data)
        self.path = audit_path(self.profile)

    def audit(self, n: int, start: float) -> None:
        log = open_audit_log(self.profile)
        try:
            fill(log, n, start)
        finally:
            log.close()

    def head(self) -> dict[str, Any]:
        reader = AuditHead(self.path)
        try:
            found = reader()
        finally:
            reader.close()
        assert found is not None
        return found

    def verify(self, heads: Path) -> int:
        argv = ["audit", "verify", str(REPO / "profiles" / "demo.yaml"), "--data-dir", str(self.data)]
        return main([*argv, "--centre-heads", str(heads)])


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebCentre]:
    (tmp_path / "centre").mkdir()
    c = WebCentre(tmp_path / "centre")
    try:
        c.ctx.keys = BranchKeys(c.db, KEY)
        c.account("zongbu", Role.HEAD_OFFICE)
        yield c
    finally:
        c.close()


def _report(web: WebCentre, key: str, head: dict[str, Any], n: int) -> None:
    """Batch ``n`` from the branch, signed with its key, carrying its audit head."""
    body = json.dumps(
        batch([visit(n)], after=(n - 1, 0), beat=heartbeat(audit_head=head), sent_at=time.time() + n)
    ).encode()
    headers = {"Content-Type": "application/json", "X-Vipsense-Branch": BRANCH}
    headers |= signed_headers(key.encode("utf-8"), body)
    conn = http.client.HTTPConnection("127.0.0.1", web.server.server_port, timeout=30)
    try:
        conn.request("POST", "/api/v1/ingest", body, headers)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
    finally:
        conn.close()


def test_a_rewritten_branch_log_is_caught_by_the_board_and_by_verify(
    web: WebCentre, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = web.ctx.keys.add(BRANCH, "陆家嘴支行")
    branch = Branch(tmp_path)
    branch.audit(4, 1_796_000_000.0)
    first = branch.head()
    _report(web, key, first, 1)
    branch.audit(3, 1_796_000_100.0)
    second = branch.head()
    assert second["seq"] > first["seq"]
    _report(web, key, second, 2)

    centre_argv = ["centre", "anchors", str(tmp_path / "centre" / "centre.yaml")]
    centre_argv += ["--data-dir", str(tmp_path / "centre" / "data")]
    heads = tmp_path / "heads.jsonl"
    assert main([*centre_argv, BRANCH, "--out", str(heads)]) == 0
    lines = [json.loads(line) for line in heads.read_text(encoding="utf-8").splitlines()]
    assert [(h["seq"], h["hash"]) for h in lines] == [
        (first["seq"], first["hash"]),
        (second["seq"], second["hash"]),
    ]
    assert all(abs(h["reported_at"] - time.time()) < 60 for h in lines)
    exports = [e for e in web.entries(AuditAction.EXPORT) if "audit chain heads" in e.object]
    assert len(exports) == 1 and exports[0].reason == "2 heads"
    assert main([*centre_argv, "nowhere", "--out", str(tmp_path / "x.jsonl")]) != 0
    capsys.readouterr()

    # the untouched log holds every head the centre recorded
    assert branch.verify(heads) == 0
    assert "all 2 audit chain heads the centre recorded are in the log" in capsys.readouterr().out

    # someone with the branch's machine (and so its key) edits entry 2 and recomputes the chain: the
    # log verifies by itself, but not against the centre's heads
    rechain(branch.path, 2, _branch_key(branch), {"actor": "innocent-bystander"})
    assert branch.verify(heads) == 1
    err = capsys.readouterr().err
    assert f"entry {first['seq']} differs from what the centre recorded on " in err, err
    assert "(the log was rewritten after it was reported)" in err

    # its next report carries the rewritten head: the board says so, and the centre audited it
    _report(web, key, branch.head(), 3)
    s = web.session("zongbu")
    page = s.get(web.url + "/board", timeout=10)
    assert page.status_code == 200 and "审计日志被改写？" in page.text
    assert 'class="audit-alarm warn"' in page.text
    data = {b["branch_id"]: b for b in s.get(web.url + "/api/board", timeout=10).json()["branches"]}
    assert data[BRANCH]["audit_alarm"].startswith(f"audit entry {second['seq']} differs")
    assert data[BRANCH]["audit_alarm_text"] == "审计日志被改写？"
    alarms = [e for e in web.entries(AuditAction.INGEST) if e.reason.startswith("audit anchors:")]
    assert len(alarms) == 1 and alarms[0].branch == BRANCH


def test_a_shortened_branch_log_is_named_by_verify(
    web: WebCentre, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = web.ctx.keys.add(BRANCH, "陆家嘴支行")
    branch = Branch(tmp_path)
    branch.audit(5, 1_796_000_000.0)
    head = branch.head()
    _report(web, key, head, 1)
    heads = tmp_path / "heads.jsonl"
    heads.write_text("".join(json.dumps(h) + "\n" for h in anchors.heads(web.db, BRANCH)), encoding="utf-8")
    tamper(branch.path, f"DELETE FROM audit WHERE seq > {head['seq'] - 2}")
    assert branch.verify(heads) == 1
    err = capsys.readouterr().err
    assert f"entry {head['seq']} is missing, but the centre recorded it on " in err, err
    # a file that is not heads is refused, naming the line
    heads.write_text('{"seq": 1, "hash": "ab"}\n', encoding="utf-8")
    assert branch.verify(heads) != 0
    assert f"{heads}:1: not an audit chain head" in capsys.readouterr().err


def _branch_key(branch: Branch) -> bytes:
    from vipsense.storage.audit import profile_keys

    return profile_keys(branch.profile, create=False)[-1].secret


def test_migration_5_adds_the_heads_to_a_version_4_database(database: Database) -> None:
    """Check, then alter: a database at version 4 gets the table and the alarm columns, a second
    migration changes nothing, and the ingest then keeps heads."""
    from vipsense.centre.migrations import migrate

    with database.begin() as conn:
        conn.exec_driver_sql("DROP TABLE audit_heads")
        for column in schema.ADDED_IN_5["branches"]():
            conn.exec_driver_sql(f"ALTER TABLE branches DROP COLUMN {column.name}")
        conn.exec_driver_sql("DELETE FROM schema_version WHERE version >= 5")
    changed = migrate(database)
    assert {"audit_heads", "branches.audit_alarm", "branches.audit_alarm_at"} <= set(changed)
    assert migrate(database) == []
    BranchKeys(database, KEY).add(BRANCH, "x")
    body = json.dumps(batch([visit(1)], beat=heartbeat(audit_head={"seq": 3, "hash": H[3]}))).encode()
    ingest.apply_batch(database, BRANCH, ingest.parse_batch(body))
    assert _heads(database) == [(3, H[3])]
