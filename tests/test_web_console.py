"""The client-manager console against a real running Branch and its WebServer: the live stream (Flask
test client and a real socket), who sees which customer, acknowledging, unmasking, look-up, history
and hostile customer fields."""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from vipsense.pipeline.response_times import load
from vipsense.storage.audit import AuditAction, AuditResult

from .conftest import wait_for
from .web_support import CARD, WEB_SEED, WebBranch, csrf_of

pytestmark = pytest.mark.slow  # every test runs a branch and its web server

JSON = {"Accept": "application/json"}
C1_ID, C2_ID = "110101199003071234", "310101198512125678"
C1_MOBILE = "13812345678"
SCRIPT = "<script>alert('name')</script>"


def visits_of(w: Any) -> list[Any]:
    rows, _ = load(w.branch.data_dir, 0, time.time() + 86400 * 400)
    return rows


def arrive(w: Any, *cards: int) -> dict[str, str]:
    """Walk cards in, one after the other; returns customer number -> visit id once all are logged."""
    for n in cards:
        w.walk_in(CARD[n])
    assert wait_for(
        lambda: len({r.customer_no for r in visits_of(w)} & {f"C{n}" for n in cards}) == len(cards)
    )
    return {r.customer_no: r.visit_id for r in visits_of(w)}


def told(w: Any, visit_id: str, staff_id: str) -> bool:
    """The outbox holds the notification of ``visit_id`` for ``staff_id`` (it is written just after)."""
    _, records = load(w.branch.data_dir, 0, time.time() + 86400 * 400)
    return any(r.key == f"{visit_id}:{staff_id}" for r in records)


def snapshot(client: Any) -> dict[str, Any]:
    """The first ``snapshot`` event of /console/events, read from the streamed test-client response."""
    response = client.get("/console/events", buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    chunks = iter(response.response)
    try:
        assert next(chunks).startswith(b": connected")
        message = next(chunks).decode()
    finally:
        response.close()
    assert "event: snapshot\n" in message
    data = next(line for line in message.splitlines() if line.startswith("data: "))
    return json.loads(data[len("data: ") :])


def audit_entries(w: Any, action: AuditAction, actor: str) -> list[Any]:
    return list(w.branch.audit.entries(action=action, actor=actor))


# -- the live stream ----------------------------------------------------------------------------------


def test_snapshot_shows_todays_arrival_masked(web_branch):
    w = web_branch()
    ids = arrive(w, 1)
    snap = snapshot(w.client("lobby"))
    assert snap["viewer"] == "lobby"
    [v] = snap["visits"]
    assert v["visit_id"] == ids["C1"] and v["kind"] == "greeted" and v["arrived_unix"] > 0
    c = v["customer"]
    assert (
        c["name"] == "王建国 Wang Jianguo" and c["company"] == "华信贸易有限公司" and c["tier"] == "diamond"
    )
    assert c["id_number"] == "**************1234" and c["mobile"] == "138****5678"
    assert C1_ID not in json.dumps(snap) and C1_MOBILE not in json.dumps(snap)
    assert audit_entries(w, AuditAction.VIEW, "lobby")[-1].object == "console live feed"


def test_stream_needs_a_console_role(web_branch):
    w = web_branch()
    anonymous = w.client().get("/console/events")
    assert anonymous.status_code == 401 and anonymous.json["error"]
    assert w.client("admin1").get("/console/events").status_code == 403
    assert w.client("auditor1").get("/console").status_code == 403


class Stream:
    """An SSE stream over a real socket to the branch web's server, read line by line with a timeout."""

    def __init__(self, w: Any, username: str) -> None:
        client = w.client(username)
        cookie = client.get_cookie("vipsense_session").value
        parts = urlsplit(w.url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        self.conn.request("GET", "/console/events", headers={"Cookie": f"vipsense_session={cookie}"})
        self.sock = self.conn.sock  # http.client lets go of it once the response will close
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("Content-Type").startswith("text/event-stream")
        assert self.response.getheader("X-Accel-Buffering") == "no"

    def next_event(self, timeout: float = 5.0) -> tuple[str, int | None, dict[str, Any]]:
        """The next named event (comments skipped): ``(name, id, data)``."""
        self.sock.settimeout(timeout)
        name, event_id, data = "", None, ""
        while True:
            line = self.response.readline().decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line == "" and name:
                return name, event_id, json.loads(data)
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                data = line[6:]

    def close(self) -> None:
        self.conn.close()


def test_live_events_over_a_real_socket(web_branch):
    w = web_branch()
    lobby, cm2 = Stream(w, "lobby"), Stream(w, "cm2")
    try:
        assert lobby.next_event()[0] == "snapshot" and cm2.next_event()[0] == "snapshot"
        before = time.time()
        w.walk_in(CARD[1])
        name, event_id, data = lobby.next_event()
        assert name == "arrival" and event_id is not None and event_id >= 1
        assert data["visit_id"] and before - 1 < data["arrived_unix"] <= time.time()
        assert data["customer"]["customer_no"] == "C1" and data["customer"]["id_number"].endswith("1234")
        assert C1_ID not in json.dumps(data) and data["told"] == ["cm1", "lobby"]

        w.walk_in(CARD[2])  # cm2's own customer: the first thing cm2 hears, C1 never
        name, _, theirs = cm2.next_event()
        assert name == "arrival" and theirs["customer"]["customer_no"] == "C2"
        assert lobby.next_event()[2]["customer_no"] == "C2"

        ack_client = w.client("lobby")
        assert wait_for(lambda: told(w, data["visit_id"], "lobby"))
        answer = ack_client.post(
            f"/console/ack/{data['visit_id']}", headers={"X-CSRF-Token": csrf_of(ack_client)}
        )
        assert answer.status_code == 200, answer.text
        name, ack_id, ack = lobby.next_event()
        assert name == "acknowledged" and ack_id > event_id
        assert ack["visit_id"] == data["visit_id"] and ack["staff_id"] == "lobby" and ack["via"] == "web"
        assert ack["arrived_unix"] == data["arrived_unix"]

        feed = w.server.ctx.extensions["live"]
        t0 = time.monotonic()
        feed.close()  # what server.stop() does: every stream ends at once
        with pytest.raises(EOFError):
            while True:
                lobby.next_event(timeout=3)
        assert time.monotonic() - t0 < 2
    finally:
        lobby.close()
        cm2.close()


def test_a_lagging_subscriber_is_dropped_not_waited_for(web_branch):
    from vipsense.web.live import QUEUE_SIZE, LiveFeed

    w = web_branch()
    feed = LiveFeed(w.branch)
    try:
        slow = feed.subscribe(lambda manager: True)
        picky = feed.subscribe(lambda manager: manager == "cm2")
        t0 = time.perf_counter()
        for n in range(QUEUE_SIZE + 5):
            feed.publish("arrival", {"visit_id": f"v{n}", "arrived_unix": time.time()}, "cm1")
        assert time.perf_counter() - t0 < 0.5
        assert slow.dropped and slow.closed and feed.dropped == 1
        assert picky.queue.empty() and not picky.closed  # cm1's events never reach a cm2 filter
        assert feed.subscribers == 1
    finally:
        feed.close()


# -- who sees which customer -----------------------------------------------------------------------------


def test_client_manager_never_sees_another_managers_customer(web_branch):
    w = web_branch()
    ids = arrive(w, 1, 2, 3, 4)
    cm1 = w.client("cm1")
    seen = {v["customer_no"] for v in snapshot(cm1)["visits"]}
    assert seen == {"C1", "C3", "C4"}
    history = cm1.get("/console/visits", headers=JSON)
    assert {v["customer_no"] for v in history.json["visits"]} == {"C1", "C3", "C4"}
    pages = [
        history.text,
        cm1.get("/console/visits").text,
        cm1.get("/console").text,
        cm1.get("/console/lookup", query_string={"q": "C1"}).text,
    ]
    for text in pages:
        assert "李秀英" not in text and "东方医药集团" not in text and ids["C2"] not in text
    for url in (
        f"/console/visit/{ids['C2']}",
        "/console/customer/C2",
        "/console/photo/C2",
        "/console/lookup?q=C2",
    ):
        response = cm1.get(url, headers=JSON)
        assert response.status_code == 404, url
        assert "李秀英" not in response.text and "东方医药集团" not in response.text, url
        assert not response.json.get("customers") and "4321" not in response.text
    by_id = cm1.post(
        "/console/lookup", data={"q": C2_ID, "reason": "x"}, headers={**JSON, "X-CSRF-Token": csrf_of(cm1)}
    )
    assert by_id.status_code == 403  # a client manager may not search by ID number at all
    assert "李秀英" not in by_id.text and "4321" not in by_id.text
    denied = [e for e in audit_entries(w, AuditAction.LOOKUP, "cm1") if e.result is AuditResult.DENIED]
    assert [e.object for e in denied] == ["C2", "id_number **************5678"]
    assert C2_ID not in "".join(e.reason + e.object for e in denied)

    cm2 = w.client("cm2")
    assert {v["customer_no"] for v in snapshot(cm2)["visits"]} == {"C2"}
    assert cm2.get(f"/console/visit/{ids['C1']}", headers=JSON).status_code == 404
    lobby_seen = {
        v["customer_no"] for v in w.client("lobby").get("/console/visits", headers=JSON).json["visits"]
    }
    assert lobby_seen == {"C1", "C2", "C3", "C4"}


def test_strip_snapshot_is_current_plus_six(web_branch):
    w = web_branch()
    arrive(w, 1, 2, 3, 4)
    snap = snapshot(w.client("boss"))
    times = [v["arrived_unix"] for v in snap["visits"]]
    assert len(times) == 4 and times == sorted(times, reverse=True)  # newest (the current) first


# -- acknowledging ----------------------------------------------------------------------------------------


def test_acknowledge_once_and_recorded(web_branch):
    w = web_branch()
    visit_id = arrive(w, 1)["C1"]
    assert wait_for(lambda: told(w, visit_id, "lobby"))
    lobby = w.client("lobby")
    token = csrf_of(lobby)

    missing = lobby.post(f"/console/ack/{visit_id}")
    assert missing.status_code == 400 and "CSRF" in missing.text
    first = lobby.post(f"/console/ack/{visit_id}", headers={"X-CSRF-Token": token})
    assert first.status_code == 200 and first.json["key"] == f"{visit_id}:lobby"
    again = lobby.post(f"/console/ack/{visit_id}", data={"csrf_token": token})
    assert again.status_code == 409 and "already" in again.json["error"]
    assert w.branch.status.counters["acknowledged"] == 1

    _, records = load(w.branch.data_dir, 0, time.time() + 1)
    [mine] = [r for r in records if r.key == f"{visit_id}:lobby"]
    assert mine.acknowledged_at is not None
    assert wait_for(lambda: [r.acknowledged_by for r in visits_of(w)] == ["lobby"])

    boss = w.client("boss")  # the arrival was not sent to the branch manager
    refused = boss.post(f"/console/ack/{visit_id}", headers={"X-CSRF-Token": csrf_of(boss)})
    assert refused.status_code == 404 and "not sent to boss" in refused.json["error"]
    unknown = lobby.post("/console/ack/0123456789abcdef", headers={"X-CSRF-Token": token})
    assert unknown.status_code == 404
    assert w.branch.status.counters["acknowledged"] == 1
    shown = snapshot(lobby)["visits"][0]
    assert shown["acknowledged_by"] == ["lobby"]


# -- unmasking --------------------------------------------------------------------------------------------


def test_unmask_needs_the_permission_and_a_reason(web_branch):
    w = web_branch()
    boss, cm1 = w.client("boss"), w.client("cm1")
    url = "/console/customer/C1/unmask"
    no_reason = boss.post(url, headers={**JSON, "X-CSRF-Token": csrf_of(boss)})
    assert no_reason.status_code == 400 and "reason" in no_reason.json["error"]
    refused = cm1.post(url, data={"reason": "customer asked"}, headers={**JSON, "X-CSRF-Token": csrf_of(cm1)})
    assert refused.status_code == 403
    assert C1_ID not in refused.text

    shown = boss.post(
        url, data={"reason": "phone appointment"}, headers={**JSON, "X-CSRF-Token": csrf_of(boss)}
    )
    assert shown.status_code == 200
    assert shown.json["unmasked"] == {"id_number": C1_ID, "mobile": C1_MOBILE}
    assert shown.json["customer"]["id_number"] == "**************1234"
    page = boss.post(url, data={"reason": "phone appointment", "csrf_token": csrf_of(boss)})
    assert C1_ID in page.text and C1_MOBILE in page.text

    entries = [e for e in audit_entries(w, AuditAction.UNMASK, "boss") if e.result is AuditResult.SUCCESS]
    assert [(e.object, e.reason) for e in entries] == [("C1", "phone appointment")] * 2
    denied = audit_entries(w, AuditAction.UNMASK, "cm1")
    assert [e.result for e in denied] == [AuditResult.DENIED]
    masked = w.client("boss").get("/console/customer/C1").text
    assert C1_ID not in masked and "**************1234" in masked


# -- hostile strings, look-up, history ----------------------------------------------------------------


def test_hostile_customer_fields_are_escaped(web_branch):
    w = web_branch()
    visit_id = arrive(w, 4)["C4"]
    cm1 = w.client("cm1")
    for url in (
        "/console/visits",
        f"/console/visit/{visit_id}",
        "/console/customer/C4",
        "/console/lookup?q=C4",
    ):
        text = cm1.get(url).text
        assert SCRIPT not in text and "<img src=x" not in text and "<svg onload" not in text, url
        assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in text, url
        assert "&lt;img src=x onerror=alert(&#39;company&#39;)&gt;" in text, url
    page = cm1.get("/console")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script>" not in page.text  # the page's own script is a static file
    assert 'src="/static/console.js"' in page.text


def test_a_number_typed_into_a_free_text_field_is_masked_on_every_console_view(web_branch):
    """Pen test point 10: an ID number typed into the name field, a mobile into the company, were
    shown in clear on the console (live feed, customer page, look-up)."""
    typed = 'name: "Cai Yun 310102198002081033", company: "tel 139 0000 7919",'
    seed = WEB_SEED.replace("name: Cai Yun,", typed)
    w = web_branch(seed=seed)
    arrive(w, 3)
    cm1 = w.client("cm1")
    texts = [json.dumps(snapshot(cm1), ensure_ascii=False)]
    pages = ("/console/customer/C3", "/console/lookup?q=C3", "/console/visits")
    texts += [cm1.get(url).text for url in pages]
    for text in texts:
        assert "310102198002081033" not in text and "139 0000 7919" not in text
    assert "Cai Yun **************1033" in texts[0] and "Cai Yun **************1033" in texts[1]


VALID_ID = "110101199003071233"  #: C1's ID number with its right check digit (GB 11643)
VALID_SEED = WEB_SEED.replace(C1_ID, VALID_ID)


def test_lookup_by_customer_number_and_id_number(web_branch):
    w = web_branch(seed=VALID_SEED)
    cm1, boss = w.client("cm1"), w.client("boss")
    by_no = cm1.get("/console/lookup", query_string={"q": "C1"}, headers=JSON)
    assert by_no.status_code == 200 and [c["customer_no"] for c in by_no.json["customers"]] == ["C1"]
    token = csrf_of(boss)
    by_id = boss.post(
        "/console/lookup", data={"q": VALID_ID, "reason": "phone"}, headers={**JSON, "X-CSRF-Token": token}
    )
    assert by_id.status_code == 200
    assert [c["name"] for c in by_id.json["customers"]] == ["王建国 Wang Jianguo"]
    assert VALID_ID not in by_id.text and by_id.json["query"] == "id_number **************1233"
    lower_x = boss.post(
        "/console/lookup",
        data={"q": "44030519900101002x", "reason": "phone"},
        headers={**JSON, "X-CSRF-Token": token},
    )
    assert lower_x.status_code == 400 and "check digit" in lower_x.json["error"]  # validated as an ID number
    no_reason = boss.post("/console/lookup", data={"q": VALID_ID}, headers={**JSON, "X-CSRF-Token": token})
    assert no_reason.status_code == 400 and "reason" in no_reason.json["error"]
    in_the_address = boss.get("/console/lookup", query_string={"q": VALID_ID, "reason": "x"}, headers=JSON)
    assert in_the_address.status_code == 400 and "POST" in in_the_address.json["error"]
    nothing = cm1.get("/console/lookup", query_string={"q": "C99"}, headers=JSON)
    assert nothing.status_code == 404
    bad = cm1.get("/console/lookup", query_string={"q": "<b>x</b>"}, headers=JSON)
    assert bad.status_code == 400 and "customer number" in bad.json["error"]

    lookups = audit_entries(w, AuditAction.LOOKUP, "cm1")
    assert [(e.object, e.result) for e in lookups] == [
        ("C1", AuditResult.SUCCESS),
        ("C99", AuditResult.SUCCESS),
    ]
    assert lookups[-1].reason.endswith("no match")
    mine = audit_entries(w, AuditAction.LOOKUP, "boss")
    assert [(e.object, e.result, e.reason) for e in mine] == [
        ("C1", AuditResult.SUCCESS, "phone"),
        ("id_number **************1233", AuditResult.DENIED, "denied: no reason given"),
    ]
    assert all(VALID_ID not in e.object + e.reason for e in lookups + mine)


def test_history_by_date_and_time_range(web_branch):
    import datetime as dt

    w = web_branch()
    arrive(w, 1)
    lobby = w.client("lobby")
    now = dt.datetime.now()
    today = now.date().isoformat()
    window = {
        "date": today,
        "from": (now - dt.timedelta(minutes=2)).strftime("%H:%M"),
        "to": now.strftime("%H:%M"),
    }
    if window["from"] > window["to"]:  # just after midnight: the whole morning
        window["from"] = "00:00"
    hit = lobby.get("/console/visits", query_string=window, headers=JSON)
    assert hit.status_code == 200 and [v["customer_no"] for v in hit.json["visits"]] == ["C1"]
    yesterday = (now.date() - dt.timedelta(days=1)).isoformat()
    assert lobby.get("/console/visits", query_string={"date": yesterday}, headers=JSON).json["visits"] == []
    assert "王建国" in lobby.get("/console/visits", query_string=window).text
    views = audit_entries(w, AuditAction.VIEW, "lobby")
    assert f"visits {yesterday} 00:00-23:59" in [e.object for e in views]


@pytest.mark.parametrize(
    "query, words",
    [
        ({"date": "2025-13-01"}, "YYYY-MM-DD"),
        ({"date": "yesterday"}, "YYYY-MM-DD"),
        ({"date": "20250101"}, "YYYY-MM-DD"),
        ({"from": "9am"}, "HH:MM"),
        ({"to": "25:00"}, "HH:MM"),
        ({"from": "10:00", "to": "09:00"}, "ends before it starts"),
    ],
)
def test_bad_dates_and_times_are_400(web_branch, query, words):
    w = web_branch()
    lobby = w.client("lobby")
    answer = lobby.get("/console/visits", query_string=query, headers=JSON)
    assert answer.status_code == 400 and words in answer.json["error"]
    page = lobby.get("/console/visits", query_string=query)
    assert page.status_code == 400 and words in page.text and "Traceback" not in page.text


def test_photo_is_the_drawn_portrait_without_a_stored_photo(web_branch):
    w = web_branch()
    photo = w.client("lobby").get("/console/photo/C1")
    assert photo.status_code == 200 and photo.mimetype == "image/svg+xml"
    assert photo.data.startswith(b"<svg") and "建国".encode() in photo.data
    assert photo.headers["Content-Security-Policy"] == "default-src 'none'"
    assert w.client("admin1").get("/console/photo/C1").status_code == 403
    assert audit_entries(w, AuditAction.VIEW, "lobby")[-1].reason == "photo"


def test_server_stop_ends_open_streams(web_branch):
    """A second WebServer of the same branch (same accounts), stopped by the test itself."""
    from vipsense.web.server import WebServer

    w = web_branch()
    server = WebServer(w.branch, w.branch.profile.web)
    server.start()
    own = WebBranch(w.branch, server)
    stream = Stream(own, "lobby")
    try:
        assert stream.next_event()[0] == "snapshot"
        t0 = time.monotonic()
        server.stop()
        with pytest.raises((EOFError, socket.timeout, ConnectionError)):
            stream.next_event(timeout=3)
        assert time.monotonic() - t0 < 3.5
    finally:
        stream.close()
