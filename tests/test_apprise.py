"""The Apprise notifier against a real HTTP server on 127.0.0.1 (Apprise's ``json://`` service posts
to it): what a message carries and what it never does, URLs kept out of repr, errors and logs,
failures retried only where they happened, and one arrival through a running Branch."""

from __future__ import annotations

import base64
import http.server
import io
import json
import logging
import re
import socket
import sys
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

pytest.importorskip("apprise")

from vipsense.api import DeliveryFailed, Duration, PluginContext
from vipsense.branch import Branch
from vipsense.clock import Clock
from vipsense.config import ProfileError
from vipsense.config.profile import load_profile
from vipsense.model import (
    Arrival,
    Customer,
    Notification,
    RejectReason,
    Role,
    Staff,
    TagRead,
    Visit,
    VisitKind,
)
from vipsense.output import Output
from vipsense.plugins.notifiers.apprise_sink import AppriseNotifier, AppriseSettings, url_secrets

from .conftest import REPO, wait_for
from .profiles import BOSS, LOBBY, branch_profile, routes

ID_NUMBER, MOBILE, STAFF_MOBILE = "110101199003071234", "13812345678", "13900001111"
PASSWORD = "s3cretPassw0rd"
TOKEN = "tok3nInThePath9"  #: a webhook-style credential in the URL's path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """An HTTP server on 127.0.0.1 that records each post (headers, JSON body)."""

    def __init__(self, port: int = 0, status: int = 200, delay: float = 0.0) -> None:
        self.status, self.delay, self.posts = status, delay, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append((self.path, dict(self.headers), json.loads(body)))
                if outer.delay:
                    time.sleep(outer.delay)
                try:
                    self.send_response(outer.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = f"hook/{TOKEN}") -> str:
        return f"json://bot:{PASSWORD}@127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kw) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def notifier(*urls: str, **kw) -> AppriseNotifier:
    settings = AppriseSettings(urls=urls, **kw)
    here = Path(".")
    ctx = PluginContext(
        branch_id="b1",
        branch_name="Hook Branch",
        item_id="chat",
        data_dir=here,
        profile_dir=here,
        clock=Clock(),
        output=Output(io.StringIO(), live=False),
        log=logging.getLogger("vipsense.notifier.chat"),
        tz=ZoneInfo("Asia/Shanghai"),
    )
    return AppriseNotifier(settings, ctx)


def notification(kind: VisitKind = VisitKind.GREETED, reason: RejectReason | None = None) -> Notification:
    customer = Customer(
        "C1", "Ada Wong", tier="gold", company="Acme", id_number=ID_NUMBER, mobile=MOBILE, usual_business="FX"
    )
    arrival = Arrival("E2000000000000000000000A", "door", 1, 0.0, 0.1, 3, -50.0)
    visit = Visit("v1", "b1", kind, arrival, 1_764_600_000.5, customer=customer, reason=reason, tier="gold")
    boss = Staff("boss", "Branch Boss", Role.BRANCH_MANAGER, mobile=STAFF_MOBILE)
    return Notification("v1:boss", visit, boss, "chat", 0.0, 0.0)


def assert_private(text: str) -> None:
    for secret in (ID_NUMBER, MOBILE, STAFF_MOBILE, PASSWORD, TOKEN):
        assert secret not in text, text


def test_a_post_carries_the_pager_text_and_masked_fields(receiver):
    r = receiver()
    n = notifier(r.url(), fields=("customer_no", "name", "id_number", "mobile"))
    n.send(notification())
    [(path, headers, doc)] = r.posts
    assert path == f"/hook/{TOKEN}"
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"bot:{PASSWORD}".encode()).decode()
    assert doc["title"] == "Hook Branch: VIP arrival Ada Wong" and doc["type"] == "info"
    lines = doc["message"].splitlines()
    assert lines[0].endswith("VIP Ada Wong (GOLD) at door.")
    assert lines[2:] == [
        "Customer no.: C1",
        "Name: Ada Wong",
        "ID number: **************1234",
        "Mobile: 138****5678",
    ]
    assert_private(json.dumps(doc, ensure_ascii=False))
    assert n.health()["sent"] == 1 and n.health()["services"] == ["JSON (urls[0])"]


def test_default_fields_and_a_chinese_alert(receiver):
    r = receiver()
    n = notifier(r.url(), language="zh", title="【{branch}】{event}：{name}（{tier}）{time}")
    n.send(notification(VisitKind.REJECTED, RejectReason.LOST))
    [(_, _, doc)] = r.posts
    assert doc["type"] == "warning"
    assert doc["title"].startswith("【Hook Branch】卡片警报：Ada Wong（gold）")
    assert "卡片警报：已挂失" in doc["message"] and "证件尾号1234" in doc["message"]
    assert doc["message"].splitlines()[2:] == ["姓名：Ada Wong", "等级：gold", "单位：Acme", "常办业务：FX"]
    assert_private(json.dumps(doc, ensure_ascii=False))


def test_an_unreachable_server_is_retried_quickly():
    port = free_port()
    n = notifier(f"json://bot:{PASSWORD}@127.0.0.1:{port}/hook")
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as exc:
        n.send(notification())
    assert exc.value.retry is True and time.monotonic() - started < 2
    assert str(exc.value).startswith("Apprise could not deliver to 1 of 1: JSON (urls[0]): ")
    assert "onnection" in str(exc.value)  # Apprise's own words: "A Connection error occurred ..."
    assert_private(str(exc.value))
    assert n.health()["last_error"] == str(exc.value) and n.health()["failed"] == 1


def test_a_server_error_is_retried(receiver):
    r = receiver(status=503)
    with pytest.raises(DeliveryFailed) as exc:
        notifier(r.url()).send(notification())
    assert exc.value.retry is True and "503" in str(exc.value) and len(r.posts) == 1
    assert_private(str(exc.value))


@pytest.mark.slow
def test_a_slow_server_runs_into_the_timeout(receiver):
    r = receiver(delay=3.0)
    n = notifier(r.url(), timeout=Duration(0.5))
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as exc:
        n.send(notification())
    assert exc.value.retry is True and time.monotonic() - started < 1.5
    assert "no answer within 0.5s" in str(exc.value)


def test_a_retry_goes_only_to_the_urls_that_failed(receiver):
    good = receiver()
    later = free_port()
    n = notifier(good.url(), f"json://127.0.0.1:{later}/down")
    with pytest.raises(DeliveryFailed) as exc:
        n.send(notification())
    assert exc.value.retry is True
    assert "could not deliver to 1 of 2: JSON (urls[1])" in str(
        exc.value
    ) and "delivered to the other 1" in str(exc.value)
    assert len(good.posts) == 1
    back = receiver(port=later)  # the second endpoint comes back before the outbox's retry
    n.send(notification())
    assert len(good.posts) == 1 and len(back.posts) == 1
    n.send(notification())  # a new delivery of the same key (not a retry) goes everywhere again
    assert len(good.posts) == 2 and len(back.posts) == 2


def test_a_bad_url_is_a_clear_factory_error_without_its_credentials(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    r = receiver()
    for bad, schema in ((f"nosuch://user:{PASSWORD}@host/x", "nosuch"), ("json://", "json")):
        with pytest.raises(ValueError) as exc:
            notifier(r.url(), bad)
        assert str(exc.value).startswith(f"urls[1]: Apprise cannot use this {schema}:// URL")
        assert PASSWORD not in str(exc.value)
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"urls": ()}, "needs at least one Apprise URL"),
        ({"urls": (f"mailto-{PASSWORD}",)}, r"urls\[0\] is not an Apprise URL"),
        ({"title": "{branch} {id_number}"}, r"unknown placeholder\(s\) \['id_number'\]"),
        ({"title": "{branch"}, "title is not a valid template"),
        ({"fields": ("photo",)}, r"unknown customer field\(s\) \['photo'\]"),
        ({"timeout": Duration(0)}, "timeout must be more than 0"),
    ],
)
def test_settings_are_checked(settings, words):
    values = {"urls": (f"json://bot:{PASSWORD}@127.0.0.1/x",), **settings}
    with pytest.raises(ValueError, match=words) as exc:
        AppriseSettings(**values)
    assert PASSWORD not in str(exc.value)


def test_urls_are_in_no_repr_and_no_log(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    r = receiver()
    n = notifier(r.url(), f"json://bot:{PASSWORD}@127.0.0.1:{free_port()}/{TOKEN}")
    assert repr(n.settings).startswith("AppriseSettings(urls=<2 URL(s), hidden>")
    assert PASSWORD not in repr(n.settings) and PASSWORD not in repr(n.health())
    with pytest.raises(DeliveryFailed):
        n.send(notification())
    assert len(r.posts) == 1
    assert "JSON" in caplog.text and "127.0.0.1" in caplog.text  # Apprise and urllib3 did log
    for secret in (PASSWORD, TOKEN, base64.b64encode(f"bot:{PASSWORD}".encode()).decode(), ID_NUMBER, MOBILE):
        assert secret not in caplog.text


def test_url_secrets_cover_userinfo_tokens_and_query_values():
    found = url_secrets("tgram://123456:ABCDEFtoken/-100200300/?apikey=KEY123456&format=text")
    assert {"123456", "ABCDEFtoken", "-100200300", "KEY123456"} <= found and "text" not in found
    found = url_secrets("mailtos://ops:p%40ss@mail.bank.example?to=duty@bank.example")
    assert {"ops", "p%40ss", "p@ss"} <= found and "mail.bank.example" not in found


def test_without_apprise_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "apprise", None)
    with pytest.raises(ImportError, match=r"pip install 'vipsense\[apprise\]'"):
        notifier("json://127.0.0.1/x")


PROFILE = branch_profile(
    branch="{id: chat-branch, name: Chat Branch}",
    notifiers=[
        "{id: chat, type: apprise, urls: [!secret chat_url], fields: [name, tier, mobile], timeout: 2s}"
    ],
    staff=[LOBBY, BOSS],
    routing=routes("chat", client_manager=False, rejected_to_lobby=False),
)


def test_an_arrival_through_a_real_branch(receiver, running_branch, tmp_path):
    r = receiver()
    (tmp_path / "secrets.yaml").write_text(f"chat_url: {r.url()}\n", encoding="utf-8")
    branch = running_branch(PROFILE, wait_open=False)
    assert PASSWORD not in repr(branch.profile.notifiers[0].settings)
    for _ in range(3):
        branch.pipeline.submit(TagRead("door", 1, "E20000000000000000000001", -50.0, branch.clock.mono()))
    assert wait_for(lambda: len(r.posts) == 1)
    [(_, _, doc)] = r.posts
    assert doc["title"] == "Chat Branch: VIP arrival Ada Wong"
    assert doc["message"].splitlines()[2:] == ["Name: Ada Wong", "Tier: gold", "Mobile: 138****5678"]
    assert_private(json.dumps(doc, ensure_ascii=False))


def test_a_bad_url_in_a_profile_leaves_the_notifier_failed_naming_its_index(write_profile, host, tmp_path):
    (tmp_path / "secrets.yaml").write_text(f"chat_url: nosuch://u:{PASSWORD}@h/x\n", encoding="utf-8")
    profile = load_profile(write_profile(PROFILE), host, data_dir=tmp_path / "data")
    out = io.StringIO()
    branch = Branch(profile, host, output=Output(out, live=False))
    try:
        device = branch.status.devices["chat"].snapshot()
        assert device["state"] == "failed" and "urls[0]: Apprise cannot use this nosuch:// URL" in str(device)
        assert PASSWORD not in str(device)
    finally:
        branch.stop()


def test_a_plain_string_is_not_a_list_of_urls_in_a_profile(write_profile, host):
    text = PROFILE.replace("urls: [!secret chat_url]", "urls: json://127.0.0.1/x")
    with pytest.raises(ProfileError, match="expected a list"):
        load_profile(write_profile(text), host)


def doc_profile(kind: str) -> str:
    """The example of ``docs/notifiers-smpp-apprise.md`` for ``kind``, as a whole branch profile."""
    text = (REPO / "docs" / "notifiers-smpp-apprise.md").read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if f"type: {kind}" in b]
    head = "branch: {id: doc, name: Doc}\nreaders:\n  - {id: door, type: simulated, visitors: []}\n"
    return head + "stores:\n  - {id: local, type: sqlite, seed: [seed.yaml]}\n" + block


def test_the_documented_example_is_a_valid_profile(write_profile, host, tmp_path):
    (tmp_path / "secrets.yaml").write_text(
        "branch_chat_url: json://127.0.0.1/chat\nduty_mailbox_url: mailtos://u:p@mail.bank.example\n",
        encoding="utf-8",
    )
    profile = load_profile(write_profile(doc_profile("apprise")), host, data_dir=tmp_path / "data")
    [chat] = profile.notifiers
    assert len(chat.settings.urls) == 2 and chat.settings.fields == ("name", "tier", "company")
    assert "json://" not in repr(chat.settings)
