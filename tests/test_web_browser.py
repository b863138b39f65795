"""The console end to end in Debian's headless Chromium (Playwright drives it; never ``playwright
install``): log in, see an arrival pushed live, acknowledge it, search the history, and check that a
client manager never sees another manager's customer.  Screenshots go to ``tests/artifacts/``.

The browser may only reach 127.0.0.1 (``--host-resolver-rules``), so nothing leaves the machine.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from vipsense.pipeline.response_times import load

from .conftest import wait_for
from .web_support import CARD, PASSWORD

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

CHROMIUM = next(
    (p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if os.access(p, os.X_OK)), None
)
if CHROMIUM is None:
    CHROMIUM = shutil.which("chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
TIMEOUT = 5000  #: ms for anything the page must show

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def records(w: Any) -> list[Any]:
    """The branch's delivery records, read-only as the console reads them."""
    return load(w.branch.data_dir, 0, 4e9)[1]


class Page:
    """A fresh browser context logged in as one user, recording console errors and CSP violations.
    ``landing``: the page the user's role is sent to after logging in; ``context``: the browser
    context's options (``locale="zh-CN"`` is the ``Accept-Language`` it sends)."""

    def __init__(
        self,
        browser: Any,
        w: Any,
        username: str,
        expect_404: tuple[str, ...] = (),
        landing: str = "/console",
        **context: Any,
    ) -> None:
        #: paths whose 404 is the point of the test; /favicon.ico: the login page names no icon
        self.expect_404 = ("/favicon.ico", *expect_404)
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT)
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("response", self._response)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.goto(f"{w.url}/login")
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(f"**{landing}")
        if landing == "/console":  # the live stream is open: what is walked in from now on is pushed
            # a selector, not an eval: the CSP forbids eval
            self.page.wait_for_selector("body[data-sse='open']", state="attached")

    def _expected(self, url: str) -> bool:
        return urlsplit(url).path in self.expect_404

    def _console(self, message: Any) -> None:
        if "404" in message.text and self._expected(message.location.get("url", "")):
            return
        if message.type in ("error", "warning") or "Content Security Policy" in message.text:
            self.problems.append(f"{message.type}: {message.text} at {message.location}")

    def _response(self, response: Any) -> None:
        if response.status >= 400 and not (response.status == 404 and self._expected(response.url)):
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        assert self.problems == [], self.problems
        self.context.close()


def test_lobby_sees_an_arrival_live_acknowledges_it_and_finds_it_in_history(browser, web_branch):
    w = web_branch()
    lobby = Page(browser, w, "lobby")
    page = lobby.page
    try:
        sync_api.expect(page.locator("#cur-empty")).to_be_visible()
        lobby.shot("1-lobby-logged-in")

        w.walk_in(CARD[1])  # after the page is open: it must be pushed
        sync_api.expect(page.locator("#cur-name")).to_have_text("王建国 Wang Jianguo")
        sync_api.expect(page.locator("#cur-id")).to_have_text("**************1234")
        sync_api.expect(page.locator("#cur-company")).to_have_text("华信贸易有限公司")
        sync_api.expect(page.locator("#cur-photo")).to_have_attribute("src", "/console/photo/C1")
        wait_for(lambda: page.evaluate("document.getElementById('cur-photo').complete"))
        lobby.shot("2-arrival-pushed")

        visit_id = page.locator("#current").get_attribute("data-visit-id")
        key = f"{visit_id}:lobby"
        assert wait_for(lambda: any(r.key == key for r in records(w)))
        page.click("#ack-btn")
        sync_api.expect(page.locator("#ack-state")).to_have_text("Acknowledged ✓")
        sync_api.expect(page.locator("#current")).to_have_attribute("data-ack", "yes")
        sync_api.expect(page.locator("#ack-btn")).to_be_hidden()
        assert w.branch.status.counters["acknowledged"] == 1
        [mine] = [r for r in records(w) if r.key == key]
        assert mine.acknowledged_at is not None
        lobby.shot("3-acknowledged")

        now = dt.datetime.now()
        page.fill(
            "#hist-from",
            "00:00" if now.hour == 0 and now.minute < 2 else f"{now - dt.timedelta(minutes=2):%H:%M}",
        )
        page.fill("#hist-to", f"{now:%H:%M}")
        page.click("#history-form button[type=submit]")
        row = page.locator(f"#history-body tr[data-visit-id='{visit_id}']")
        sync_api.expect(row).to_contain_text("王建国 Wang Jianguo")
        sync_api.expect(row).to_contain_text("lobby")  # acknowledged by
        lobby.shot("4-history")

        w.walk_in(CARD[3])  # the next customer: C1 moves to the strip; a click shows its details
        sync_api.expect(page.locator("#cur-name")).to_have_text("Cai Yun")
        page.click(f"#strip button[data-visit-id='{visit_id}']")
        sync_api.expect(page.locator("#details-body .d-name")).to_have_text("王建国 Wang Jianguo")
        sync_api.expect(page.locator("#details-body .d-mobile")).to_have_text("138****5678")
        lobby.shot("4b-strip-details")
    finally:
        lobby.close()


def test_client_manager_sees_only_their_own_customers(browser, web_branch):
    w = web_branch()
    cm2 = Page(browser, w, "cm2", expect_404=("/console/lookup",))
    page = cm2.page
    try:
        w.walk_in(CARD[1])  # cm1's customer: must never reach cm2
        w.walk_in(CARD[2])
        sync_api.expect(page.locator("#cur-name")).to_have_text("李秀英 Li Xiuying")
        page.click("#history-form button[type=submit]")
        sync_api.expect(page.locator("#history")).to_have_attribute("data-count", "1")
        page.fill("#lookup-q", "C1")
        page.click("#lookup-form button[type=submit]")
        sync_api.expect(page.locator("#lookup-result")).to_have_text("No customer matches.")
        assert wait_for(lambda: w.branch.status.counters["greeted"] == 2)
        page.wait_for_timeout(300)  # time for a (wrongly) pushed C1 to show
        text = page.locator("body").inner_text()
        assert "王建国" not in text and "华信贸易" not in text
        assert page.locator("#strip li").count() == 0
        cm2.shot("5-cm2-own-customers-only")
    finally:
        cm2.close()


def test_mobile_view_shows_the_current_customer(browser, web_branch):
    w = web_branch()
    w.walk_in(CARD[3])
    assert wait_for(lambda: w.branch.status.counters["greeted"] == 1)
    phone = Page(browser, w, "cm1", viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = phone.page
    try:
        sync_api.expect(page.locator("#cur-name")).to_have_text("Cai Yun")
        box = page.locator("#cur-card").bounding_box()
        assert box is not None and box["width"] <= 390
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
        assert page.locator("#ack-btn").is_visible()  # cm1 was told of their own customer
        phone.shot("6-mobile-current-customer")
    finally:
        phone.close()
