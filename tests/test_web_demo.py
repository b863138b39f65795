"""The demo branch with its web, as a branch runs it: ``vipsense users add`` for the first accounts,
then ``vipsense run`` in a subprocess; the page answers over real HTTP while the morning replays, the
web stays up after the replay, and SIGTERM stops both."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.parse

import pytest
import yaml

from vipsense import i18n

from .conftest import REPO
from .web_support import PASSWORD, csrf_from

pytestmark = pytest.mark.slow  # the demo morning, in a subprocess

DEMO = REPO / "profiles" / "demo.yaml"
#: the demo branch speaks Chinese (``branch.locale: zh_CN``): its lines, as the catalogue has them
with i18n.using("zh_CN"):
    WEB_LINE = re.escape(i18n._("Branch web: {url}")).replace(
        re.escape("{url}"), r"http://127\.0\.0\.1:(\d+)/"
    )
    REPLAY_OVER = i18n._("The replay is over; the branch web stays up at {url} until Ctrl-C.").split("{url}")[
        0
    ]
    _STOPPED = i18n._(
        "Stopped. {reads} reads, {arrivals} arrivals: {greeted} greeted, {rejected} rejected, {suppressed}"
        " re-entries suppressed, {unknown} unknown tags{unresolved}. Visits in {path}"
    )
    COUNTS = _STOPPED[_STOPPED.index("{greeted}") : _STOPPED.index("{rejected}") + len("{rejected}")].format(
        greeted=22, rejected=3
    )


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vipsense.cli", *args], input=stdin, capture_output=True, text=True,
        timeout=60, cwd=REPO,
    )  # fmt: skip


class Session:
    """A cookie jar over http.client: enough for a login and a few pages."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, str, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        text = r.read().decode()
        if r.getheader("Set-Cookie"):
            self.cookie = r.getheader("Set-Cookie").split(";")[0]
        conn.close()
        return r.status, text, dict(r.getheaders())

    def login(self, username: str) -> int:
        _, page, _ = self.request("GET", "/login")
        status, _, _ = self.request(
            "POST", "/login", {"username": username, "password": PASSWORD, "csrf_token": csrf_from(page)}
        )
        return status


def test_the_demo_serves_its_web_to_each_role_and_stays_up_after_the_replay(tmp_path):
    data = tmp_path / "data"
    for name, role in (("admin1", "admin"), ("zhang.wei", "lobby_manager"), ("auditor1", "auditor")):
        r = cli("users", "add", str(DEMO), name, "--role", role, "--password-stdin", "--data-dir", str(data),
                stdin=PASSWORD + "\n")  # fmt: skip
        assert r.returncode == 0, r.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "vipsense.cli", "run", str(DEMO), "--speed", "20", "--web-port", "0",
         "--data-dir", str(data), "--no-status"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        lines: list[str] = []
        port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            m = re.search(WEB_LINE, line)
            if m:
                port = int(m.group(1))
                break
        assert port, "".join(lines)
        admin = Session(port)
        assert admin.login("admin1") == 302
        status, body, _ = admin.request("GET", "/api/status")
        assert status == 200 and json.loads(body)["branch"]["id"] == "sh-lujiazui"
        assert admin.request("GET", "/console")[0] == 403
        lobby = Session(port)
        assert lobby.login("zhang.wei") == 302
        assert lobby.request("GET", "/console")[0] == 200
        auditor = Session(port)
        assert auditor.login("auditor1") == 302
        assert auditor.request("GET", "/audit")[0] == 200
        assert auditor.request("GET", "/status")[0] == 403

        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if REPLAY_OVER in line:
                break
        assert REPLAY_OVER in "".join(lines), "".join(lines)
        assert lobby.request("GET", "/console")[0] == 200  # still serving after the morning
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert COUNTS in out, out
    assert_private(data)


def assert_private(data) -> None:
    """Pen test point 2: after a demo run with its web, no file or directory in the data directory is
    open to another account, and no byte of any file (WAL and journal included) holds a customer's ID
    or mobile number in clear."""
    paths = [data, *sorted(data.rglob("*"))]
    modes = {str(p.relative_to(data)): stat.S_IMODE(p.lstat().st_mode) for p in paths}
    assert {name: oct(mode) for name, mode in modes.items() if mode & 0o077} == {}
    assert any(name.endswith("visits.sqlite3") for name in modes) and len(modes) > 5, modes
    seed = yaml.safe_load((REPO / "profiles" / "demo" / "customers.yaml").read_text(encoding="utf-8"))
    numbers = {c[k] for c in seed["customers"] for k in ("id_number", "mobile") if c.get(k)}
    assert len(numbers) > 40
    found = {
        (str(p.relative_to(data)), n)
        for p in paths
        if p.is_file()
        for blob in [p.read_bytes()]
        for n in numbers
        if n.encode() in blob or n.encode("utf-16-le") in blob
    }
    assert found == set()
