"""What the branch web's tests share: a profile with one account per role, a real running Branch with
its WebServer on 127.0.0.1 (any free port), logged-in Flask test clients, and walking a card in.

Used through the ``web_branch`` fixture in conftest.py.
"""

from __future__ import annotations

import re
from typing import Any

from vipsense.model import Role, TagRead

from .profiles import branch_profile

WEB_PROFILE = branch_profile(
    branch="{id: web-branch, name: Web Test Branch, locale: en}",
    presence="{min_reads: 2, window: 1s, depart_after: 1s, reentry_suppress: 1s}",
    staff=[
        "{id: lobby, name: 王芳 Lobby, role: lobby_manager}",
        "{id: boss, name: Branch Boss, role: branch_manager}",
        "{id: cm1, name: 李梅 Li Mei, role: client_manager}",
        "{id: cm2, name: 赵磊 Zhao Lei, role: client_manager}",
        "{id: issuer, name: Card Issuer, role: card_issuer}",
        "{id: hq, name: Head Office, role: head_office}",
    ],
    tail="web: {bind: 127.0.0.1, port: 0, session_timeout: 15m, lockout: {attempts: 5, lock_for: 15m}}\n",
)

#: customers of cm1 (C1, C3) and cm2 (C2); C4 has hostile strings in every text field
WEB_SEED = """\
customers:
  - {customer_no: C1, name: 王建国 Wang Jianguo, tier: diamond, id_number: "110101199003071234",
     mobile: "13812345678", client_manager: cm1, company: 华信贸易有限公司, usual_business: 外汇结算}
  - {customer_no: C2, name: 李秀英 Li Xiuying, tier: platinum, id_number: "310101198512125678",
     mobile: "13987654321", client_manager: cm2, company: 东方医药集团, usual_business: 私人银行理财}
  - {customer_no: C3, name: Cai Yun, tier: gold, id_number: "44030519900101002X", client_manager: cm1}
  - {customer_no: C4, name: "<script>alert('name')</script>", tier: gold, client_manager: cm1,
     company: "<img src=x onerror=alert('company')>", usual_business: "\\"><svg onload=alert(1)>"}
cards:
  - {epc: E20000000000000000000001, customer_no: C1}
  - {epc: E20000000000000000000002, customer_no: C2}
  - {epc: E20000000000000000000003, customer_no: C3}
  - {epc: E20000000000000000000004, customer_no: C4}
  - {epc: E20000000000000000000009, customer_no: C3, status: lost}
"""

CARD = {n: f"E2000000000000000000000{n}" for n in (1, 2, 3, 4, 9)}

PASSWORD = "Correct-Horse-42!"  #: every test account's password

#: one account per role: user name -> role (staff roles are named after their member of staff)
ACCOUNTS: dict[str, Role] = {
    "admin1": Role.ADMIN,
    "auditor1": Role.AUDITOR,
    "boss": Role.BRANCH_MANAGER,
    "lobby": Role.LOBBY_MANAGER,
    "cm1": Role.CLIENT_MANAGER,
    "cm2": Role.CLIENT_MANAGER,
    "issuer": Role.CARD_ISSUER,
    "hq": Role.HEAD_OFFICE,
}


class WebBranch:
    """A started Branch and its WebServer (``.branch``, ``.server``, ``.app``, ``.url``)."""

    def __init__(self, branch: Any, server: Any) -> None:
        self.branch = branch
        self.server = server
        self.app = server.app
        self.url = server.url.rstrip("/")

    def client(self, username: str | None = None, password: str = PASSWORD) -> Any:
        """A Flask test client, logged in as ``username`` (None: not logged in)."""
        client = self.app.test_client()
        if username is not None:
            response = login(client, username, password)
            assert response.status_code == 302, (username, response.status_code, response.text[:300])
        return client

    def walk_in(self, epc: str, reads: int = 3) -> None:
        """A card read at the door often enough to arrive."""
        for _ in range(reads):
            self.branch.pipeline.submit(TagRead("door", 1, epc, -50.0, self.branch.clock.mono()))


def csrf_from(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(client: Any, username: str, password: str = PASSWORD) -> Any:
    token = csrf_from(client.get("/login").text)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def csrf_of(client: Any) -> str:
    """The CSRF token of a logged-in client's session (from any page that has the logout form)."""
    return csrf_from(client.get("/login").text)
