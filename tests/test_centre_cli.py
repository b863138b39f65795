"""``vipsense centre``: the centre profile's errors, branch keys, accounts, and the centre served as a
real process on a loopback port (real HTTP sessions with CSRF, the ingest reachable without login,
SIGTERM stopping it cleanly, the centre's audit log recording the logins).

The centre runs on its embedded SQLite database here; the same commands on PostgreSQL differ only in
the URL (``centre.database``), which tests/test_centre_db.py covers for the database itself.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from vipsense.centre.profile import load_centre_profile, open_centre_audit
from vipsense.config.errors import ProfileError

from .processes import stop
from .web_support import PASSWORD

pytestmark = pytest.mark.slow


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def run(*argv: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vipsense.cli", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "LANG": "en_US.UTF-8"},
    )


@pytest.fixture
def centre(tmp_path: Path) -> Path:
    return write(
        tmp_path / "centre.yaml",
        """\
        centre:
          name: Head office
          data_dir: centre-data
        web: {port: 0}
        """,
    )


# -- the profile ---------------------------------------------------------------------------------------


def test_a_centre_profile_reads_with_its_defaults(centre: Path):
    profile = load_centre_profile(centre)
    assert profile.centre.id == "head-office"
    assert profile.centre.timezone == "Asia/Shanghai"
    assert profile.data_dir == centre.parent / "centre-data"
    assert profile.database_url == f"sqlite:///{centre.parent / 'centre-data' / 'centre.sqlite3'}"
    assert profile.web.bind == "127.0.0.1" and profile.web.port == 0
    assert profile.branch is profile.centre  # what the branch web's login code reads as the site
    assert profile.demo is None


def test_centre_profile_errors_name_file_line_key_and_what_was_meant(tmp_path: Path):
    path = write(
        tmp_path / "centre.yaml",
        """\
        centre:
          name: Head office
          timezon: Asia/Shanghai
          key: !secret centre_key
        web:
          prot: 8470
        demo:
          branches:
            - {id: bj-xidan, name: Xidan}
            - {id: bj-xidan, name: Xidan again}
        """,
    )
    with pytest.raises(ProfileError) as caught:
        load_centre_profile(path)
    lines = [str(e) for e in caught.value.errors]
    text = "\n".join(lines)
    assert "centre.yaml:3: centre.timezon: unknown key; did you mean 'timezone'?" in text
    assert "centre.yaml:4: centre.key: secret 'centre_key' not found: no secrets file at" in text
    assert "centre.yaml:6: web.prot: unknown key; did you mean 'port'?" in text
    assert "centre.yaml:10: demo.branches[1].id: 'bj-xidan' is listed twice" in text
    assert len(lines) == 4, text

    write(path, "centre: {name: HQ}\ndemo: {days: 0}\n")
    with pytest.raises(ProfileError) as caught:
        load_centre_profile(path)
    assert [str(e).split("centre.yaml")[1] for e in caught.value.errors] == [
        ":2: demo.days: must be at least 1, got 0"
    ]


def test_a_missing_secret_names_the_secrets_file_and_nothing_is_done(tmp_path: Path):
    write(tmp_path / "secrets.yaml", "other: x\n")
    path = write(tmp_path / "centre.yaml", "centre: {name: HQ, key: !secret centre_key}\n")
    done = run("centre", "check", str(path))
    assert done.returncode == 1
    assert (
        f"centre.yaml:1: centre.key: secret 'centre_key' is not in {tmp_path / 'secrets.yaml'}" in done.stderr
    )
    assert "1 error; nothing was done" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_says_what_the_centre_will_use(centre: Path):
    done = run("centre", "check", str(centre))
    assert done.returncode == 0, done.stderr
    assert "centre profile OK: Head office (head-office)" in done.stdout
    assert "sqlite:///" in done.stdout and "no centre.key" in done.stdout


# -- branches and their keys ---------------------------------------------------------------------------


def test_branch_keys_are_printed_once_listed_never_and_revoked(centre: Path):
    added = run("centre", "branches", "add", str(centre), "sh-lujiazui", "--name", "Lujiazui")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key), added.stdout

    again = run("centre", "branches", "add", str(centre), "sh-lujiazui", "--name", "Lujiazui")
    assert again.returncode == 1 and "already has a key" in again.stderr and key not in again.stderr

    listed = run("centre", "branches", "list", str(centre))
    assert listed.returncode == 0, listed.stderr
    assert "sh-lujiazui" in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout and key not in listed.stderr

    revoked = run("centre", "branches", "revoke", str(centre), "sh-lujiazui")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    listed = run("centre", "branches", "list", str(centre))
    assert re.search(r"sh-lujiazui .* revoked ", listed.stdout), listed.stdout

    unknown = run("centre", "branches", "revoke", str(centre), "nowhere")
    assert unknown.returncode == 1 and "no branch nowhere" in unknown.stderr

    # the sealed key opens with the centre's key only: nothing in the data directory holds it in clear
    data = centre.parent / "centre-data"
    assert all(key.encode() not in p.read_bytes() for p in data.rglob("*") if p.is_file())
    # the changes are in the centre's audit log, by the OS account
    profile = load_centre_profile(centre)
    log = open_centre_audit(profile)
    try:
        objects = [e.object for e in log.entries()]
    finally:
        log.close()
    assert "branch sh-lujiazui: key issued" in objects and "branch sh-lujiazui: key revoked" in objects


def test_account_roles_and_branches(centre: Path):
    assert run("centre", "branches", "add", str(centre), "bj-xidan", "--name", "Xidan").returncode == 0
    add = ("centre", "users", "add", str(centre))
    no_branch = run(*add, "zhao", "--role", "branch_manager", "--password-stdin", stdin=PASSWORD + "\n")
    assert no_branch.returncode == 1 and "needs --branch" in no_branch.stderr
    unknown = run(
        *add, "zhao", "--role", "branch_manager", "--branch", "nope", "--password-stdin", stdin=PASSWORD
    )
    assert unknown.returncode == 1 and "no branch nope" in unknown.stderr
    lobby = run(*add, "sun", "--role", "lobby_manager", "--password-stdin", stdin=PASSWORD)
    assert lobby.returncode == 2 and "head_office, branch_manager, auditor, admin" in lobby.stderr
    ok = run(
        *add, "zhao", "--role", "branch_manager", "--branch", "bj-xidan", "--password-stdin", stdin=PASSWORD
    )
    assert ok.returncode == 0, ok.stderr
    listed = run("centre", "users", "list", str(centre))
    assert "zhao" in listed.stdout and "branch_manager" in listed.stdout

    from vipsense.centre import accounts
    from vipsense.centre.database import open_database

    db = open_database(load_centre_profile(centre).database_url)
    try:
        assert accounts.branch_of(db, "zhao") == "bj-xidan"
    finally:
        db.close()


# -- the centre served ---------------------------------------------------------------------------------


class Browser:
    """A cookie-keeping HTTP client, as a browser is: no redirects followed, so they can be checked."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect())

    def request(
        self, path: str, data: dict[str, str] | bytes | None = None, headers: dict[str, str] | None = None
    ):
        body = urllib.parse.urlencode(data).encode() if isinstance(data, dict) else data
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=10) as answer:
                return answer.status, dict(answer.headers), answer.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode("utf-8")

    def login(self, username: str, password: str = PASSWORD) -> tuple[int, dict[str, str], str]:
        _status, _headers, page = self.request("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, page
        return self.request(
            "/login", {"username": username, "password": password, "csrf_token": token.group(1)}
        )


def test_the_centre_serves_logins_by_role_and_the_ingest_and_stops_on_sigterm(centre: Path):
    assert run("centre", "branches", "add", str(centre), "bj-xidan", "--name", "Xidan").returncode == 0
    add = ("centre", "users", "add", str(centre))
    for name, role, *branch in (
        ("wang", "head_office"),
        ("zhao", "branch_manager", "bj-xidan"),
        ("li", "auditor"),
    ):
        extra = ["--branch", branch[0]] if branch else []
        done = run(*add, name, "--role", role, *extra, "--password-stdin", stdin=PASSWORD)
        assert done.returncode == 0, done.stderr

    proc = subprocess.Popen(
        [sys.executable, "-m", "vipsense.cli", "centre", "serve", str(centre)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LANG": "en_US.UTF-8"},
    )
    try:
        url = ""
        deadline = time.monotonic() + 30
        while not url and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line and proc.poll() is not None:
                pytest.fail(f"the centre stopped: {proc.stderr.read()}")  # type: ignore[union-attr]
            found = re.search(r"Centre web: (http://127\.0\.0\.1:\d+)/", line)
            url = found.group(1) if found else ""
        assert url, "the centre never said where it serves"

        anonymous = Browser(url)
        status, headers, _page = anonymous.request("/")
        assert status == 302 and headers["Location"].endswith("/login")

        # a login with the wrong CSRF token is refused; the real one logs in
        status, _h, _p = anonymous.request(
            "/login", {"username": "wang", "password": PASSWORD, "csrf_token": "x"}
        )
        assert status == 400
        head = Browser(url)
        status, headers, _page = head.login("wang")
        assert status == 302, _page
        # its own cookie name: a branch web on the same host (cookies ignore ports) keeps its session
        assert [c.name for c in head.jar] == ["vipsense_centre_session"]
        status, headers, _page = head.request("/")
        assert status == 302 and "/login" not in headers["Location"]
        status, _h, page = head.request(urllib.parse.urlsplit(headers["Location"]).path)
        assert status == 200 and "wang" in page
        status, _h, _p = head.request("/audit")
        assert status == 403  # head office watches branches; the audit log is the auditor's

        manager = Browser(url)
        assert manager.login("zhao")[0] == 302
        status, headers, _page = manager.request("/")
        assert status == 302 and "/login" not in headers["Location"]

        auditor = Browser(url)
        assert auditor.login("li")[0] == 302
        status, headers, _page = auditor.request("/")
        assert status == 302 and headers["Location"].endswith("/audit")
        status, _h, page = auditor.request("/audit")
        assert status == 200 and "wang" in page and "login" in page

        wrong = Browser(url)
        assert wrong.login("wang", "not the password")[0] == 401

        # the ingest needs no login and no CSRF token (it is signed): unsigned, it is refused as such
        status, _h, body = anonymous.request(
            "/api/v1/ingest",
            json.dumps({"format": 1}).encode(),
            {"Content-Type": "application/json", "X-Vipsense-Branch": "bj-xidan"},
        )
        assert status == 401 and json.loads(body)["code"] == "unauthorized", body
    finally:
        code = stop(proc)
    assert code == 0

    profile = load_centre_profile(centre)
    log = open_centre_audit(profile)
    try:
        logins = [(e.actor, e.result.value) for e in log.entries() if e.action.value == "login"]
        assert log.verify().ok
    finally:
        log.close()
    assert ("wang", "success") in logins and ("zhao", "success") in logins and ("li", "success") in logins
    assert ("wang", "denied") in logins
