"""The branch web in Chinese and in English, against a real running Branch and its WebServer: which
language a request gets (the account's setting, then ``branch.locale``, then ``Accept-Language``,
then Chinese), every page in both, the ``lang`` attribute, the API's translated messages beside
their English codes, the staff's date format, and masking that is the same in both languages."""

from __future__ import annotations

import json
import re
import sqlite3
import time
import urllib.error
import urllib.request
from contextlib import closing
from typing import Any

import pytest

from vipsense import i18n
from vipsense.model import Role
from vipsense.privacy import mask_id_number, mask_mobile
from vipsense.storage.audit import AuditAction, AuditResult
from vipsense.web.users import AccountError, UserStore

from .conftest import wait_for
from .web_support import CARD, PASSWORD, WEB_PROFILE, csrf_of

slow = pytest.mark.slow  # each test that runs a branch and its web server

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
EN = {"Accept-Language": "en-US,en;q=0.8"}
C1_ID, C1_MOBILE = "110101199003071234", "13812345678"
SHANGHAI = "{id: web-branch, name: Web Test Branch, timezone: Asia/Shanghai"


def profile(locale: str | None) -> str:
    """The web tests' profile with the branch in Shanghai and ``branch.locale`` as given (None: unset)."""
    branch = SHANGHAI + (f", locale: {locale}}}" if locale else "}")
    text = WEB_PROFILE.replace("{id: web-branch, name: Web Test Branch, locale: en}", branch)
    assert text != WEB_PROFILE
    return text


def lang_of(html: str) -> str:
    m = re.search(r'<html lang="([^"]+)"', html)
    assert m, html[:300]
    return m.group(1)


def text_of(html: str, css_class: str) -> str:
    m = re.search(rf'class="{css_class}"[^>]*>(.*?)<', html, re.S)
    assert m, css_class
    return m.group(1)


def api(w: Any, path: str, token: str, **headers: str) -> tuple[int, dict[str, Any]]:
    """A real HTTP call to the query API: (status, JSON body)."""
    headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(w.url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def set_language(client: Any, locale: str) -> Any:
    return client.post(
        "/account/language", data={"locale": locale, "csrf_token": csrf_of(client), "next": "/console"}
    )


# -- every page, in each language --------------------------------------------------------------------

#: (path, what the page says in English, and in Chinese): one heading or label of each page
PAGES = [
    ("/console", "Current customer", "当前客户"),
    ("/console/visits", "Acknowledged by", "确认人"),
    ("/console/lookup", "Customer no. or ID number", "客户号或身份证号"),
    ("/status", "Readers", "读卡器"),
]


@slow
@pytest.mark.parametrize(
    ("locale", "lang", "index"), [("zh_CN", "zh-CN", 2), ("en", "en", 1)], ids=["zh_CN", "en"]
)
def test_every_page_is_in_the_branch_language(web_branch, locale, lang, index):
    w = web_branch(text=profile(locale))
    login = w.app.test_client().get("/login")
    assert lang_of(login.text) == lang
    assert ("登录" if locale == "zh_CN" else "Log in") in login.text
    boss = w.client("boss")
    for page in PAGES:
        response = boss.get(page[0])
        assert response.status_code == 200, page
        assert lang_of(response.text) == lang, page
        assert page[index] in response.text, page
        assert page[3 - index] not in response.text, page  # no word of the other language
    audit = w.client("auditor1").get("/audit")
    assert lang_of(audit.text) == lang
    assert ("审计日志" if locale == "zh_CN" else "Audit log") in audit.text
    found = boss.post("/console/lookup", data={"q": "C1", "csrf_token": csrf_of(boss)})
    assert found.status_code == 200
    assert text_of(found.text, "c-tier") == ("钻石卡" if locale == "zh_CN" else "Diamond")
    assert ("身份证号" if locale == "zh_CN" else "ID number") in found.text


@slow
def test_the_chinese_pages_read_as_staff_expect(web_branch):
    w = web_branch(text=profile("zh_CN"))
    boss = w.client("boss")
    w.walk_in(CARD[1])
    assert wait_for(lambda: "王建国" in boss.get("/console/visits").text)
    history = boss.get("/console/visits").text
    assert (
        "<th>时间</th><th>姓名</th><th>客户号</th><th>等级</th><th>单位</th><th>类型</th><th>确认人</th>"
        in history
    )
    assert '<td data-kind="greeted">已接待</td>' in history
    assert re.search(r"<h1>\d{4}年\d{1,2}月\d{1,2}日 00:00–23:59 到访记录</h1>", history), history
    status = boss.get("/status").text
    assert "<h2>读卡器</h2>" in status and "<h2>通知器</h2>" in status and "<h2>身份库</h2>" in status
    assert "退出登录" in status and "boss（网点负责人）" in status
    # the page's scripts get their words first, from the same catalogue
    console = boss.get("/console").text
    assert console.index('src="/i18n/catalogue.js"') < console.index('src="/static/console.js"')
    assert status.index('src="/i18n/catalogue.js"') < status.index('src="/static/status.js"')
    assert 'data-zone="Asia/Shanghai"' in console


@slow
def test_errors_are_in_the_viewers_language(web_branch):
    w = web_branch(text=profile("zh_CN"))
    lobby = w.client("lobby")
    missing = lobby.get("/console/customer/NOPE")
    assert missing.status_code == 404 and "没有这位客户" in missing.text and "404 · 未找到" in missing.text
    json_missing = lobby.get("/console/customer/NOPE", headers={"Accept": "application/json"})
    assert json_missing.json == {"error": "没有这位客户", "code": "not_found"}
    forbidden = lobby.get("/audit", headers={"Accept": "application/json"})
    assert forbidden.status_code == 403 and forbidden.json["code"] == "forbidden"
    assert forbidden.json["error"] == "lobby（lobby_manager）无权查阅审计日志（audit.view 需要 auditor）"
    no_page = lobby.get("/nowhere")
    assert no_page.status_code == 404 and "没有这个页面" in no_page.text
    bad_csrf = lobby.post("/console/lookup", data={"q": "C1", "csrf_token": "wrong"})
    assert bad_csrf.status_code == 400 and "CSRF 校验" in bad_csrf.text
    wrong = w.app.test_client()
    token = csrf_of(wrong)
    failed = wrong.post("/login", data={"username": "lobby", "password": "nope", "csrf_token": token})
    assert failed.status_code == 401 and "用户名或密码错误。" in failed.text


# -- which language a request gets ---------------------------------------------------------------------


@slow
def test_the_accounts_own_setting_beats_the_branch_language(web_branch):
    w = web_branch(text=profile("zh_CN"))
    cm1 = w.client("cm1")
    assert "当前客户" in cm1.get("/console", headers=EN).text  # the branch's beats the browser's
    saved = set_language(cm1, "en")
    assert saved.status_code == 302 and saved.headers["Location"] == "/console"
    page = cm1.get("/console", headers=ZH).text
    assert lang_of(page) == "en" and "Current customer" in page
    assert '<option value="en" lang="en" selected>English</option>' in page
    assert w.server.users.get("cm1").locale == "en"
    assert "当前客户" in w.client("cm2").get("/console").text  # only cm1's own
    entry = [e for e in w.branch.audit.entries() if e.action == AuditAction.PERMISSION_CHANGE][-1]
    assert (entry.actor, entry.object, entry.result, entry.reason) == (
        "cm1",
        "user cm1",
        AuditResult.SUCCESS,
        "language en",
    )
    # back to the branch's
    assert set_language(cm1, "").status_code == 302
    assert w.server.users.get("cm1").locale is None
    assert "当前客户" in cm1.get("/console").text


@slow
def test_a_language_change_needs_a_known_language_a_session_and_its_csrf_token(web_branch):
    w = web_branch(text=profile("en"))
    cm1 = w.client("cm1")
    refused = set_language(cm1, "fr")
    assert refused.status_code == 400 and "choose one of the languages offered" in refused.text
    assert w.server.users.get("cm1").locale is None
    forged = cm1.post("/account/language", data={"locale": "zh_CN", "csrf_token": "forged"})
    assert forged.status_code == 400 and w.server.users.get("cm1").locale is None
    anonymous = w.app.test_client().post("/account/language", data={"locale": "zh_CN"})
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    offsite = cm1.post(
        "/account/language",
        data={"locale": "zh_CN", "csrf_token": csrf_of(cm1), "next": "https://evil.example/"},
    )
    assert offsite.status_code == 302 and offsite.headers["Location"] == "/"


@slow
def test_the_branch_language_beats_the_browsers(web_branch):
    w = web_branch(text=profile("en"))
    page = w.client("boss").get("/status", headers=ZH).text
    assert lang_of(page) == "en" and "<h2>Readers</h2>" in page


@slow
def test_without_a_setting_the_browser_chooses_and_chinese_is_the_default(web_branch):
    w = web_branch(text=profile(None))
    boss = w.client("boss")
    assert lang_of(boss.get("/status", headers=ZH).text) == "zh-CN"
    assert lang_of(boss.get("/status", headers=EN).text) == "en"
    # the best the browser asks for that vipsense speaks; none of them: Chinese
    assert lang_of(boss.get("/status", headers={"Accept-Language": "fr, en-GB;q=0.5"}).text) == "en"
    assert lang_of(boss.get("/status", headers={"Accept-Language": "de, fr;q=0.8"}).text) == "zh-CN"
    assert lang_of(boss.get("/status").text) == "zh-CN"


# -- the query API ------------------------------------------------------------------------------------


@slow
def test_an_api_error_is_chinese_with_its_english_code(web_branch):
    w = web_branch(text=profile(None))
    token = w.server.users.add_token("crm", ("customer_no", "name", "tier"), 1000)
    assert api(w, "/api/v1/customers/NOPE", token, **ZH) == (
        404,
        {"error": "没有这位客户", "code": "not_found"},
    )
    assert api(w, "/api/v1/customers/NOPE", token, **EN) == (
        404,
        {"error": "no such customer", "code": "not_found"},
    )
    status, body = api(w, "/api/v1/customers/C1", "vst_nope", **ZH)
    assert status == 401 and body["code"] == "unauthorized" and body["error"].startswith("需要有效的访问令牌")
    status, body = api(w, "/api/v1/visits?from=2026-13-01&to=2026-12-01", token, **ZH)
    assert status == 400 and body == {
        "error": "from：日期，格式 YYYY-MM-DD，1970 年起",
        "code": "bad_request",
    }
    # the answer itself never changes with the language: codes and field names stay English
    status, body = api(w, "/api/v1/customers/C1", token, **ZH)
    assert status == 200 and body["customer"]["tier"] == "diamond"


# -- formats and masking ---------------------------------------------------------------------------------


@slow
def test_dates_are_written_as_staff_write_them_in_the_branch_zone(web_branch):
    w = web_branch(text=profile("zh_CN"))
    ts = 1796610960.0  # 2026-12-07 10:36 in Shanghai
    with w.app.test_request_context("/"):
        filters = w.app.jinja_env.filters
        with i18n.using("zh_CN"):
            assert filters["datetime"](ts) == "2026年12月7日 10:36"
            assert filters["date"](ts) == "2026年12月7日"
            assert filters["number"](1234567) == "1,234,567"
        with i18n.using("en"):
            assert filters["datetime"](ts) == "Dec 7, 2026 10:36"
    audit = w.client("auditor1").get("/audit").text
    rows = re.findall(r'<td class="nowrap">([^<]*)</td>', audit)
    today = i18n.format_date(time.time(), "Asia/Shanghai", "zh_CN")
    assert rows and all(re.fullmatch(rf"{today} \d\d:\d\d:\d\d", r) for r in rows), rows
    assert '<td data-action="login">登录</td>' in audit


@slow
def test_masked_numbers_are_the_same_in_both_languages(web_branch):
    w = web_branch(text=profile("zh_CN"))
    boss = w.client("boss")
    chinese = boss.get("/console/customer/C1").text
    set_language(boss, "en")
    english = boss.get("/console/customer/C1").text
    assert lang_of(chinese) == "zh-CN" and lang_of(english) == "en"
    for css_class, masked in (("c-id", mask_id_number(C1_ID)), ("c-mobile", mask_mobile(C1_MOBILE))):
        assert text_of(chinese, css_class) == text_of(english, css_class) == masked
    for page in (chinese, english):
        assert C1_ID not in page and C1_MOBILE not in page


# -- the account setting on disk ----------------------------------------------------------------------------


def test_an_account_file_from_before_the_language_setting_still_opens(tmp_path):
    path = tmp_path / "users.sqlite3"
    store = UserStore(path)
    store.add("lobby", Role.LOBBY_MANAGER, PASSWORD)
    store.close()
    with closing(sqlite3.connect(path, isolation_level=None)) as db:  # the file as the last release left it
        db.execute("ALTER TABLE users DROP COLUMN locale")
        db.execute("PRAGMA user_version = 1")
    store = UserStore(path)
    assert store.get("lobby").locale is None and store.list()[0].username == "lobby"
    store.set_locale("lobby", "zh_CN")
    assert store.get("lobby").locale == "zh_CN"
    with pytest.raises(
        AccountError, match=r"'fr' is not a language vipsense speaks; choose one of zh_CN, en"
    ):
        store.set_locale("lobby", "fr")
    store.close()
