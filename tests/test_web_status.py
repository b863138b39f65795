"""The status page, /api/status and the auditor's page, against a real running branch: a ThingMagic
emulator on loopback TCP that is taken away, a PDA agent found by zeroconf, a webhook notifier whose
URL and key are secrets, and the real audit log."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from vipsense.plugins.readers.thingmagic.emulator import EmulatedRead, EmulatorLink, ModuleEmulator, ReadQueue
from vipsense.storage.audit import AuditAction

from .conftest import wait_for
from .web_support import CARD, WEB_PROFILE

PDA_KEY = "pda-key-for-status-test-7c1e9b"
HOOK_SECRET = "hook-hmac-secret-2d8f41"
HOOK_PASSWORD = "hook-pass-9f8e7d"
HOOK_TOKEN = "tok-5a4b3c2d1e"
SECRETS = (PDA_KEY, HOOK_SECRET, HOOK_PASSWORD, HOOK_TOKEN)
PERSONAL = ("110101199003071234", "13812345678", "310101198512125678", "王建国", "Wang Jianguo", "李秀英")

SIDE = "  - {id: side, type: thingmagic, region: PRC, port: '%s'}\n"
EXTRA_NOTIFIERS = f"""\
  - id: hook
    type: webhook
    url: "http://hookuser:{HOOK_PASSWORD}@127.0.0.1:9/hook?token={HOOK_TOKEN}"
    secret: !secret hook_secret
  - id: pda
    type: pda
    key: !secret pda_key
    interfaces: [127.0.0.1]
    emulate: [{{name: 王芳的PDA, role: lobby, staff_id: lobby, auto_ack: 30m}}]
"""


def profile(side_url: str | None = None, rich: bool = False) -> str:
    text = WEB_PROFILE
    if side_url:
        text = text.replace("stores:\n", SIDE % side_url + "stores:\n", 1)
    if rich:
        text = text.replace("color: never}\n", "color: never}\n" + EXTRA_NOTIFIERS, 1)
    return text


@pytest.fixture
def side():
    """A ThingMagic module emulated behind a loopback TCP port: ``.stop()`` takes it away."""
    reads = ReadQueue()
    link = EmulatorLink.on_tcp(ModuleEmulator(reads)).start()
    link.reads = reads
    yield link
    link.stop()


@pytest.fixture
def rich(web_branch, side, tmp_path):
    """A branch with the door, the TCP reader, the webhook and the PDA notifier (agent discovered)."""
    (tmp_path / "secrets.yaml").write_text(f"pda_key: {PDA_KEY}\nhook_secret: {HOOK_SECRET}\n")
    web = web_branch(text=profile(side.url, rich=True))
    pda = web.branch.status.devices["pda"]
    assert wait_for(lambda: any(p["state"] != "gone" for p in pda.snapshot()["details"]["pdas"]), 15)
    assert wait_for(lambda: web.branch.status.devices["side"].state == "connected")
    return web


def status_of(client) -> dict:
    response = client.get("/api/status")
    assert response.status_code == 200, response.text[:300]
    assert response.mimetype == "application/json"
    return response.get_json()


def fresh_status(client, condition, timeout: float = 5.0) -> dict:
    """The API's answer once ``condition`` holds for it (the status is cached for half a second)."""
    seen: list[dict] = []
    if not wait_for(lambda: seen.append(status_of(client)) or condition(seen[-1]), timeout):
        last = seen[-1]
        readers = [(r["id"], r["state"], r.get("reads"), r.get("last_error")) for r in last["readers"]]
        pytest.fail(f"no status met the condition: today {last['today']}, readers {readers}")
    return seen[-1]


@pytest.mark.slow
def test_every_section_is_on_the_page_and_in_the_api(rich, side):
    boss = rich.client("boss")
    rich.walk_in(CARD[1])
    side.reads.add(*[EmulatedRead(CARD[2], antenna=1, rssi=-48)] * 3)
    status = fresh_status(
        boss,
        lambda s: (
            s["today"]["greeted"] >= 2
            and next(r for r in s["readers"] if r["id"] == "side")["reads"]
            # delivery follows the greeting on the notifier's own thread: wait for it too
            and next(n for n in s["notifiers"] if n["id"] == "screen")["delivered"] >= 2
        ),
    )
    page = boss.get("/status")
    assert page.status_code == 200
    html = page.text
    for section in ("readers", "stores", "notifiers", "pdas", "today", "plugins", "web"):
        assert f'<section id="{section}">' in html, section
    assert "status.js" in html and "<script>" not in html
    for item in ("door", "side", "local", "screen", "hook", "pda", "王芳的PDA", "cheroot"):
        assert item in html or item in json.dumps(status, ensure_ascii=False), item
    reader = next(r for r in status["readers"] if r["id"] == "side")
    assert reader["state"] == "connected" and reader["reads"] >= 3 and reader["last_read_at"]
    assert [s["state"] for s in status["stores"]] == ["ok"]
    pda = next(p for p in status["pdas"] if p["name"] == "王芳的PDA")
    assert (pda["staff"], pda["role"], pda["notifier"]) == ("lobby", "lobby", "pda") and pda["last_seen"]
    notifier = next(n for n in status["notifiers"] if n["id"] == "screen")
    assert notifier["delivered"] >= 2 and {"pending", "retrying", "failed", "expired"} <= notifier.keys()
    plugins = {p["name"]: p for p in status["plugins"]}
    assert plugins and all(p["state"] == "loaded" and "version" in p for p in plugins.values())
    assert status["web"]["state"] == "ready" and status["web"]["url"].startswith("http://127.0.0.1:")


@pytest.mark.slow
def test_api_shape_is_the_documented_one(web_branch):
    web = web_branch()
    web.walk_in(CARD[1])
    web.walk_in(CARD[9])  # a lost card: rejected
    status = fresh_status(web.client("lobby"), lambda s: s["today"]["arrivals"] >= 2)
    assert list(status) == [
        "ok", "state", "problems", "generated_at", "branch", "started_at", "readers", "stores",
        "notifiers", "pdas", "plugins", "today", "pipeline", "sync", "web", "held", "storage", "centre",
    ]  # fmt: skip
    assert status["centre"] == {}  # no centre: in this profile (docs/centre.md: the centre entry)
    assert isinstance(status["ok"], bool) and status["state"] in ("ok", "degraded", "down", "finished")
    assert status["branch"] == {"id": "web-branch", "name": "Web Test Branch"}
    assert set(status["readers"][0]) >= {
        "id",
        "type",
        "state",
        "reason",
        "since",
        "reads_per_s",
        "last_read_at",
    }
    assert set(status["stores"][0]) >= {
        "id", "state", "device_state", "reason", "lookups", "errors", "start_grace_s",
    }  # fmt: skip
    assert set(status["today"]) == {
        "date", "arrivals", "greeted", "rejected", "suspect", "reentries", "unknown", "unresolved",
        "acknowledged",
    }  # fmt: skip
    assert status["held"] == []
    assert status["today"]["date"] == dt.date.today().isoformat()
    assert status["today"]["greeted"] == 1 and status["today"]["rejected"] == 1
    assert set(status["pipeline"]) == {"reads", "reads_per_s", "stages"}
    assert status["pipeline"]["reads"] == 6


@pytest.mark.slow
def test_today_counts_survive_a_restart(web_branch, tmp_path):
    first = web_branch()
    first.walk_in(CARD[1])
    assert wait_for(lambda: first.branch.status.counters["greeted"] == 1)
    first.server.stop()
    first.branch.stop()
    again = web_branch(data_dir=tmp_path / "data", accounts={})  # the accounts are still there
    status = status_of(again.client("boss"))
    assert status["today"]["greeted"] == 1 and status["today"]["arrivals"] == 1


@pytest.mark.slow
def test_a_reader_that_goes_away_shows_disconnected_since_when_and_why(web_branch, side):
    web = web_branch(text=profile(side.url))
    assert wait_for(lambda: web.branch.status.devices["side"].state == "connected")
    boss = web.client("boss")
    side.stop()
    status = fresh_status(
        boss, lambda s: next(r for r in s["readers"] if r["id"] == "side")["state"] == "disconnected"
    )
    reader = next(r for r in status["readers"] if r["id"] == "side")
    assert reader["reason"] and reader["since"]
    assert status["ok"] is False and status["state"] in ("degraded", "down")
    assert any(p.startswith("reader side disconnected since ") for p in status["problems"])
    html = boss.get("/status").text
    row = re.search(r"<tr><td>side</td>.*?</tr>", html, re.S)
    assert row, html
    assert re.search(r"disconnected since \d\d:\d\d:\d\d \(\d+ s ago\): \w+", row.group()), row.group()


@pytest.mark.slow
def test_no_personal_data_or_secret_on_the_page_or_in_the_api(rich):
    boss = rich.client("boss")
    for n in (1, 2, 4):
        rich.walk_in(CARD[n])
    fresh_status(boss, lambda s: s["today"]["greeted"] >= 3)
    api = boss.get("/api/status").text
    html = boss.get("/status").text
    for text in (api, html):
        for leak in (*SECRETS, *PERSONAL, "<script>alert"):
            assert leak not in text, leak
    hook = next(n for n in json.loads(api)["notifiers"] if n["id"] == "hook")
    assert hook["details"]["endpoint"] == "http://127.0.0.1:9/hook"  # the notifier shows no credentials


def test_scrub_drops_secret_keys_and_masks_numbers():
    from vipsense.web.status import scrub

    dirty = {
        "api_key": "k",
        "Password": "p",
        "nested": {"auth_token": "t", "note": "call 13812345678 about 110101199003071234"},
        "url": "https://u:pw@example.test/x?sig=abc&n=1",
        "rows": [{"secret": 1, "ok": float("nan")}],
        "signal_dbm": -71,
        "obj": object(),
    }
    clean = scrub(dirty, frozenset({"pw-never"}))
    assert set(clean) == {"nested", "url", "rows", "signal_dbm", "obj"}
    assert clean["nested"] == {"note": "call 138****5678 about **************1234"}
    assert clean["url"] == "https://******@example.test/x?sig=******&n=1"
    assert clean["rows"] == [{"ok": None}] and clean["signal_dbm"] == -71


@pytest.mark.slow
def test_only_status_roles_see_the_status(web_branch):
    web = web_branch()
    for user in ("admin1", "boss", "lobby", "cm1", "issuer", "hq"):
        client = web.client(user)
        assert client.get("/status").status_code == 200, user
        assert client.get("/api/status").status_code == 200, user
    auditor = web.client("auditor1")
    assert auditor.get("/status").status_code == 403
    assert auditor.get("/api/status").status_code == 403
    anonymous = web.client()
    assert anonymous.get("/api/status").status_code == 401
    response = anonymous.get("/status")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.slow
def test_the_status_is_cached_briefly(web_branch):
    web = web_branch()
    boss = web.client("boss")
    first = status_of(boss)["generated_at"]
    assert status_of(boss)["generated_at"] == first
    assert wait_for(lambda: status_of(boss)["generated_at"] > first, 2)


# -- the audit page ----------------------------------------------------------------------------------


def audit_rows(html: str) -> list[list[str]]:
    body = html.split('<table id="entries">', 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(<td.*?)</tr>", body, re.S)]


@pytest.mark.slow
def test_audit_page_is_the_auditors_and_its_view_is_audited(web_branch):
    web = web_branch()
    for user in ("admin1", "boss", "lobby", "cm1", "issuer", "hq"):
        assert web.client(user).get("/audit").status_code == 403, user
    response = web.client().get("/audit")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    auditor = web.client("auditor1")
    page = auditor.get("/audit")
    assert page.status_code == 200
    assert 'id="chain" class="state-ok" data-ok="true"' in page.text
    views = list(web.branch.audit.entries(action=AuditAction.VIEW, actor="auditor1"))
    assert [(v.object, v.result.value, v.reason) for v in views] == [("audit log", "success", "page=1")]
    rows = audit_rows(page.text)
    assert rows[0][2:5] == ["auditor1", "auditor", "view"], rows[0]  # newest first: this very view
    seqs = [int(r[0]) for r in rows]
    assert seqs == sorted(seqs, reverse=True)
    assert re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}, \d{4} \d\d:\d\d:\d\d", rows[0][1])  # Dec 7, 2026 10:36:05


@pytest.mark.slow
def test_audit_filters_and_pages(web_branch):
    web = web_branch()
    log = web.branch.audit
    for i in range(250):
        log.append("clerk7", "card_issuer", "web-branch", AuditAction.LOOKUP, f"C{i}", "test", "success")
    log.append("clerk8", "card_issuer", "web-branch", AuditAction.EXPORT, "cards", "test", "success")
    auditor = web.client("auditor1")
    first = audit_rows(auditor.get("/audit?actor=clerk7&action=lookup").text)
    assert len(first) == 200 and first[0][5] == "C249" and {r[2] for r in first} == {"clerk7"}
    second = auditor.get("/audit?actor=clerk7&action=lookup&page=2").text
    assert [r[5] for r in audit_rows(second)] == [f"C{i}" for i in range(49, -1, -1)]
    assert 'rel="prev"' in second and 'rel="next"' not in second
    exports = audit_rows(auditor.get("/audit?action=export").text)
    assert [r[2] for r in exports] == ["clerk8"]
    today = dt.date.today()
    assert len(audit_rows(auditor.get(f"/audit?from={today}&to={today}&actor=clerk8").text)) == 1
    tomorrow = today + dt.timedelta(days=1)
    assert audit_rows(auditor.get(f"/audit?from={tomorrow}").text) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=yesterday", "from: 'yesterday' is not a date"),
        ("to=2024-13-01", "to: '2024-13-01' is not a date"),
        ("from=2024-05-02&to=2024-05-01", "is before from"),
        ("action=launch", "'launch' is no audit action"),
        ("page=0", "is not a page number"),
        ("page=x", "is not a page number"),
        ("actor=" + "a" * 65, "at most 64 characters"),
    ],
)
def test_bad_audit_filters_are_400_with_a_clear_message(web_branch, query, message):
    web = web_branch()
    response = web.client("auditor1").get(f"/audit?{query}")
    assert response.status_code == 400
    assert message in response.text.replace("&#39;", "'"), response.text
