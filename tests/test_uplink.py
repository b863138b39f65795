"""The branch reports to the centre (issue 14, part 3, the branch's side).

The change feeds of the visit log and the outbox (SQLite triggers, a counter, a migration that numbers
an old file's rows), the ``centre:`` section, and a real branch shipping to the real centre: the
centre's ingest app (:func:`vipsense.centreweb.ingest_api.create_ingest_app`) served by werkzeug on
127.0.0.1 over its SQLite database, with a recorder in front of it that keeps every batch it was sent.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from vipsense import i18n
from vipsense.api import UplinkContext, UplinkUnavailable
from vipsense.centre import schema
from vipsense.centre.database import Database, open_database
from vipsense.centre.keys import BranchKeys
from vipsense.centre.migrations import migrate
from vipsense.centreweb.ingest_api import create_ingest_app
from vipsense.cli.run import _status_line
from vipsense.config.errors import ProfileError
from vipsense.config.profile import load_profile
from vipsense.model import TagRead
from vipsense.plugins.uplinks.https import HttpsUplink
from vipsense.signing import signed_headers
from vipsense.storage.audit import AuditLog
from vipsense.storage.outbox import Outbox
from vipsense.storage.visitlog import VisitLog
from vipsense.uplink import shipper as shipper_module
from vipsense.uplink.shipper import CURSOR_FILE, centre_line
from vipsense.web.status import StatusView

from .conftest import BASE_PROFILE, SEED, wait_for
from .test_web_attacks import make_certificate

BRANCH = "test-branch"

# -- the change feed -----------------------------------------------------------------------------------


def _insert_visit(log: VisitLog, visit_id: str, at: float) -> None:
    log.db.execute(
        "INSERT INTO visits (visit_id, branch_id, kind, epc, reader_id, antenna, read_count, arrived_at)"
        " VALUES (?, 'b', 'greeted', 'E1', 'door', 1, 2, ?)",
        (visit_id, at),
    )


def _seqs(log: VisitLog) -> dict[str, int]:
    return {r["visit_id"]: r["seq"] for r in log.changes(0, 100)}


def test_the_visit_feed_moves_on_insert_and_carried_changes_not_on_sightings(tmp_path):
    log = VisitLog(tmp_path / "visits.sqlite3")
    try:
        _insert_visit(log, "a", 1.0)
        _insert_visit(log, "b", 2.0)
        assert _seqs(log) == {"a": 1, "b": 2} and log.last_change() == 2
        log.seen([("a", 3.0), ("b", 3.0)])  # every few seconds at the door: not a change for the centre
        assert _seqs(log) == {"a": 1, "b": 2} and log.last_change() == 2
        log.departed([("a", 4.0)])
        assert _seqs(log) == {"b": 2, "a": 3}
        log.acknowledged([("b", "cm1", 5.0)])
        log.acknowledged([("b", "cm2", 6.0)])  # the first acknowledgement stays: no change
        assert _seqs(log) == {"a": 3, "b": 4} and log.last_change() == 4
        rows = log.changes(0, 100)
        assert [r["visit_id"] for r in rows] == ["a", "b"]  # in feed order
        assert rows[1]["acknowledged_by"] == "cm1" and rows[0]["departed_at"] == 4.0
        assert set(rows[0]) == {
            "visit_id", "seq", "arrived_at", "kind", "epc", "customer_no", "tier", "reason",
            "reader_id", "read_count", "peak_rssi", "departed_at", "acknowledged_at", "acknowledged_by",
        }  # fmt: skip
        assert log.changes(3, 100) == [rows[1]] and log.changes(0, 1) == [rows[0]]
        # a purge of the newest row does not give its position to the next one
        log.db.execute("DELETE FROM visits WHERE visit_id = 'b'")
        _insert_visit(log, "c", 7.0)
        assert _seqs(log)["c"] == 5
    finally:
        log.close()


def test_the_outbox_feed_carries_delivery_states_not_payloads(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite3")
    try:
        box.db.execute(
            "INSERT INTO outbox (notifier_id, key, visit_id, recipient_id, state, arrived_at, created_at,"
            " expires_at, payload) VALUES ('pda', 'v1:cm1', 'v1', 'cm1', 'pending', 1, 1, 99, '{}')"
        )
        box.db.execute("UPDATE outbox SET payload = NULL, last_error = 'x'")  # not carried
        assert [r["seq"] for r in box.changes(0, 10)] == [1]
        box.db.execute("UPDATE outbox SET state = 'pending'")  # the same value: no change
        assert box.last_change() == 1
        box.db.execute("UPDATE outbox SET state = 'delivered', attempts = 1, delivered_at = 2")
        [row] = box.changes(0, 10)
        assert row == {
            "delivery_key": "pda/v1:cm1", "seq": 2, "created_at": 1.0, "visit_id": "v1",
            "notifier_id": "pda", "recipient_id": "cm1", "state": "delivered", "attempts": 1,
            "delivered_at": 2.0, "acknowledged_at": None, "finished_at": None, "escalated_from": None,
        }  # fmt: skip
    finally:
        box.close()


def test_an_old_file_gets_the_feed_numbered_in_the_order_its_rows_were_written(tmp_path):
    path = tmp_path / "visits.sqlite3"
    with sqlite3.connect(path) as db:  # the layout before the change feed, at user_version 1
        db.execute(
            "CREATE TABLE visits (visit_id TEXT PRIMARY KEY, branch_id TEXT NOT NULL, kind TEXT NOT NULL,"
            " epc TEXT NOT NULL, tid TEXT, customer_no TEXT, tier TEXT, reason TEXT, store_id TEXT,"
            " stale INTEGER NOT NULL DEFAULT 0, unresolved INTEGER NOT NULL DEFAULT 0,"
            " reader_id TEXT NOT NULL, antenna INTEGER NOT NULL, read_count INTEGER NOT NULL,"
            " peak_rssi REAL, arrived_at REAL NOT NULL, departed_at REAL, acknowledged_at REAL,"
            " acknowledged_by TEXT, resolved_at REAL, last_seen_at REAL)"
        )
        for n, vid in enumerate(["z", "m", "a"]):  # rowid order, not key order
            db.execute(
                "INSERT INTO visits (visit_id, branch_id, kind, epc, reader_id, antenna, read_count,"
                " arrived_at) VALUES (?, 'b', 'greeted', 'E', 'door', 1, 2, ?)",
                (vid, float(n)),
            )
        db.execute("PRAGMA user_version = 1")
    log = VisitLog(path)
    try:
        assert _seqs(log) == {"z": 1, "m": 2, "a": 3} and log.last_change() == 3
        _insert_visit(log, "new", 9.0)
        assert _seqs(log)["new"] == 4
    finally:
        log.close()
    reopened = VisitLog(path)  # nothing renumbered at the next start
    try:
        assert _seqs(reopened) == {"z": 1, "m": 2, "a": 3, "new": 4}
    finally:
        reopened.close()


# -- the profile section -------------------------------------------------------------------------------


KEY = secrets.token_urlsafe(32)


def _profile(centre: str) -> str:
    return BASE_PROFILE + f"centre: {centre}\n"


@pytest.mark.parametrize(
    ("centre", "expected"),
    [
        ("{url: http://centre.bank:8470, key: !secret centre_key}", "plain http:// is accepted only"),
        ("{url: https://centre.bank, key: short}", "at least 32 characters"),
        ("{url: https://centre.bank, key: !secret centre_key, transport: htps}", "did you mean 'https'"),
        ("{url: https://centre.bank, key: !secret centre_key, ca: no-such.pem}", "no such file"),
        ("{url: centre.bank, key: !secret centre_key}", "expected the centre's address"),
    ],
)
def test_the_centre_section_says_what_is_wrong(write_profile, tmp_path, host, centre, expected):
    (tmp_path / "secrets.yaml").write_text(f"centre_key: {KEY}\n", encoding="utf-8")
    with pytest.raises(ProfileError) as err:
        load_profile(write_profile(_profile(centre)), host)
    assert expected in str(err.value)
    assert KEY not in str(err.value)


def test_a_valid_centre_section(write_profile, tmp_path, host):
    (tmp_path / "secrets.yaml").write_text(f"centre_key: {KEY}\n", encoding="utf-8")
    profile = load_profile(
        write_profile(_profile("{url: 'http://127.0.0.1:8470', key: !secret centre_key, interval: 2s}")), host
    )
    link = profile.centre  # type: ignore[attr-defined]
    assert (float(link.interval), link.batch, link.transport) == (2.0, 500, "https")
    assert KEY not in repr(link)


def test_the_status_line_says_since_when_and_why():
    at = time.mktime((2026, 12, 7, 10, 4, 5, 0, 0, -1))
    line = centre_line({"state": "unreachable", "since": at, "reason": "connection refused"})
    assert line == "unreachable since 10:04:05 — connection refused"
    with i18n.using("zh_CN"):
        line = centre_line({"state": "unreachable", "since": at, "reason": "connection refused"})
    assert line == "自 10:04:05 起无法连接 — connection refused"


# -- a real branch, a real centre ------------------------------------------------------------------------


class Centre:
    """The centre's ingest on 127.0.0.1 over SQLite, restartable on the same port; ``batches`` are the
    decoded bodies of every request it was sent, ``answers`` its status codes."""

    def __init__(self, tmp_path: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.tls = tls
        self.database: Database = open_database(f"sqlite:///{tmp_path / 'centre.sqlite3'}")
        migrate(self.database)
        self.keys = BranchKeys(self.database, secrets.token_urlsafe(32))
        self.key = self.keys.add(BRANCH, "Test Branch")
        (tmp_path / "audit").mkdir()
        self.audit = AuditLog(tmp_path / "audit" / "audit.sqlite3")
        self.app = create_ingest_app(self.database, self.audit, self.keys)
        self.batches: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.port = 0
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.start()

    def _recorded(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        with contextlib.suppress(ValueError):
            self.batches.append(json.loads(body))

        def recording_start(status: str, headers: Any, *rest: Any) -> Any:
            self.answers.append(int(status.split()[0]))
            return start_response(status, headers, *rest)

        return self.app(environ, recording_start)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        tls = (str(self.tls[0]), str(self.tls[1])) if self.tls else None
        self.server = make_server("127.0.0.1", self.port, self._recorded, threaded=True, ssl_context=tls)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            assert self.thread is not None
            self.thread.join(5)
            self.server = None

    def count(self, table: Any) -> int:
        with self.database.begin() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def departed(self) -> int:
        with self.database.begin() as conn:
            query = select(func.count()).where(schema.visits.c.departed_at.is_not(None))
            return int(conn.execute(query).scalar_one())

    def visit_ids(self) -> set[str]:
        with self.database.begin() as conn:
            return {r[0] for r in conn.execute(select(schema.visits.c.visit_id))}

    def shipped_visits(self) -> list[tuple[str, int]]:
        """``(visit_id, seq)`` of every visit row the branch sent, in the order sent."""
        return [(r["visit_id"], r["seq"]) for b in self.batches for r in b["streams"]["visits"]["rows"]]


@pytest.fixture
def centre(tmp_path) -> Iterator[Centre]:
    c = Centre(tmp_path)
    yield c
    c.stop()
    c.audit.close()
    c.database.close()


SEED_MANY = SEED + "".join(
    f"  - {{epc: E2000000000000000000{n:04d}, customer_no: C1}}\n" for n in range(10, 60)
)


def _branch(running_branch, tmp_path: Path, url: str, key: str, data_dir: Path | None = None) -> Any:
    (tmp_path / "secrets.yaml").write_text(f"centre_key: {key}\n", encoding="utf-8")
    text = _profile(f"{{url: '{url}', key: !secret centre_key, interval: 200ms, batch: 7, timeout: 2s}}")
    return running_branch(text, seed=SEED_MANY, data_dir=data_dir)


def _arrive(branch: Any, numbers: range) -> None:
    for n in numbers:
        for _ in range(3):
            branch.pipeline.submit(
                TagRead("door", 1, f"E2000000000000000000{n:04d}", -50.0, branch.clock.mono())
            )


def _branch_visits(data_dir: Path) -> list[tuple[str, int]]:
    db = sqlite3.connect(data_dir / "visits.sqlite3")
    try:
        return db.execute("SELECT visit_id, change_seq FROM visits ORDER BY change_seq").fetchall()
    finally:
        db.close()


def _centre(branch: Any) -> dict[str, Any]:
    return branch.status.snapshot()["centre"]


def test_every_visit_reaches_the_centre_once(centre, running_branch, tmp_path):
    branch = _branch(running_branch, tmp_path, centre.url, centre.key)
    _arrive(branch, range(10, 30))
    data = tmp_path / "data"
    assert wait_for(lambda: len(_branch_visits(data)) == 20, 10)
    assert wait_for(lambda: centre.visit_ids() == {v for v, _ in _branch_visits(data)}, 10)
    assert wait_for(lambda: _centre(branch)["backlog"] == {"visits": 0, "deliveries": 0}, 5)
    state = _centre(branch)
    assert state["state"] == "ok" and state["last_ok_at"] and state["text"] == "reporting"
    assert state["position"]["visits"] == _branch_visits(data)[-1][1]
    assert centre.count(schema.visits) == 20 and centre.count(schema.sightings) >= 20
    # batches of 7 rows, each after the last one the centre acknowledged: never the same row twice
    shipped = centre.shipped_visits()
    assert len(shipped) == len(set(shipped))
    assert all(len(b["streams"]["visits"]["rows"]) <= 7 for b in centre.batches)
    beat = centre.batches[-1]["heartbeat"]
    assert {(d["kind"], d["id"]) for d in beat["devices"]} >= {("reader", "door"), ("store", "local")}
    assert beat["audit_head"] is None or beat["audit_head"]["seq"] >= 1
    assert set(centre.answers) == {200}
    # the cards leave: each visit is sent again with its departure, and replaces the centre's copy
    assert wait_for(lambda: branch.status.counters["departures"] == 20, 10)
    assert wait_for(lambda: centre.departed() == 20, 5)
    assert wait_for(lambda: _centre(branch)["backlog"] == {"visits": 0, "deliveries": 0}, 5)
    assert centre.count(schema.visits) == 20
    # nothing changes: a heartbeat alone at each interval
    before = len(centre.batches)
    assert wait_for(lambda: len(centre.batches) >= before + 2, 3)
    assert centre.batches[-1]["streams"]["visits"]["rows"] == []


def test_the_centre_down_then_back_gets_the_backlog_oldest_first(centre, running_branch, tmp_path):
    branch = _branch(running_branch, tmp_path, centre.url, centre.key)
    data = tmp_path / "data"
    _arrive(branch, range(10, 13))
    assert wait_for(lambda: centre.count(schema.visits) == 3, 10)
    centre.stop()
    _arrive(branch, range(13, 40))
    assert wait_for(lambda: _centre(branch)["state"] == "unreachable", 5), _centre(branch)
    since = _centre(branch)["since"]
    # the first failure may be the centre closing the connection as it stops; then refused
    assert wait_for(lambda: "connection refused" in _centre(branch)["reason"], 8), _centre(branch)
    down = _centre(branch)
    assert down["since"] == since  # the first failure's time, however many followed
    view = StatusView(branch).build()  # the status page and /api/status
    assert view["centre"]["state"] == "unreachable" and view["state"] == "degraded"
    assert any(
        p.startswith("centre: unreachable since ") and "connection refused" in p for p in view["problems"]
    )
    assert "centre: unreachable since " in _status_line(branch)  # vipsense run's status line
    assert down["text"].startswith("unreachable since ") and "connection refused" in down["text"]
    assert wait_for(lambda: len(_branch_visits(data)) == 30, 10)  # the door goes on meanwhile
    assert wait_for(lambda: _centre(branch)["backlog"]["visits"] >= 27, 5)
    sent_before = len(centre.batches)
    time.sleep(1.0)
    centre.start()
    assert wait_for(lambda: centre.count(schema.visits) == 30, 15)
    assert wait_for(lambda: _centre(branch)["state"] == "ok", 5)
    assert centre.visit_ids() == {v for v, _ in _branch_visits(data)}
    after = [r for b in centre.batches[sent_before:] for r in b["streams"]["visits"]["rows"]]
    assert [r["seq"] for r in after] == sorted(r["seq"] for r in after)  # oldest first
    assert len(after) == len({r["seq"] for r in after})  # none sent twice


def test_a_gap_rewinds_to_the_centres_position(centre, running_branch, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / CURSOR_FILE).write_text(json.dumps({"position": {"visits": 500, "deliveries": 500}}))
    branch = _branch(running_branch, tmp_path, centre.url, centre.key)
    _arrive(branch, range(10, 15))
    assert wait_for(lambda: centre.count(schema.visits) == 5, 10)
    assert centre.answers[0] == 409  # the centre holds 0: the branch resent from there
    newest = _branch_visits(data)[-1][1]
    assert wait_for(lambda: json.loads((data / CURSOR_FILE).read_text())["position"]["visits"] == newest, 5)
    assert wait_for(lambda: _centre(branch)["state"] == "ok", 5)


def test_a_wrong_key_is_refused_and_shown(centre, running_branch, tmp_path):
    branch = _branch(running_branch, tmp_path, centre.url, secrets.token_urlsafe(32))
    _arrive(branch, range(10, 12))
    assert wait_for(lambda: _centre(branch)["state"] == "refused", 5), _centre(branch)
    state = _centre(branch)
    assert "signature" in state["error"] and "restart" in state["text"]
    assert centre.count(schema.visits) == 0 and set(centre.answers) == {401}


def test_the_cursor_survives_a_restart(centre, running_branch, tmp_path):
    data = tmp_path / "data"
    branch = _branch(running_branch, tmp_path, centre.url, centre.key, data)
    _arrive(branch, range(10, 20))
    assert wait_for(lambda: centre.count(schema.visits) == 10, 10)
    assert wait_for(lambda: _centre(branch)["backlog"] == {"visits": 0, "deliveries": 0}, 5)
    branch.stop()
    shipped = len(centre.shipped_visits())
    position = json.loads((data / CURSOR_FILE).read_text())["position"]
    again = _branch(running_branch, tmp_path, centre.url, centre.key, data)
    assert wait_for(lambda: _centre(again)["state"] == "ok", 5)
    first = centre.batches[-1]
    assert first["streams"]["visits"]["after"] >= position["visits"]
    _arrive(again, range(20, 23))
    assert wait_for(lambda: centre.count(schema.visits) == 13, 10)
    new = centre.shipped_visits()[shipped:]
    assert {v for v, _ in new} <= {v for v, s in _branch_visits(data) if s > position["visits"]}


def test_a_branch_whose_files_were_replaced_sends_everything_again(centre, running_branch, tmp_path):
    """The branch's visit log and outbox replaced (a fresh disk, a copy put back) while the centre
    keeps what the old ones sent: the new files' positions start again below the centre's, so their
    rows would be taken for ones the centre holds and never sent.  The shipper renumbers them past
    the centre's position; every visit reaches the centre, each once."""
    data = tmp_path / "data"
    branch = _branch(running_branch, tmp_path, centre.url, centre.key, data)
    _arrive(branch, range(10, 20))
    assert wait_for(lambda: centre.count(schema.visits) == 10, 10)
    branch.stop()
    for name in ("visits.sqlite3", "outbox.sqlite3"):
        for path in data.glob(name + "*"):
            path.unlink()
    again = _branch(running_branch, tmp_path, centre.url, centre.key, data)
    _arrive(again, range(20, 23))
    assert wait_for(lambda: centre.count(schema.visits) == 13, 10), centre.count(schema.visits)
    assert wait_for(lambda: _centre(again)["backlog"] == {"visits": 0, "deliveries": 0}, 5)
    held = {v for v, _ in centre.shipped_visits()}
    assert {v for v, _s in _branch_visits(data)} <= held
    assert len(held) == 13


def test_a_heartbeat_counts_what_is_left_after_its_own_batch(running_branch, tmp_path):
    """The backlog a report carries is what the centre will still lack once it applies that report,
    so the board is never a report behind (a centre on a port nothing listens on: nothing ships)."""
    branch = _branch(running_branch, tmp_path, "http://127.0.0.1:1", "k" * 43)
    _arrive(branch, range(10, 30))
    assert wait_for(lambda: len(_branch_visits(tmp_path / "data")) == 20, 10)
    batch, full = branch.shipper.build()
    assert full and len(batch["streams"]["visits"]["rows"]) == 7  # batch: 7 in the profile
    assert batch["heartbeat"]["backlog"]["visits"] == 13


def test_a_backlog_gives_way_while_the_door_reads(running_branch, tmp_path):
    """The shipper of a running branch watches its door's reads (the status counter): while they
    grow, a backlog's batches pause :data:`DUTY_BUSY` times as long as they took, not
    :data:`DUTY_PAUSE`; once the lobby is quiet, full speed again."""
    branch = _branch(running_branch, tmp_path, "http://127.0.0.1:1", "k" * 43)
    shipper = branch.shipper
    assert shipper_module.DUTY_BUSY > shipper_module.DUTY_PAUSE
    shipper.door_busy()  # the first look only notes the count
    assert shipper.door_busy() is False  # no reads since
    before = branch.status.counters["reads"]
    _arrive(branch, range(10, 12))
    assert wait_for(lambda: branch.status.counters["reads"] >= before + 6, 5)
    assert shipper.door_busy() is True
    assert shipper.door_busy() is False  # nothing read since the last look


def test_a_batch_over_the_size_limit_goes_in_smaller_ones(centre, running_branch, tmp_path, monkeypatch):
    """Rows are counted by ``batch:``, but a request must stay under the centre's size limit: a batch
    that encodes larger is cut in half until it fits, and the rest follows (here the limit is made
    small enough that 7 rows do not fit)."""
    monkeypatch.setattr(shipper_module, "MAX_BODY", 3_000)
    branch = _branch(running_branch, tmp_path, centre.url, centre.key)
    _arrive(branch, range(10, 30))
    data = tmp_path / "data"
    assert wait_for(lambda: len(_branch_visits(data)) == 20, 10)
    assert wait_for(lambda: centre.visit_ids() == {v for v, _ in _branch_visits(data)}, 15)
    sizes = [len(b["streams"]["visits"]["rows"]) for b in centre.batches]
    assert max(sizes) < 7 and sum(sizes) >= 20, sizes
    assert len(centre.shipped_visits()) == len(set(centre.shipped_visits()))  # none sent twice


def test_https_verifies_the_centres_certificate(tmp_path):
    cert, key = make_certificate(tmp_path / "tls")
    centre = Centre(tmp_path, tls=(cert, key))
    body = json.dumps(
        {
            "format": 1, "branch_id": BRANCH, "sent_at": time.time(), "heartbeat": None,
            "streams": {s: {"after": 0, "upto": 0, "rows": []} for s in ("visits", "deliveries")},
        }
    ).encode()  # fmt: skip
    headers = {**signed_headers(centre.key.encode(), body), "X-Vipsense-Branch": BRANCH}
    try:
        context = UplinkContext(centre.url, 5.0, cert, BRANCH, logging.getLogger("test"))
        trusting = HttpsUplink(context)
        status, answer = trusting.send(body, headers)
        assert status == 200 and json.loads(answer)["position"] == {"visits": 0, "deliveries": 0}
        assert trusting.send(body, headers)[0] == 200  # the same connection, kept alive or reopened
        trusting.close()
        stranger = HttpsUplink(attrs.evolve(context, ca=None))  # the system's CAs do not know it
        with pytest.raises(UplinkUnavailable, match="certificate not trusted"):
            stranger.send(body, headers)
        stranger.close()
        assert centre.answers == [200, 200]
    finally:
        centre.stop()
        centre.audit.close()
        centre.database.close()
