"""The centre's ingest (issue 14, parts 3 and 6): real signed HTTP on loopback into a real database.

Each test runs on SQLite and, with the ``postgres`` marker, on a real PostgreSQL cluster
(``tests/postgres.py``): a server (werkzeug, threaded) serves :func:`create_ingest_app` on 127.0.0.1,
and batches are posted with :func:`vipsense.signing.signed_headers`, as a branch does.
"""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from vipsense.centre import ingest, schema
from vipsense.centre.database import Database, PoolSettings, open_database
from vipsense.centre.keys import BranchKeyError, BranchKeys
from vipsense.centre.migrations import migrate
from vipsense.centreweb.ingest_api import create_ingest_app
from vipsense.signing import signed_headers
from vipsense.storage.audit import AuditLog
from vipsense.web.server import Server
from vipsense.web.settings import WebSettings

from .postgres import Cluster, binaries, new_database

BRANCH = "sh-lujiazui"
OTHER = "bj-guomao"
T0 = 1_796_000_000.0  # 2026-11-29 UTC
TABLES = ("visits", "deliveries", "sightings", "acknowledgements", "device_status")


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'centre.sqlite3'}"
    else:
        url = new_database(request.getfixturevalue("postgres_url"))
    db = open_database(url)
    try:
        migrate(db)
        yield db
    finally:
        db.close()


class Centre:
    """A running ingest on loopback: its database, keys, audit log and URL."""

    def __init__(self, database: Database, tmp_path: Path, server: str = "werkzeug") -> None:
        self.database = database
        self.centre_key = secrets.token_urlsafe(32)
        self.keys = BranchKeys(database, self.centre_key)
        self.audit = AuditLog(tmp_path / "audit" / "audit.sqlite3")
        self.branch_key = self.keys.add(BRANCH, "陆家嘴支行")
        self.other_key = self.keys.add(OTHER, "国贸支行", "Asia/Shanghai")
        app = create_ingest_app(database, self.audit, self.keys)
        self.cheroot: Server | None = None
        if server == "cheroot":  # what `vipsense centre serve` runs: the gate, then cheroot's threads
            self.cheroot = Server(WebSettings(), "127.0.0.1", 0, app, None, body_limit=ingest.MAX_BODY)
            self.cheroot.max_request_body_size = 0  # the ingest answers an oversize batch itself
            self.cheroot.prepare()
            assert self.cheroot.socket is not None
            self.port = self.cheroot.socket.getsockname()[1]
            self.thread = threading.Thread(target=self.cheroot.serve, daemon=True)
        else:
            self.server = make_server("127.0.0.1", 0, app, threaded=True)
            self.port = self.server.server_port
            self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.cheroot is not None:
            self.cheroot.stop()
        else:
            self.server.shutdown()
            self.server.server_close()
        self.thread.join(5)
        self.audit.close()

    def post(
        self,
        body: bytes | dict[str, Any],
        branch: str = BRANCH,
        key: str | None = None,
        now: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        key = self.branch_key if key is None else key
        sent = {"Content-Type": "application/json", "X-Vipsense-Branch": branch}
        sent |= signed_headers(key.encode("utf-8"), raw, now)
        sent |= headers or {}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("POST", "/api/v1/ingest", raw, sent)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def counts(self) -> dict[str, int]:
        with self.database.begin() as conn:
            found = {
                t: conn.execute(select(func.count()).select_from(schema.metadata.tables[t])).scalar_one()
                for t in TABLES
            }
            b = schema.branches
            for row in conn.execute(select(b.c.branch_id, b.c.visits_position, b.c.deliveries_position)):
                found[f"{row[0]}.position"] = (row[1], row[2])  # type: ignore[assignment]
        return found

    def refusals(self) -> list[Any]:
        return [e for e in self.audit.entries() if e.action == "ingest"]


@pytest.fixture
def centre(database: Database, tmp_path: Path) -> Iterator[Centre]:
    running = Centre(database, tmp_path)
    try:
        yield running
    finally:
        running.stop()


# -- batches -------------------------------------------------------------------------------------------


def visit(n: int, seq: int | None = None, **changes: Any) -> dict[str, Any]:
    row = {
        "visit_id": f"v{n:06d}", "seq": seq or n, "arrived_at": T0 + n, "kind": "arrival",
        "epc": f"E200{n:020X}", "customer_no": f"C{n:05d}", "tier": "gold", "reason": None,
        "reader_id": "door-1", "read_count": 3, "peak_rssi": -52.5, "departed_at": None,
        "acknowledged_at": None, "acknowledged_by": None,
    }  # fmt: skip
    return row | changes


def delivery(n: int, seq: int | None = None, **changes: Any) -> dict[str, Any]:
    row = {
        "delivery_key": f"wecom:v{n:06d}:mgr-li", "seq": seq or n, "created_at": T0 + n + 0.5,
        "visit_id": f"v{n:06d}", "notifier_id": "wecom", "recipient_id": "mgr-li", "state": "delivered",
        "attempts": 1, "delivered_at": T0 + n + 1, "acknowledged_at": None, "finished_at": T0 + n + 1,
        "escalated_from": None,
    }  # fmt: skip
    return row | changes


def heartbeat(at: float | None = None, **changes: Any) -> dict[str, Any]:
    beat = {
        "at": at or time.time(),
        "devices": [
            {"kind": "reader", "id": "door-1", "state": "ok", "reason": None},
            {"kind": "notifier", "id": "wecom", "state": "degraded", "reason": "slow answers"},
        ],
        "audit_head": {"seq": 42, "hash": "ab" * 32},
        "backlog": {"visits": 0, "deliveries": 0},
        "version": "0.1.0",
    }
    return beat | changes


def batch(
    visits: list[dict[str, Any]],
    deliveries: list[dict[str, Any]] = (),  # type: ignore[assignment]
    after: tuple[int, int] = (0, 0),
    upto: tuple[int, int] | None = None,
    branch: str = BRANCH,
    sent_at: float | None = None,
    beat: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if upto is None:
        upto = (
            max([r["seq"] for r in visits], default=after[0]),
            max([r["seq"] for r in deliveries], default=after[1]),
        )
    return {
        "format": 1,
        "branch_id": branch,
        "sent_at": time.time() if sent_at is None else sent_at,
        "streams": {
            "visits": {"after": after[0], "upto": upto[0], "rows": list(visits)},
            "deliveries": {"after": after[1], "upto": upto[1], "rows": list(deliveries)},
        },
        "heartbeat": beat,
    }


def _visit_row(database: Database, visit_id: str, branch: str = BRANCH) -> Any:
    v = schema.visits
    with database.begin() as conn:
        return conn.execute(select(v).where(v.c.branch_id == branch, v.c.visit_id == visit_id)).one()


# -- applying ------------------------------------------------------------------------------------------


def test_a_batch_applies_once_and_its_replay_changes_nothing(centre: Centre) -> None:
    body = batch([visit(n) for n in range(1, 11)], [delivery(n) for n in range(1, 6)], beat=heartbeat())
    status, answer = centre.post(body)
    assert status == 200, answer
    assert answer == {"position": {"visits": 10, "deliveries": 5}, "applied": {"visits": 10, "deliveries": 5}}
    before = centre.counts()
    assert before["visits"] == 10 and before["deliveries"] == 5 and before["sightings"] == 10
    assert before[f"{BRANCH}.position"] == (10, 5) and before[f"{OTHER}.position"] == (0, 0)
    with centre.database.begin() as conn:
        b = schema.branches
        reported = conn.execute(
            select(b.c.reported_at, b.c.last_heartbeat_at).where(b.c.branch_id == BRANCH)
        ).one()

    status, answer = centre.post(body)  # the same batch again (a lost answer, a retry)
    assert status == 200, answer
    assert answer == {"position": {"visits": 10, "deliveries": 5}, "applied": {"visits": 0, "deliveries": 0}}
    assert centre.counts() == before
    with centre.database.begin() as conn:
        again = conn.execute(
            select(b.c.reported_at, b.c.last_heartbeat_at).where(b.c.branch_id == BRANCH)
        ).one()
    assert again == reported  # the replay's heartbeat moved nothing
    row = _visit_row(centre.database, "v000003")
    assert row.customer_no == "C00003" and row.arrived_at.timestamp() == T0 + 3 and row.change_seq == 3


def test_the_same_batch_posted_at_once_applies_once(centre: Centre) -> None:
    """Four copies of one batch at the same moment (a retry racing the first try): the branch's row
    lock lets one apply; the others find it applied."""
    body = batch([visit(n) for n in range(1, 101)], [delivery(n) for n in range(1, 101)])
    answers: list[tuple[int, dict[str, Any]]] = []
    start = threading.Barrier(4)

    def post() -> None:
        start.wait()
        answers.append(centre.post(body))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [status for status, _ in answers] == [200] * 4, answers
    assert sorted(a["applied"]["visits"] for _, a in answers) == [0, 0, 0, 100]
    assert centre.counts()["visits"] == 100 and centre.counts()[f"{BRANCH}.position"] == (100, 100)


def test_a_gap_is_refused_with_the_centres_position_and_nothing_applied(centre: Centre) -> None:
    first = batch([visit(n) for n in range(1, 4)])
    later = batch([visit(n) for n in range(7, 9)], after=(6, 0))
    status, answer = centre.post(later)  # out of order: the centre holds nothing yet
    assert status == 409 and answer["code"] == "conflict"
    assert answer["position"] == {"visits": 0, "deliveries": 0}
    assert "visits after 6 leaves a gap" in answer["error"]
    assert centre.counts()["visits"] == 0
    assert centre.post(first)[0] == 200
    status, answer = centre.post(later)  # still a gap: 3 is held, the batch starts after 6
    assert status == 409 and answer["position"] == {"visits": 3, "deliveries": 0}
    middle = batch([visit(n) for n in range(4, 7)], after=(3, 0))
    assert centre.post(middle)[0] == 200
    status, answer = centre.post(later)
    assert status == 200 and answer["position"]["visits"] == 8
    assert centre.counts()["visits"] == 8


def test_a_newer_state_replaces_the_older_and_acknowledgements_are_derived(centre: Centre) -> None:
    assert centre.post(batch([visit(1), visit(2)], [delivery(1)]))[0] == 200
    # the visit departed and was acknowledged; its delivery acknowledged: sent again, newer seqs
    acked = visit(1, seq=3, departed_at=T0 + 600, acknowledged_at=T0 + 30, acknowledged_by="mgr-wang")
    told = delivery(1, seq=2, state="acknowledged", acknowledged_at=T0 + 20)
    status, answer = centre.post(batch([acked], [told], after=(2, 1)))
    assert status == 200 and answer["applied"] == {"visits": 1, "deliveries": 1}
    row = _visit_row(centre.database, "v000001")
    assert (
        row.departed_at.timestamp() == T0 + 600 and row.acknowledged_by == "mgr-wang" and row.change_seq == 3
    )
    assert row.arrived_at.timestamp() == T0 + 1  # the key's time stays
    a = schema.acknowledgements
    with centre.database.begin() as conn:
        acks = {
            (r.staff_id, r.via, r.delivery_key, r.acknowledged_at.timestamp())
            for r in conn.execute(select(a).where(a.c.visit_id == "v000001"))
        }
        d = schema.deliveries
        state = conn.execute(
            select(d.c.state, d.c.change_seq).where(d.c.delivery_key == "wecom:v000001:mgr-li")
        ).one()
    assert acks == {
        ("mgr-wang", "branch", None, T0 + 30),
        ("mgr-li", "wecom", "wecom:v000001:mgr-li", T0 + 20),
    }
    assert tuple(state) == ("acknowledged", 2)
    # an older state resent (a stream overlapping the position) never undoes the newer one
    stale = batch([visit(1, seq=1), visit(4, seq=4)], after=(0, 1), upto=(4, 2))
    status, answer = centre.post(stale)
    assert status == 200 and answer["applied"]["visits"] == 1  # v4 new; v1's older state skipped
    assert _visit_row(centre.database, "v000001").acknowledged_by == "mgr-wang"


def test_sightings_follow_the_visits(centre: Centre) -> None:
    assert (
        centre.post(batch([visit(1, read_count=2), visit(2, reader_id="door-2", peak_rssi=None)]))[0] == 200
    )
    assert centre.post(batch([visit(1, seq=3, read_count=9)], after=(2, 0)))[0] == 200
    s = schema.sightings
    with centre.database.begin() as conn:
        rows = {(r.epc, r.reader_id, r.read_count, r.peak_rssi) for r in conn.execute(select(s))}
    assert rows == {(visit(1)["epc"], "door-1", 9, -52.5), (visit(2)["epc"], "door-2", 3, None)}


def test_the_heartbeat_updates_devices_and_the_clock_offset(centre: Centre) -> None:
    """A branch clock 4 min 50 s behind (just inside the signature's window) is stored as the offset,
    and its visits keep the times the branch gave them."""
    skew = -290.0
    now = time.time()
    beat = heartbeat(at=now + skew)
    status, _ = centre.post(batch([visit(1)], sent_at=now + skew, beat=beat), now=now + skew)
    assert status == 200
    b, d = schema.branches, schema.device_status
    with centre.database.begin() as conn:
        branch = conn.execute(select(b).where(b.c.branch_id == BRANCH)).one()
        devices = {(r.kind, r.device_id): (r.state, r.reason) for r in conn.execute(select(d))}
    assert branch.clock_offset_s == pytest.approx(skew, abs=5)
    assert json.loads(branch.audit_head) == {"seq": 42, "hash": "ab" * 32}
    assert abs(branch.last_heartbeat_at.timestamp() - now) < 5
    assert (branch.backlog_visits, branch.backlog_deliveries, branch.version) == (0, 0, "0.1.0")
    assert branch.reported_at.timestamp() == pytest.approx(now + skew)
    assert devices == {
        ("reader", "door-1"): ("ok", None),
        ("notifier", "wecom"): ("degraded", "slow answers"),
    }
    assert _visit_row(centre.database, "v000001").arrived_at.timestamp() == T0 + 1
    # the next heartbeat overwrites each device's state
    beat = heartbeat(devices=[{"kind": "notifier", "id": "wecom", "state": "ok", "reason": None}])
    assert centre.post(batch([], after=(1, 0), beat=beat))[0] == 200
    with centre.database.begin() as conn:
        assert conn.execute(select(d.c.state).where(d.c.device_id == "wecom")).scalar_one() == "ok"


# -- refusals (part 6) ---------------------------------------------------------------------------------


def _refused(centre: Centre, status: int, code: str, words: str, got: tuple[int, dict[str, Any]]) -> None:
    assert got[0] == status, got
    assert got[1]["code"] == code and words in got[1]["error"], got


def test_refusals_answer_clearly_write_nothing_and_are_audited(centre: Centre) -> None:
    good = batch([visit(1)])
    raw = json.dumps(good).encode()
    cases: list[tuple[str, tuple[int, dict[str, Any]], int, str, str]] = [
        (
            "another branch's key",
            centre.post(good, key=centre.other_key),
            401,
            "unauthorized",
            "bad signature",
        ),
        # the ingest's window is 15 minutes (ingest_api.FRESHNESS): a replay 16 minutes later is stale
        ("replayed later", centre.post(good, now=time.time() - 960), 401, "unauthorized", "stale message"),
        ("unsigned", _post_unsigned(centre, raw), 401, "unauthorized", "unsigned message"),
        ("malformed JSON", centre.post(b'{"format": 1, "branch_id": '), 400, "bad_request", "not JSON"),
        (
            "a wrong field type",
            centre.post(batch([visit(1, read_count="3")])),
            400,
            "bad_request",
            "visits row 0: read_count must be a whole number",
        ),
        (
            "NaN",
            centre.post(raw.replace(b'"peak_rssi": -52.5', b'"peak_rssi": NaN')),
            400,
            "bad_request",
            "not JSON",
        ),
        (
            "a claimed branch",
            centre.post(batch([visit(1)], branch=OTHER)),
            403,
            "forbidden",
            "says branch bj-guomao",
        ),
        ("an unknown branch", centre.post(good, branch="gz-tianhe"), 403, "forbidden", "no branch gz-tianhe"),
        (
            "a time from 1970",
            centre.post(batch([visit(1, arrived_at=5.0)])),
            400,
            "bad_request",
            "arrived_at",
        ),
    ]
    for name, got, status, code, words in cases:
        assert got[0] == status, (name, got)
        assert got[1]["code"] == code and words in got[1]["error"], (name, got)
    assert centre.counts()["visits"] == 0 and centre.counts()[f"{BRANCH}.position"] == (0, 0)
    entries = centre.refusals()
    assert len(entries) == len(cases)
    assert all(e.result == "denied" and e.actor == "ingest" for e in entries)
    assert any("401 unauthorized: bad signature" in e.reason for e in entries)
    assert any(e.branch == "gz-tianhe" for e in entries)


def _post_unsigned(centre: Centre, raw: bytes) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", centre.port, timeout=30)
    try:
        conn.request("POST", "/api/v1/ingest", raw, {"X-Vipsense-Branch": BRANCH})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_revoked_branch_is_refused(centre: Centre) -> None:
    assert centre.post(batch([visit(1)]))[0] == 200
    assert centre.keys.revoke(BRANCH) is True
    assert centre.keys.revoke(BRANCH) is False
    _refused(centre, 403, "forbidden", "is revoked", centre.post(batch([visit(2)], after=(1, 0))))
    assert centre.counts()["visits"] == 1
    # a revocation by another process (the command line) is seen within the cache's seconds, and the
    # transaction checks it again whatever the cache says
    other = BranchKeys(centre.database, "x" * 43)
    with pytest.raises(BranchKeyError, match="no branch"):
        other.revoke("gz-tianhe")
    assert centre.keys.key_for(BRANCH) is None and centre.keys.key_for(OTHER) is not None
    with pytest.raises(ingest.BatchRefused, match="is revoked"):
        ingest.apply_batch(
            centre.database, BRANCH, ingest.parse_batch(json.dumps(batch([visit(2)], after=(1, 0))).encode())
        )
    # added again: a new key, the old one is refused
    old = centre.branch_key
    centre.branch_key = centre.keys.add(BRANCH, "陆家嘴支行")
    assert centre.branch_key != old
    _refused(
        centre, 401, "unauthorized", "bad signature", centre.post(batch([visit(2)], after=(1, 0)), key=old)
    )
    assert centre.post(batch([visit(2)], after=(1, 0)))[0] == 200
    with pytest.raises(BranchKeyError, match="already has a key"):
        centre.keys.add(BRANCH, "陆家嘴支行")


def test_a_key_kept_by_the_ingest_is_not_outrun_by_a_new_one(centre: Centre) -> None:
    """The ingest keeps a branch's key for minutes; the command changing it is another process (here
    another ``BranchKeys`` over the same database): the old key is refused at once and the new one
    accepted at once, whatever the ingest kept."""
    assert centre.post(batch([visit(1)]))[0] == 200
    kept = centre.keys.lookup(BRANCH)
    assert kept is not None and centre.keys.lookup(BRANCH) is kept  # kept, not read again
    command = BranchKeys(centre.database, centre.centre_key)
    assert command.revoke(BRANCH) is True
    new = command.add(BRANCH, "陆家嘴支行")
    # signed with the old key, which the ingest still holds: the apply's transaction sees the new one
    _refused(
        centre,
        401,
        "unauthorized",
        "bad signature",
        centre.post(batch([visit(2)], after=(1, 0)), key=centre.branch_key),
    )
    assert centre.counts()["visits"] == 1
    # the key changes again: the ingest holds the last one, the branch signs with the newest
    assert command.revoke(BRANCH) is True
    newest = command.add(BRANCH, "陆家嘴支行")
    assert newest != new
    assert centre.post(batch([visit(2)], after=(1, 0)), key=newest)[0] == 200
    assert centre.counts()["visits"] == 2
    # revoked by the command: refused at once, though the key the ingest holds is still the row's
    assert command.revoke(BRANCH) is True
    _refused(centre, 403, "forbidden", "is revoked", centre.post(batch([visit(3)], after=(2, 0)), key=newest))
    assert centre.counts()["visits"] == 2
    # and a plain apply with the key it was checked with, as the handler calls it
    sealed = kept.sealed
    assert sealed is not None and "sealed" not in repr(kept) and repr(sealed) not in repr(kept)
    with pytest.raises(ingest.BatchRefused, match="is revoked"):
        ingest.apply_batch(
            centre.database,
            BRANCH,
            ingest.parse_batch(json.dumps(batch([visit(3)], after=(2, 0))).encode()),
            sealed=sealed,
        )


@pytest.mark.parametrize("server", ["werkzeug", "cheroot"])
def test_an_oversize_body_is_refused_before_it_is_read(
    database: Database, tmp_path: Path, server: str
) -> None:
    centre = Centre(database, tmp_path, server)
    try:
        _oversize(centre)
        assert centre.post(batch([visit(1)]))[0] == 200  # and the server still takes a good batch
    finally:
        centre.stop()


def _oversize(centre: Centre) -> None:
    # Content-Length says 10 MB: the answer comes before a byte of the body is sent
    conn = http.client.HTTPConnection("127.0.0.1", centre.port, timeout=30)
    try:
        conn.putrequest("POST", "/api/v1/ingest")
        for name, value in {"X-Vipsense-Branch": BRANCH, "Content-Length": str(10 * 1024 * 1024)}.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        got = response.status, json.loads(response.read())
    finally:
        conn.close()
    _refused(centre, 413, "too_large", "bytes at most", got)
    # a chunked body is read up to the limit only
    conn = http.client.HTTPConnection("127.0.0.1", centre.port, timeout=30)
    try:
        conn.putrequest("POST", "/api/v1/ingest")
        conn.putheader("X-Vipsense-Branch", BRANCH)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < 5 * 1024 * 1024:
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            conn.send(b"0\r\n\r\n")
        except OSError:
            pass  # the centre answered and closed: the rest was never read
        response = conn.getresponse()
        got = response.status, json.loads(response.read())
    finally:
        conn.close()
    _refused(centre, 413, "too_large", "bytes at most", got)
    assert len(centre.refusals()) == 2 and centre.counts()["visits"] == 0


def test_a_flood_of_refusals_is_counted_not_audited_one_by_one(centre: Centre) -> None:
    for _ in range(60):
        assert centre.post(batch([visit(1)]), key=centre.other_key)[0] == 401
    centre.audit.close()  # writes the counted entry (before_close)
    entries = [e for e in AuditLog(centre.audit.path).entries() if e.action == "ingest"]
    one_by_one = [e for e in entries if "counted" not in e.object]
    counted = [e for e in entries if "counted" in e.object]
    assert len(one_by_one) == 20 and len(counted) == 1 and counted[0].object.startswith("40 calls")
    centre.audit = AuditLog(centre.audit.path)


# -- parsing -------------------------------------------------------------------------------------------

FRIDGE = {"kind": "fridge", "id": "x", "state": "ok", "reason": None}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda b: b.update(format=2), "format must be 1"),
        (lambda b: b.pop("heartbeat"), "heartbeat is missing"),
        (lambda b: b.update(extra=1), "extra is not a field"),
        (lambda b: b["streams"]["visits"].update(upto=-1), "visits: upto"),
        (lambda b: b["streams"]["visits"]["rows"][1].update(seq=1), "visits row 1: seq"),
        (
            lambda b: b["streams"]["visits"]["rows"].append(visit(1, seq=3)),
            "visits row 2: visit_id appears twice",
        ),
        (
            lambda b: b["streams"]["visits"]["rows"][0].update(visit_id="v" * 65),
            "visits row 0: visit_id must be text",
        ),
        (lambda b: b["streams"]["deliveries"]["rows"][0].update(attempts=True), "deliveries row 0: attempts"),
        (lambda b: b.update(sent_at="yesterday"), "sent_at must be a time"),
        (lambda b: b.update(heartbeat=heartbeat(devices=[FRIDGE])), "heartbeat.devices[0].kind"),
    ],
)
def test_parse_names_the_wrong_field(change: Any, words: str) -> None:
    body = batch([visit(1), visit(2)], [delivery(1)], upto=(3, 1), beat=heartbeat())
    change(body)
    with pytest.raises(ingest.BatchRefused) as refused:
        ingest.parse_batch(json.dumps(body).encode())
    assert refused.value.code == "bad_request" and words in str(refused.value), str(refused.value)


def test_parse_limits_rows() -> None:
    body = batch([visit(n) for n in range(1, ingest.MAX_ROWS + 2)])
    with pytest.raises(ingest.BatchRefused) as refused:
        ingest.parse_batch(json.dumps(body).encode())
    assert refused.value.code == "too_large" and "5000 at most" in str(refused.value)


def test_branch_keys_are_sealed_and_never_listed(database: Database) -> None:
    keys = BranchKeys(database, secrets.token_urlsafe(32))
    key = keys.add(BRANCH, "陆家嘴支行")
    assert len(key) >= 43 and keys.key_for(BRANCH) == key.encode()
    with database.begin() as conn:
        stored = conn.execute(select(schema.branches.c.key_enc)).scalar_one()
    assert key.encode() not in stored
    listed = keys.list()
    assert [b.branch_id for b in listed] == [BRANCH] and listed[0].has_key and key not in repr(listed)
    assert key not in repr(keys) and keys.key_for("nowhere") is None
    with pytest.raises(BranchKeyError, match="not a branch id"):
        keys.add("Bad Branch!", "x")


# -- figures and faults --------------------------------------------------------------------------------


def test_a_batch_of_500_visits_applies_fast(centre: Centre, capsys: pytest.CaptureFixture[str]) -> None:
    """The first batch of a month also makes its partitions (PostgreSQL); the figure is the second's."""
    first = ingest.parse_batch(json.dumps(batch([visit(1)], [delivery(1)])).encode())
    began = time.perf_counter()
    ingest.apply_batch(centre.database, BRANCH, first)
    made = time.perf_counter() - began
    visits = [visit(n) for n in range(2, 502)]
    deliveries = [delivery(n) for n in range(2, 502)]
    body = json.dumps(batch(visits, deliveries, after=(1, 1), beat=heartbeat())).encode()
    began = time.perf_counter()
    parsed = ingest.parse_batch(body)
    parsing = time.perf_counter() - began
    answer = ingest.apply_batch(centre.database, BRANCH, parsed)
    took = time.perf_counter() - began - parsing
    assert answer.applied == {"visits": 500, "deliveries": 500}
    with capsys.disabled():
        print(
            f"\n{centre.database.dialect}: 500 visits and 500 deliveries ({len(body) // 1024} KiB) parsed in"
            f" {parsing * 1000:.0f} ms, applied in {took * 1000:.0f} ms (a first batch of the month:"
            f" {made * 1000:.0f} ms)"
        )
    assert took < 10


def test_migration_3_adds_the_ingest_columns_to_a_version_2_database(database: Database) -> None:
    """Check, then alter: a database at version 2 gets the columns, a second migration changes nothing."""
    with database.begin() as conn:
        for table, columns in schema.ADDED_IN_3.items():
            for column in columns():
                conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column.name}")
        conn.exec_driver_sql("DELETE FROM schema_version WHERE version >= 3")  # and the steps after it
    changed = migrate(database)
    assert {"branches.key_enc", "branches.visits_position", "visits.change_seq"} <= set(changed)
    assert migrate(database) == []
    keys = BranchKeys(database, secrets.token_urlsafe(32))
    keys.add(BRANCH, "x")
    body = json.dumps(batch([visit(1)])).encode()
    assert ingest.apply_batch(database, BRANCH, ingest.parse_batch(body)).position == {
        "visits": 1,
        "deliveries": 0,
    }


@pytest.mark.postgres
def test_postgresql_restarted_mid_ingest_loses_and_doubles_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A branch posts batches back to back while its centre's PostgreSQL restarts twice (``pg_ctl
    restart -m fast`` cuts every connection, transactions open or not): every batch is taken in the
    end (a 503 or a cut connection is sent again, as the shipper does), none twice, the counts exact."""
    bin_dir = binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl): run tests/install.sh as root")
    cluster = Cluster(bin_dir)
    try:
        db = open_database(new_database(cluster.start()), PoolSettings(min_size=1, max_size=4, timeout=3))
        try:
            migrate(db)
            centre = Centre(db, tmp_path)
            try:
                with caplog.at_level(logging.WARNING, logger="vipsense.centre.ingest"):
                    _post_through_restarts(centre, cluster)
            finally:
                centre.stop()
        finally:
            db.close()
    finally:
        cluster.stop()
    tries = [r for r in caplog.records if "trying again" in r.getMessage()]
    print(f"the ingest tried {len(tries)} transactions again: {sorted({r.args[-1] for r in tries})}")  # type: ignore[index]


def _post_through_restarts(centre: Centre, cluster: Cluster) -> None:
    size, count = 25, 40
    applied, answers, resent = [], [], 0
    done = threading.Event()
    failure: list[BaseException] = []

    def ship() -> None:
        nonlocal resent
        try:
            k = 0
            deadline = time.monotonic() + 120
            while k < count and time.monotonic() < deadline:
                seqs = range(k * size + 1, (k + 1) * size + 1)
                body = batch(
                    [visit(n) for n in seqs], [delivery(n) for n in seqs], after=(k * size, k * size)
                )
                try:
                    status, answer = centre.post(body)
                except OSError:
                    status, answer = 0, {}
                answers.append(status)
                if status == 200:
                    applied.append(answer["applied"])
                    k += 1
                else:
                    assert status in (0, 503), (status, answer)
                    resent += 1
                    time.sleep(0.1)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)
        finally:
            done.set()

    shipper = threading.Thread(target=ship, name="branch-shipper", daemon=True)
    shipper.start()
    took = []
    for after in (5, 20):
        while len(applied) < after and not done.is_set():
            time.sleep(0.01)
        took.append(cluster.restart())
    assert done.wait(180), "the shipper did not finish"
    shipper.join(5)
    assert not failure, failure
    assert len(applied) == count
    assert sum(a["visits"] for a in applied) == size * count  # none applied twice, none lost
    assert sum(a["deliveries"] for a in applied) == size * count
    counts = centre.counts()
    assert counts["visits"] == counts["deliveries"] == counts["sightings"] == size * count
    assert counts[f"{BRANCH}.position"] == (size * count, size * count)
    print(f"\nrestarts took {', '.join(f'{t:.2f} s' for t in took)}; {resent} batches sent again")

    # the server stopped for good: the ingest says so (503) after its tries, and writes nothing
    stopped = cluster._run(str(cluster.bin / "pg_ctl"), "-D", str(cluster.data), "-m", "fast", "-w", "stop")
    assert stopped.returncode == 0, stopped.stderr
    body = json.dumps(batch([visit(size * count + 1)], after=(size * count, size * count))).encode()
    began = time.monotonic()
    with pytest.raises(ingest.BatchRefused) as refused:
        ingest.apply_batch(centre.database, BRANCH, ingest.parse_batch(body), retries=(0.1,))
    assert refused.value.code == "unavailable" and refused.value.status == 503
    time.sleep(2.1)  # the web's cached key expires: its look-up fails too
    _refused(centre, 503, "unavailable", "does not answer", centre.post(body))
    assert centre.refusals()[-1].result == "error"
    print(f"a stopped server was refused in {time.monotonic() - began:.1f} s")


def test_the_centres_own_web_serves_the_ingest(tmp_path: Path) -> None:
    """The ingest inside the centre's whole app (its login, CSRF and language hooks in front): a signed
    batch applies without a login, and a refusal goes to the centre's own audit log."""
    from vipsense.centre.profile import centre_key, load_centre_profile, open_centre_audit
    from vipsense.centreweb.app import CentreContext, create_app
    from vipsense.web.users import UserStore, users_path

    (tmp_path / "secrets.yaml").write_text(f"centre_key: {secrets.token_urlsafe(32)}\n", encoding="utf-8")
    (tmp_path / "centre.yaml").write_text(
        "centre:\n  id: head-office\n  name: 总行客服中心\n  key: !secret centre_key\n", encoding="utf-8"
    )
    (tmp_path / "data").mkdir()
    profile = load_centre_profile(tmp_path / "centre.yaml", data_dir=tmp_path / "data")
    db = open_database(profile.database_url)
    audit = open_centre_audit(profile)
    users = UserStore(users_path(profile.data_dir))
    try:
        migrate(db)
        keys = BranchKeys(db, centre_key(profile))
        key = keys.add(BRANCH, "陆家嘴支行")
        app = create_app(CentreContext(profile, db, audit, users, profile.web, keys=keys))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            for signed_with, expected in ((key, 200), (secrets.token_urlsafe(32), 401)):
                raw = json.dumps(batch([visit(1)])).encode()
                headers = {"Content-Type": "application/json", "X-Vipsense-Branch": BRANCH}
                headers |= signed_headers(signed_with.encode(), raw)
                conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
                try:
                    conn.request("POST", "/api/v1/ingest", raw, headers)
                    response = conn.getresponse()
                    assert response.status == expected, response.read()[:300]
                    assert response.getheader("Content-Type") == "application/json"
                    response.read()
                finally:
                    conn.close()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
        assert [e.reason[:16] for e in audit.entries() if e.action == "ingest"] == ["401 unauthorized"]
        with db.begin() as conn:
            assert conn.execute(select(func.count()).select_from(schema.visits)).scalar_one() == 1
    finally:
        users.close()
        audit.close()
        db.close()
