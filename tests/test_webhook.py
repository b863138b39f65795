"""The webhook notifier against a real HTTP server on 127.0.0.1: signatures, masking, the status
codes that are retried and those that are not, redirects (never followed), timeouts, and one arrival
through a real Branch."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import socket
import threading
import time
import types

import pytest

from vipsense.api import DeliveryFailed, Duration, Secret
from vipsense.model import Arrival, Customer, Notification, Role, Staff, TagRead, Visit, VisitKind
from vipsense.plugins.notifiers.webhook import WebhookNotifier, WebhookSettings

from .conftest import wait_for
from .profiles import BOSS, LOBBY, branch_profile, routes

KEY = "test-hmac-key"
ID_NUMBER = "110101199003071234"
MOBILE = "13812345678"


def verify(headers, body: bytes, key: str = KEY) -> bool:
    ts = headers["X-Vipsense-Timestamp"]
    mac = hmac.new(key.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("sha256=" + mac, headers["X-Vipsense-Signature"])


class Receiver:
    """An HTTP server on a free 127.0.0.1 port that checks each post's signature and records it."""

    def __init__(self, status: int = 200, delay: float = 0.0, location: str | None = None):
        self.status, self.delay, self.location, self.posts = status, delay, location, []
        self.others: list[tuple[str, str]] = []  #: (method, path) of every request but a POST
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append((dict(self.headers), body, verify(self.headers, body)))
                if outer.delay:
                    time.sleep(outer.delay)
                try:
                    self.send_response(outer.status)
                    if outer.location is not None:
                        self.send_header("Location", outer.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def do_GET(self):  # where a followed redirect would land: the body is gone by then
                outer.others.append(("GET", self.path))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(**kw):
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def notifier(url: str, **kw) -> WebhookNotifier:
    settings = WebhookSettings(url=url, secret=Secret(KEY, "secret:hook"), **kw)
    ctx = types.SimpleNamespace(branch_id="b1", resolve=lambda p: p)
    return WebhookNotifier(settings, ctx)


def notification(fields_customer=True) -> Notification:
    customer = Customer("C1", "Ada Wong", tier="gold", id_number=ID_NUMBER, mobile=MOBILE)
    arrival = Arrival("E2000000000000000000000A", "door", 1, 0.0, 0.1, 3, -50.0)
    visit = Visit("v1", "b1", VisitKind.GREETED, arrival, 1_764_600_000.5, customer=customer, tier="gold")
    boss = Staff("boss", "Branch Boss", Role.BRANCH_MANAGER, mobile="13900001111")
    return Notification("v1:boss", visit, boss, "hook", 0.0, 0.0)


def test_post_is_signed_keyed_and_masked(receiver):
    r = receiver()
    notifier(r.url, fields=("customer_no", "name", "id_number", "mobile")).send(notification())
    [(headers, body, ok)] = r.posts
    assert ok
    assert headers["Idempotency-Key"] == "v1:boss" and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["key"] == "v1:boss" and doc["event"] == "arrival" and doc["branch"] == "b1"
    assert doc["arrived_at"] == "2025-12-01T14:40:00.500000+00:00"
    assert doc["recipient"] == {"id": "boss", "role": "branch_manager"}
    assert doc["customer"] == {
        "customer_no": "C1",
        "name": "Ada Wong",
        "id_number": "**************1234",
        "mobile": "138****5678",
    }
    text = body.decode()
    assert ID_NUMBER not in text and MOBILE not in text and "13900001111" not in text
    tampered = body.replace(b"Ada Wong", b"Eve Wong")
    assert not verify(headers, tampered)
    assert not verify(headers, body, key="another-key")


def test_default_fields_leave_out_id_and_mobile(receiver):
    r = receiver()
    notifier(r.url).send(notification())
    doc = json.loads(r.posts[0][1])
    assert set(doc["customer"]) == {"customer_no", "name", "tier", "company", "usual_business"}
    assert "1234" not in r.posts[0][1].decode()


def test_settings_repr_masks_the_secret():
    s = WebhookSettings(url="https://example.invalid/x", secret=Secret(KEY))
    assert KEY not in repr(s)
    with pytest.raises(ValueError):
        WebhookSettings(url="ftp://example.invalid/x", secret=Secret(KEY))
    with pytest.raises(ValueError):
        WebhookSettings(url="https://example.invalid/x", secret=Secret(KEY), fields=("photo",))


@pytest.mark.slow
@pytest.mark.parametrize("status,retry", [(500, True), (503, True), (429, True), (408, True), (400, False)])
def test_status_codes(receiver, status, retry):
    r = receiver(status=status)
    with pytest.raises(DeliveryFailed) as e:
        notifier(r.url).send(notification())
    assert e.value.retry is retry
    assert str(status) in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("status,retry", [(301, False), (302, True), (303, True), (307, True), (308, False)])
def test_a_redirect_is_a_failure_that_says_where_it_pointed(receiver, status, retry):
    """Attack: an endpoint (or someone in its path) answers the POST with a redirect.  urllib used to
    follow a 301/302/303 as a GET without the body and count its 200 as a delivery."""
    r = receiver(status=status)
    port = r.server.server_address[1]
    r.location = f"http://127.0.0.1:{port}/elsewhere?token=q-secret#frag"
    with pytest.raises(DeliveryFailed) as e:
        notifier(r.url).send(notification())
    message = str(e.value)
    where = f"http://127.0.0.1:{port}/elsewhere"
    assert message == f"{r.url} redirected to {where} (HTTP {status}): not followed, not delivered"
    assert e.value.retry is retry
    assert "q-secret" not in message
    assert len(r.posts) == 1 and r.others == []  # posted once, and nothing went where it pointed


def test_a_redirect_without_location_or_with_control_characters_is_shown_safely(receiver):
    r = receiver(status=302)
    with pytest.raises(DeliveryFailed) as e:
        notifier(r.url).send(notification())
    assert str(e.value) == f"{r.url} answered HTTP 302, a redirect without a Location: not delivered"
    r.location = "/moved\x1b[2J\xe2\x80\xaeevil"  # relative; an escape sequence, a bidi override (UTF-8)
    with pytest.raises(DeliveryFailed) as e:
        notifier(r.url).send(notification())
    port = r.server.server_address[1]
    assert f"redirected to http://127.0.0.1:{port}/moved%1B[2J%E2%80%AEevil (HTTP 302)" in str(e.value)
    r.status, r.location = 308, f"http://lure:pa55@127.0.0.1:{port}/x"  # credentials stay out too
    with pytest.raises(DeliveryFailed) as e:
        notifier(r.url).send(notification())
    message = str(e.value)
    assert f"redirected to http://127.0.0.1:{port}/x (HTTP 308)" in message and "pa55" not in message
    assert r.others == []


def test_credentials_in_the_url_stay_out_of_status_and_errors(receiver):
    r = receiver(status=500)
    url = r.url.replace("http://", "http://hookuser:hook-pa55@") + "?token=q-secret"
    n = notifier(url)
    with pytest.raises(DeliveryFailed) as e:
        n.send(notification())
    shown = str(e.value) + repr(n.health())
    assert "hook-pa55" not in shown and "q-secret" not in shown and "hookuser" not in shown
    assert r.url.split("//")[1] in shown  # still says where


def test_closed_port_is_retried_quickly():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    start = time.monotonic()
    with pytest.raises(DeliveryFailed) as e:
        notifier(f"http://127.0.0.1:{port}/hook", request_timeout=Duration(1)).send(notification())
    assert e.value.retry is True and "unreachable" in str(e.value)
    assert time.monotonic() - start < 1.5


@pytest.mark.slow
def test_slow_server_times_out_and_is_retried(receiver):
    r = receiver(delay=2.0)
    start = time.monotonic()
    with pytest.raises(DeliveryFailed) as e:
        notifier(r.url, request_timeout=Duration(0.5)).send(notification())
    took = time.monotonic() - start
    assert e.value.retry is True and "within 0.5s" in str(e.value)
    assert 0.4 < took < 1.5


PROFILE = branch_profile(
    branch="{id: hook-branch, name: Hook Branch}",
    notifiers=['{id: hook, type: webhook, url: "%(url)s", secret: !secret hook_key, request_timeout: 2s}'],
    staff=[LOBBY, BOSS],
    routing=routes("hook", client_manager=False, rejected_to_lobby=False),
)


@pytest.mark.slow
def test_arrival_through_a_real_branch(receiver, running_branch, tmp_path):
    r = receiver()
    (tmp_path / "secrets.yaml").write_text(f"hook_key: {KEY}\n", encoding="utf-8")
    branch = running_branch(PROFILE % {"url": r.url}, wait_open=False)
    for _ in range(3):
        branch.pipeline.submit(TagRead("door", 1, "E20000000000000000000001", -50.0, branch.clock.mono()))
    assert wait_for(lambda: len(r.posts) == 1)
    headers, body, ok = r.posts[0]
    doc = json.loads(body)
    assert ok and doc["event"] == "arrival" and doc["branch"] == "hook-branch"
    assert doc["customer"]["name"] == "Ada Wong" and doc["recipient"]["id"] == "lobby"
    assert headers["Idempotency-Key"] == doc["key"] == f"{doc['visit_id']}:lobby"
    assert ID_NUMBER not in body.decode() and MOBILE not in body.decode()
