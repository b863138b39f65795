"""The branch web in the browser, in Chinese and in English: the same walk through the console (log
in, an arrival pushed live, acknowledging it, a look-up, the history), the status page and the audit
page, in real headless Chromium, reading what the scripts write as well as what the server renders.
On every Chinese page a walk of the DOM collects the text people read (visible text, ``title``,
``placeholder``, ``aria-label``, ``alt``, button values) and fails on any English word that is not a
proper noun, a code or the test branch's own Latin data.  Screenshots of the Chinese pages go to
``tests/artifacts/i18n-zh-*.png``.

Also the script catalogue itself (``/i18n/catalogue.js``): the request's language, exactly the
messages the scripts mark, safe to embed, cacheable per language.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.request
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from vipsense import i18n
from vipsense.web import jscatalogue

from . import catalogue
from . import test_web_browser as base
from .conftest import wait_for
from .test_catalogue import PROPER
from .web_support import ACCOUNTS, CARD, WEB_PROFILE, WEB_SEED

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(base.CHROMIUM is None, reason="Debian's chromium is not installed"),
]

browser = base.browser  # the module's Chromium, started once (tests/test_web_browser.py)

ZONE = "Asia/Shanghai"  #: the Chinese branch's zone: not this machine's, so the clock must follow it
BRANCH = re.compile(r"^branch: .*$", re.M)
assert len(BRANCH.findall(WEB_PROFILE)) == 1
#: the Chinese test branch: named in Chinese, Chinese by its profile, in Shanghai
ZH_PROFILE = BRANCH.sub(
    f"branch: {{id: web-branch, name: 城东支行, locale: zh_CN, timezone: {ZONE}}}", WEB_PROFILE
)
#: a branch whose profile names no language: each viewer's browser chooses
ANY_LANGUAGE = BRANCH.sub("branch: {id: web-branch, name: Web Test Branch}", WEB_PROFILE)

#: what each language's pages must say: the browser's Accept-Language, the page's lang, the texts
EXPECT: dict[str, dict[str, str]] = {
    "zh_CN": {
        "browser": "zh-CN",
        "lang": "zh-CN",
        "live": "实时",
        "tier": "钻石卡",
        "acknowledged": "已确认 ✓",
        "kind": "已接待",
        "no match": "没有匹配的客户。",
        "no visits": "该时间段内没有到访。",
        "name label": "姓名",
        "tier label": "等级",
    },
    "en": {
        "browser": "en-US",
        "lang": "en",
        "live": "live",
        "tier": "Diamond",
        "acknowledged": "Acknowledged ✓",
        "kind": "greeted",
        "no match": "No customer matches.",
        "no visits": "No visits in this range.",
        "name label": "Name",
        "tier label": "Tier",
    },
}
LANGUAGES = pytest.mark.parametrize("locale", list(EXPECT))

#: what people read on a page: visible text nodes, the attributes they read, buttons' values; not
#: inside ``recorded`` (selectors of text shown as it was recorded, which no catalogue can reach)
READABLE = """(recorded) => {
  const out = [document.title];
  const shown = (el) => {
    if (el.closest("[hidden]") || (recorded.length && el.closest(recorded.join(", ")))) return false;
    const style = getComputedStyle(el);
    return style.display !== "none" && style.visibility !== "hidden" && el.getClientRects().length > 0;
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, parent = node.parentElement;
    if (!parent || parent.closest("script, style") || !shown(parent)) continue;
    if (node.textContent.trim()) out.push(node.textContent.trim());
  }
  for (const el of document.querySelectorAll("[title], [placeholder], [aria-label], img[alt]")) {
    if (!shown(el)) continue;
    for (const name of ["title", "placeholder", "aria-label", "alt"]) {
      const value = el.getAttribute(name);
      if (value && value.trim()) out.push(value.trim());
    }
  }
  for (const el of document.querySelectorAll("input[type=submit], input[type=button], input[type=reset]")) {
    if (shown(el) && el.value.trim()) out.push(el.value.trim());
  }
  return out;
}"""
#: the audit log's entries as they were written (who, what, from where, why): a tamper-evident record
#: is shown as recorded, in the language it was recorded in
RECORDED = [
    "#entries td:nth-child(3)",
    "#entries td:nth-child(6)",
    "#entries td:nth-child(7)",
    "#entries td:nth-child(9)",
]
#: a URL or a file's path: an address, not words
ADDRESS = re.compile(r"\b[a-z]+://\S+|(?<![\w/])/[\w.-]+(?:/[\w.:-]+)+")
TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_.'’-]*")


def english_words(texts: list[str], allowed: set[str]) -> list[str]:
    """Latin words in ``texts`` that are not ``allowed``; a token with a digit (``cm1``, ``C3``, an
    EPC, a version) is a code, and a URL is an address, not words."""
    found = []
    for text in texts:
        for token in TOKEN.findall(ADDRESS.sub(" ", text)):
            word = token.rstrip(".'’-_")
            if any(c.isdigit() for c in word) or word in allowed:
                continue
            found.append(word)
    return found


def test_the_english_word_check_sees_english_and_lets_codes_and_data_pass():
    texts = [
        "已确认 ✓",
        "Acknowledged by lobby",
        "cm1 · C3 · E20000000000000000000001",
        "http://127.0.0.1:80/x",
        "锚点 /tmp/data/audit-anchors.jsonl:1 · reads/s",
    ]
    assert english_words(texts, {"lobby"}) == ["Acknowledged", "by", "reads", "s"]


def allowed_words(w: Any) -> set[str]:
    """What a Chinese page may show in Latin letters: proper nouns and codes, and the test branch's
    own data (customers' and staff's Latin names, account names, device ids and types, plugins and
    their hooks, the web server's type), which are names, not words to translate."""
    profile = w.branch.profile
    data: list[str] = [*ACCOUNTS, WEB_SEED]
    data += [f"{s.id} {s.name}" for s in profile.staff]
    for section in (profile.readers, profile.stores, profile.notifiers):
        data += [f"{d.id} {d.type}" for d in section]
    status = json.loads(get(w, "/api/status", cookie=session_cookie(w, "admin1"))[2])
    data.append(status["web"]["type"])
    for plugin in status["plugins"]:
        data += [plugin["name"], str(plugin["version"]), *plugin["hook_errors"]]
    seed_names = re.findall(r"name: ([^,}]+)", WEB_SEED)
    words = {t for text in [*data, *seed_names] for t in TOKEN.findall(text)}
    return set(PROPER) | {"UTC", "TID"} | words


def get(w: Any, path: str, **headers: str) -> tuple[int, dict[str, str], str]:
    """A plain HTTP GET (no browser): status, headers, body."""
    request = urllib.request.Request(
        w.url + path, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def session_cookie(w: Any, username: str) -> str:
    """``name=value`` of a logged-in session, for plain HTTP requests."""
    client = w.client(username)
    cookie = client.get_cookie("vipsense_session")
    assert cookie is not None
    return f"vipsense_session={cookie.value}"


class Pages:
    """One language's walk: opens pages, checks each Chinese one for English and shoots it."""

    def __init__(self, browser: Any, w: Any, locale: str) -> None:
        self.browser, self.w, self.locale = browser, w, locale
        self.expect = EXPECT[locale]
        self.allowed = allowed_words(w) if locale == "zh_CN" else set()
        self.leftovers: dict[str, list[str]] = {}

    def open(self, username: str, landing: str, expect_404: tuple[str, ...] = ()) -> base.Page:
        page = base.Page(
            self.browser, self.w, username, expect_404, landing=landing, locale=self.expect["browser"]
        )
        assert page.page.get_attribute("html", "lang") == self.expect["lang"]
        return page

    def check(self, page: base.Page, name: str) -> None:
        """On a Chinese page: note English words left, and a screenshot."""
        if self.locale != "zh_CN":
            return
        words = english_words(page.page.evaluate(READABLE, RECORDED), self.allowed)
        if words:
            self.leftovers[name] = sorted(set(words))
        page.shot(f"i18n-zh-{name}")

    def done(self) -> None:
        assert self.leftovers == {}, f"English words on Chinese pages: {self.leftovers}"


def zh_or_en_branch(web_branch: Any, locale: str) -> Any:
    return web_branch(text=ZH_PROFILE) if locale == "zh_CN" else web_branch()


@LANGUAGES
def test_the_console_in_each_language(browser, web_branch, locale):
    w = zh_or_en_branch(web_branch, locale)
    walk = Pages(browser, w, locale)
    expect = walk.expect
    lobby = walk.open("lobby", "/console", expect_404=("/console/lookup",))  # a look-up that finds no one
    page = lobby.page
    try:
        sync_api.expect(page.locator("#cur-empty")).to_be_visible()
        sync_api.expect(page.locator("#live-state")).to_have_text(expect["live"])
        walk.check(lobby, "1-console-logged-in")

        w.walk_in(CARD[1])  # pushed live
        sync_api.expect(page.locator("#cur-name")).to_have_text("王建国 Wang Jianguo")
        sync_api.expect(page.locator("#cur-tier")).to_have_text(expect["tier"])
        sync_api.expect(page.locator("#cur-id")).to_have_text("**************1234")  # masked alike
        visit_id = page.locator("#current").get_attribute("data-visit-id")
        answer = page.request.get(f"{w.url}/console/visit/{visit_id}", headers={"Accept": "application/json"})
        visit = answer.json()["visit"]
        zone = ZoneInfo(ZONE) if locale == "zh_CN" else None
        arrived = dt.datetime.fromtimestamp(visit["arrived_unix"], zone).strftime("%H:%M:%S")
        sync_api.expect(page.locator("#cur-time")).to_have_text(arrived)  # the branch's clock
        wait_for(lambda: page.evaluate("document.getElementById('cur-photo').complete"))
        walk.check(lobby, "2-arrival-pushed")

        assert wait_for(lambda: any(r.key == f"{visit_id}:lobby" for r in base.records(w)))
        page.click("#ack-btn")
        sync_api.expect(page.locator("#ack-state")).to_have_text(expect["acknowledged"])
        walk.check(lobby, "3-acknowledged")

        page.fill("#lookup-q", "C404")
        page.click("#lookup-form button[type=submit]")
        sync_api.expect(page.locator("#lookup-result")).to_have_text(expect["no match"])
        page.fill("#lookup-q", "C1")
        page.click("#lookup-form button[type=submit]")
        hit = page.locator("#lookup-result .lookup-hit")
        sync_api.expect(hit).to_have_text(f"王建国 Wang Jianguo · C1 · {expect['tier']}")
        hit.click()
        details = page.locator("#details-body")
        sync_api.expect(details.locator(".d-name")).to_have_text("王建国 Wang Jianguo")
        sync_api.expect(details.locator(".d-tier")).to_have_text(expect["tier"])
        sync_api.expect(details.locator(".d-mobile")).to_have_text("138****5678")  # masked alike
        sync_api.expect(details.locator("dt").first).to_have_text(expect["name label"])
        walk.check(lobby, "4-lookup-details")

        page.click("#history-form button[type=submit]")
        row = page.locator(f"#history-body tr[data-visit-id='{visit_id}']")
        sync_api.expect(row).to_contain_text(expect["kind"])
        sync_api.expect(row.locator("td").first).to_have_text(arrived)
        sync_api.expect(row.locator("td").nth(3)).to_have_text(expect["tier"])
        walk.check(lobby, "5-history")

        page.fill("#hist-date", "2001-01-01")  # a day with no visits
        page.click("#history-form button[type=submit]")
        sync_api.expect(page.locator("#history-body")).to_have_text(expect["no visits"])
        walk.check(lobby, "6-history-empty")
    finally:
        lobby.close()
    walk.done()


@LANGUAGES
def test_the_status_page_in_each_language(browser, web_branch, locale):
    w = zh_or_en_branch(web_branch, locale)
    walk = Pages(browser, w, locale)
    admin = walk.open("admin1", "/status")
    page = admin.page
    try:
        # the script's first refresh (every 5 s) has rewritten the tables
        page.wait_for_selector("#status[data-updated]", state="attached", timeout=12000)
        overall = json.loads(get(w, "/api/status", cookie=session_cookie(w, "admin1"))[2])["state"]
        with i18n.using(locale):
            word = i18n.gettext(overall)
        assert (word == overall) == (locale == "en"), (overall, word)  # a state code in Chinese: a word
        sync_api.expect(page.locator("#overall")).to_have_text(word)
        readers = page.locator("#readers tbody td")
        assert readers.count() > 0
        sync_api.expect(readers.nth(2)).to_contain_text({"zh_CN": "，自 ", "en": " since "}[locale])
        walk.check(admin, "7-status")
    finally:
        admin.close()
    walk.done()


@LANGUAGES
def test_the_audit_page_in_each_language(browser, web_branch, locale):
    w = zh_or_en_branch(web_branch, locale)
    w.walk_in(CARD[1])
    assert wait_for(lambda: w.branch.status.counters["greeted"] == 1)
    walk = Pages(browser, w, locale)
    auditor = walk.open("auditor1", "/audit")
    try:
        assert auditor.page.locator("main").inner_text().strip()
        walk.check(auditor, "8-audit")
    finally:
        auditor.close()
    walk.done()


# -- the script catalogue --------------------------------------------------------------------------


def messages_of(script: str) -> dict[str, Any]:
    match = re.search(r"const messages = (\{.*?\});\n", script, re.S)
    assert match, script[:300]
    return json.loads(match.group(1))


def test_the_catalogue_script_is_in_the_request_language_and_cached_per_language(web_branch):
    w = web_branch(text=ANY_LANGUAGE)  # no branch.locale: Accept-Language decides
    marked = {  # what the catalogue tool finds in the scripts, the same sources by another way
        m.id if isinstance(m.id, str) else m.id[0]
        for m in catalogue.extract()
        if any(f.startswith("core/web/static/") for f, _line in m.locations)
    }
    assert "Acknowledged ✓" in marked and "{state} since {time} ({ago} ago)" in marked
    bodies = {}
    for language, accept in (("zh_CN", "zh-CN,zh;q=0.9"), ("en", "en-US,en;q=0.8")):
        status, headers, body = get(w, "/i18n/catalogue.js", Accept_Language=accept)
        assert status == 200
        assert headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert {v.strip() for v in headers["Vary"].split(",")} >= {"Cookie", "Accept-Language"}
        assert headers["Cache-Control"] == "private, no-cache"
        again = get(w, "/i18n/catalogue.js", Accept_Language=accept, If_None_Match=headers["ETag"])
        assert again[0] == 304
        assert set(messages_of(body)) == marked  # exactly the scripts' messages
        bodies[language] = (headers["ETag"], messages_of(body))
    assert bodies["zh_CN"][0] != bodies["en"][0]
    assert bodies["zh_CN"][1]["Acknowledged ✓"] == "已确认 ✓"
    assert bodies["zh_CN"][1]["{state} since {time} ({ago} ago)"] == "{state}，自 {time} 起（{ago}前）"
    assert bodies["en"][1]["Acknowledged ✓"] == "Acknowledged ✓"
    # the ETag of one language does not answer for the other
    zh_tag = bodies["zh_CN"][0]
    assert get(w, "/i18n/catalogue.js", Accept_Language="en-US", If_None_Match=zh_tag)[0] == 200


def test_a_translation_cannot_end_the_script():
    text = jscatalogue.safe_json({"a": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028"}


def test_plural_messages_carry_each_form_of_the_language(monkeypatch):
    monkeypatch.setattr(jscatalogue, "marked", lambda: (("{n} visit", "{n} visits"), "live"))
    english = jscatalogue.translations.__wrapped__("en")
    chinese = jscatalogue.translations.__wrapped__("zh_CN")
    assert english == {"{n} visit": ["{n} visit", "{n} visits"], "live": "live"}
    assert len(chinese["{n} visit"]) == 1 and chinese["live"] == "实时"  # Chinese has one form


def test_gettext_in_the_page_formats_fields_and_falls_back_to_the_message(browser, web_branch):
    w = web_branch(text=ANY_LANGUAGE)
    lobby = base.Page(browser, w, "lobby", locale="en-US")
    try:
        page = lobby.page
        assert page.evaluate("gettext.format('{a} {{b}} {missing}', {a: '<i>'})") == "<i> {b} {missing}"
        assert page.evaluate("gettext('a message no script marks')") == "a message no script marks"
        plurals = "[1, 2].map((n) => ngettext('{n} visit', '{n} visits', n))"  # no script marks it
        assert page.evaluate(plurals) == ["{n} visit", "{n} visits"]
    finally:
        lobby.close()
    zh = base.Page(browser, w, "lobby", locale="zh-CN")
    try:
        assert zh.page.evaluate("gettext('live')") == "实时"
        told = "gettext.format(gettext('Told: {names}'), {names: 'lobby'})"
        assert zh.page.evaluate(told) == "已通知：lobby"
    finally:
        zh.close()


# -- Chinese fits ------------------------------------------------------------------------------------

#: elements that cut their own text off: overflow hidden or clipped, or an ellipsis, with text of their
#: own wider than their box
CLIPPED = """() => {
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    if (!el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    const clips = ["hidden", "clip"].includes(style.overflowX) || style.textOverflow === "ellipsis";
    const text = [...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    if (clips && text && el.scrollWidth > el.clientWidth + 1) {
      out.push(`${el.tagName.toLowerCase()}#${el.id}.${el.className}: ${el.textContent.trim().slice(0, 40)}`);
    }
  }
  return out;
}"""


@pytest.mark.parametrize(
    "viewport",
    [{"width": 390, "height": 844}, {"width": 1280, "height": 800}],
    ids=["phone", "desktop"],
)
def test_chinese_fits_on_the_console_and_the_status_page(browser, web_branch, viewport):
    """Chinese labels are wider than their English, word for word: no text is cut off and nothing
    makes the page scroll sideways, on a phone and on a desk."""
    w = web_branch(text=ZH_PROFILE)
    phone = viewport["width"] < 500
    device = {"is_mobile": True, "has_touch": True} if phone else {}
    problems: dict[str, Any] = {}
    for username, landing in (("lobby", "/console"), ("admin1", "/status")):
        opened = base.Page(browser, w, username, landing=landing, locale="zh-CN", viewport=viewport, **device)
        page = opened.page
        try:
            if landing == "/console":
                w.walk_in(CARD[1])
                sync_api.expect(page.locator("#cur-name")).to_have_text("王建国 Wang Jianguo")
            else:
                page.wait_for_selector("#status[data-updated]", state="attached", timeout=12000)
            width = page.evaluate("document.documentElement.scrollWidth")
            clipped = page.evaluate(CLIPPED)
            if width > viewport["width"] or clipped:
                problems[landing] = {"page width": width, "clipped": clipped}
            opened.shot(f"i18n-zh-fit-{'phone' if phone else 'desktop'}-{landing.strip('/')}")
        finally:
            opened.close()
    assert problems == {}
