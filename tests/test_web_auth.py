"""Logins, roles, sessions and serving of the branch web, against a real running branch.

Every guarded route x every role: anonymous gets 401 (JSON, streams) or a redirect to the login page,
a role without the permission gets 403, a role with it gets neither.  Then lockout, session timeout,
CSRF, disabled accounts, open redirects, the LDAP login against a real slapd, HTTPS through the TLS
terminator, a port already taken, and ``vipsense users``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time

import pytest

from vipsense.model import Role
from vipsense.permissions import allowed
from vipsense.storage.audit import AuditAction, AuditResult

from .conftest import REPO, wait_for
from .web_support import ACCOUNTS, PASSWORD, WEB_PROFILE, csrf_from, csrf_of, login

# -- every route x every role ------------------------------------------------------------------------


def guarded_routes(app) -> list[tuple[str, str, object]]:
    """(method, path, permission) for every rule of the app; unguarded rules must be known public."""
    from vipsense.web.auth import PUBLIC

    out = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        permission = getattr(view, "permission", None)
        if rule.rule.startswith("/api/v1/") and rule.endpoint not in PUBLIC:
            continue  # the query API: tokens, not sessions (test_token_routes_ignore_sessions)
        if permission is None:
            # the account's own language: any signed-in role, checked in the view (test_web_i18n)
            mine = {"home", "auth.logout", "auth.language"}
            assert rule.endpoint in PUBLIC | mine, f"{rule} is neither guarded nor public"
            continue
        path = re.sub(r"<(?:[^:>]+:)?[^>]+>", "X1", rule.rule)  # any value: the guard answers first
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, path, permission))
    return out


@pytest.mark.slow
def test_every_guarded_route_answers_each_role_as_the_permission_table_says(web_branch):
    w = web_branch()
    routes = guarded_routes(w.app)
    assert len(routes) >= 3
    anonymous = w.client()
    for method, path, _ in routes:
        r = anonymous.open(path, method=method, headers={"Accept": "text/html"})
        assert r.status_code in (302, 401), (method, path, r.status_code)
        if r.status_code == 302:
            assert "/login" in r.headers["Location"]
    for name, role in ACCOUNTS.items():
        client = w.client(name)
        token = csrf_of(client)
        for method, path, permission in routes:
            r = client.open(
                path, method=method, headers={"X-CSRF-Token": token, "Accept": "application/json"}
            )
            if allowed(role, permission):
                assert r.status_code not in (401, 403), (name, method, path, r.status_code, r.text[:200])
            else:
                assert r.status_code == 403, (name, method, path, r.status_code)
                assert permission.value not in ("",)  # the message names what is missing
                assert "may not" in r.get_json()["error"]


@pytest.mark.slow
def test_home_sends_each_role_to_its_page(web_branch):
    w = web_branch()
    expected = {"admin1": "/status", "auditor1": "/audit", "boss": "/console", "lobby": "/console",
                "cm1": "/console", "issuer": "/status", "hq": "/status"}  # fmt: skip
    for name, page in expected.items():
        assert w.client(name).get("/").headers["Location"].endswith(page), name
    assert w.client().get("/").headers["Location"].endswith("/login")


# -- logging in --------------------------------------------------------------------------------------


def login_entries(w) -> list:
    return [e for e in w.branch.audit.entries(action=AuditAction.LOGIN)]


@pytest.mark.slow
def test_a_login_is_audited_and_a_wrong_password_says_nothing_about_which_part_was_wrong(web_branch):
    w = web_branch()
    client = w.app.test_client()
    bad_user = login(client, "nobody", PASSWORD)
    bad_pass = login(client, "cm1", PASSWORD + "x")
    assert bad_user.status_code == bad_pass.status_code == 401
    assert "Wrong user name or password." in bad_user.text and "Wrong user name or password." in bad_pass.text
    assert login(client, "cm1").status_code == 302
    entries = login_entries(w)
    assert [(e.actor, e.result) for e in entries] == [
        ("nobody", AuditResult.DENIED.value),
        ("cm1", AuditResult.DENIED.value),
        ("cm1", AuditResult.SUCCESS.value),
    ]
    assert entries[0].reason == "no such account" and entries[1].reason == "wrong password"
    assert all(e.source == "web:127.0.0.1" for e in entries)
    assert PASSWORD not in json.dumps([e.reason for e in entries])


def from_address(w, address: str):
    """A test client whose requests come from ``address`` (the WSGI REMOTE_ADDR)."""
    client = w.app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


@pytest.mark.slow
def test_wrong_passwords_make_that_address_wait_longer_each_time(web_branch, monkeypatch):
    w = web_branch()
    attacker = from_address(w, "127.0.0.9")
    first = login(attacker, "lobby", "Wrong-Password-1!")
    for _ in range(4):
        assert login(attacker, "lobby", "Wrong-Password-1!").status_code == 401
    waiting = login(attacker, "lobby")  # the right password, but the wait is not over
    assert waiting.status_code == 401
    assert waiting.text.replace(csrf_from(waiting.text), "") == first.text.replace(csrf_from(first.text), "")
    denied = [e for e in login_entries(w) if e.actor == "lobby"]
    assert denied[-1].reason.startswith("too many failures, not checked")
    assert login(from_address(w, "127.0.0.1"), "lobby").status_code == 302  # the real user, elsewhere
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 2)  # past the 1 s wait after the fifth failure
    assert login(attacker, "lobby").status_code == 302
    assert w.server.users.get("lobby").failures == 0
    monkeypatch.setattr(time, "time", real)
    for _ in range(6):
        login(attacker, "cm1", "Wrong-Password-1!")
    assert login(attacker, "cm1").status_code == 401
    w.server.users.unlock("cm1")  # vipsense users unlock: no wait any more
    assert login(attacker, "cm1").status_code == 302


@pytest.mark.slow
def test_the_session_ends_after_the_timeout_without_requests(web_branch, monkeypatch):
    w = web_branch()
    client = w.client("boss")
    assert client.get("/status").status_code == 200
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 15 * 60 + 1)  # the clock the session reads
    r = client.get("/status")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert client.get("/api/status").status_code == 401


@pytest.mark.slow
def test_a_disabled_account_loses_its_session_at_once(web_branch):
    w = web_branch()
    client = w.client("cm1")
    assert client.get("/status").status_code == 200
    w.server.users.set_disabled("cm1", True)
    assert client.get("/api/status").status_code == 401
    assert login(w.app.test_client(), "cm1").status_code == 401


@pytest.mark.slow
def test_posts_without_the_csrf_token_are_refused(web_branch):
    w = web_branch()
    client = w.app.test_client()
    client.get("/login")
    r = client.post("/login", data={"username": "boss", "password": PASSWORD})
    assert r.status_code == 400 and "CSRF" in r.text
    client = w.client("boss")
    assert client.post("/logout").status_code == 400
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    assert client.get("/status").status_code == 200  # still logged in
    assert client.post("/logout", data={"csrf_token": csrf_of(client)}).status_code == 302
    assert client.get("/api/status").status_code == 401


@pytest.mark.slow
def test_next_never_leads_off_the_site(web_branch):
    w = web_branch()
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)", "status"):
        client = w.app.test_client()
        token = csrf_from(client.get("/login").text)
        r = client.post(
            "/login", data={"username": "boss", "password": PASSWORD, "csrf_token": token, "next": target}
        )
        assert r.status_code == 302 and r.headers["Location"] == "/", target
    client = w.app.test_client()
    token = csrf_from(client.get("/login").text)
    r = client.post(
        "/login", data={"username": "boss", "password": PASSWORD, "csrf_token": token, "next": "/status"}
    )
    assert r.headers["Location"] == "/status"


@pytest.mark.slow
def test_pages_carry_the_security_headers_and_the_cookie_is_httponly_and_strict(web_branch):
    w = web_branch()
    client = w.app.test_client()
    r = client.get("/login")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Cache-Control"] == "no-store"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


# -- accounts from the command line ------------------------------------------------------------------


def users_cli(profile, data, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "vipsense.cli",
        "users",
        *args[:1],
        str(profile),
        *args[1:],
        "--data-dir",
        str(data),
    ]
    if password is not None:
        cmd.append("--password-stdin")
    return subprocess.run(
        cmd, input=(password + "\n") if password is not None else "", capture_output=True, text=True,
        timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


@pytest.mark.slow
def test_the_first_admin_comes_from_vipsense_users_add_and_can_log_in(write_profile, tmp_path, web_branch):
    profile = write_profile(WEB_PROFILE)
    data = tmp_path / "data"
    r = users_cli(profile, data, "list")
    assert r.returncode == 0 and "no accounts yet" in r.stdout
    assert (
        "at least 12" in users_cli(profile, data, "add", "root", "--role", "admin", password="short").stderr
    )
    weak = users_cli(profile, data, "add", "root", "--role", "admin", password="alllowercaseletters")
    assert weak.returncode == 1 and "three of" in weak.stderr
    not_staff = users_cli(profile, data, "add", "someone", "--role", "client_manager", password=PASSWORD)
    assert not_staff.returncode == 1 and "not in the staff" in not_staff.stderr
    wrong_role = users_cli(profile, data, "add", "cm1", "--role", "branch_manager", password=PASSWORD)
    assert wrong_role.returncode == 1 and "is a client_manager in the profile" in wrong_role.stderr
    r = users_cli(profile, data, "add", "root", "--role", "admin", password=PASSWORD)
    assert r.returncode == 0, r.stderr
    assert "already" in users_cli(profile, data, "add", "root", "--role", "admin", password=PASSWORD).stderr
    assert (data / "users.sqlite3").stat().st_mode & 0o077 == 0
    assert PASSWORD not in (data / "users.sqlite3").read_bytes().decode("latin-1")

    w = web_branch(accounts={}, data_dir=data)
    client = w.app.test_client()
    assert login(client, "root").status_code == 302
    assert client.get("/status").status_code == 200
    assert client.get("/console").status_code == 403  # the administrator sees no customer data
    changes = [(e.object, e.result) for e in w.branch.audit.entries(action=AuditAction.PERMISSION_CHANGE)]
    assert ("user root: added as admin", "success") in changes
    assert ("user root: add as admin", "error") in changes  # the second, refused add


# -- LDAP login --------------------------------------------------------------------------------------

LDAP_PROFILE = WEB_PROFILE.replace(
    "web: {bind: 127.0.0.1, port: 0,",
    "web: {ldap: {uri: '%(uri)s', user_dn: 'uid={username},ou=staff,dc=bank,dc=example'},"
    " bind: 127.0.0.1, port: 0,",
)
STAFF_LDIF = """\
dn: dc=bank,dc=example
objectClass: dcObject
objectClass: organization
dc: bank
o: Example Bank

dn: ou=staff,dc=bank,dc=example
objectClass: organizationalUnit
ou: staff

dn: uid=cm1,ou=staff,dc=bank,dc=example
objectClass: inetOrgPerson
uid: cm1
cn: Li Mei
sn: Li
userPassword: Directory-Pass-7
"""


@pytest.mark.slapd
@pytest.mark.slow
def test_an_ldap_account_logs_in_with_its_directory_password(web_branch, tmp_path):
    pytest.importorskip("ldap")
    from .slapd import Slapd, missing_tools

    if missing_tools():
        pytest.skip(f"no slapd here: {missing_tools()}")
    server = Slapd(tmp_path / "slapd")
    server.slapadd(STAFF_LDIF)
    server.start()
    try:
        w = web_branch(text=LDAP_PROFILE % {"uri": server.uri}, accounts={})
        w.server.users.add("cm1", Role.CLIENT_MANAGER, None, ldap=True)
        client = w.app.test_client()
        assert login(client, "cm1", "Directory-Pass-7").status_code == 302
        assert client.get("/console").status_code == 200
        for wrong in ("wrong", "", "*"):
            assert login(w.app.test_client(), "cm1", wrong).status_code == 401, wrong
        # a name that would change the DN is escaped, not interpreted
        w.server.users.add("cm1,ou=staff", Role.ADMIN, None, ldap=True)
        assert login(w.app.test_client(), "cm1,ou=staff", "Directory-Pass-7").status_code == 401
        server.stop()  # the directory away: refused, not a crash, and not counted towards a lockout
        failures = w.server.users.get("cm1").failures
        assert login(w.app.test_client(), "cm1", "Directory-Pass-7").status_code == 401
        assert w.server.users.get("cm1").failures == failures
        denied = [e for e in w.branch.audit.entries(action=AuditAction.LOGIN) if e.actor == "cm1"]
        assert denied[-1].reason == "the directory could not be asked"
    finally:
        server.stop()


# -- serving -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_https_through_the_tls_terminator_records_the_client_address(web_branch, tmp_path):
    from .slapd import make_tls

    tls = make_tls(tmp_path / "tls")
    text = WEB_PROFILE.replace("port: 0,", f"port: 0, tls: {{cert: '{tls.cert}', key: '{tls.key}'}},")
    w = web_branch(text=text)
    assert w.url.startswith("https://127.0.0.1:")
    port = int(w.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(tls.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    conn.request("GET", "/login")
    r = conn.getresponse()
    body = r.read().decode()
    assert r.status == 200 and "Log in" in body
    assert "Secure" in r.getheader("Set-Cookie") and "max-age" in r.getheader("Strict-Transport-Security")
    cookie = r.getheader("Set-Cookie").split(";")[0]
    token = csrf_from(body)
    form = f"username=boss&password={PASSWORD.replace('!', '%21')}&csrf_token={token}"
    conn.request("POST", "/login", body=form, headers={
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    r = conn.getresponse()
    r.read()
    assert r.status == 302
    conn.close()
    [entry] = [e for e in w.branch.audit.entries(action=AuditAction.LOGIN) if e.result == "success"]
    assert entry.source == "web:127.0.0.1"
    with pytest.raises(ssl.SSLError):  # plain HTTP on the TLS port is refused by the handshake
        plain = ssl.create_default_context(cafile=str(tls.wrong_ca))
        bad = http.client.HTTPSConnection("127.0.0.1", port, context=plain, timeout=5)
        bad.request("GET", "/login")


@pytest.mark.slow
def test_a_taken_port_leaves_the_branch_running_and_the_status_says_why(web_branch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        w = web_branch(text=WEB_PROFILE.replace("port: 0,", f"port: {port},"))
        device = w.branch.status.devices["web"]
        assert device.state == "failed" and f"127.0.0.1:{port}" in device.reason
        assert "retrying" in device.reason
        w.walk_in("E20000000000000000000001")
        assert wait_for(lambda: w.branch.status.counters["greeted"] == 1)  # the door works on
    finally:
        taken.close()


@pytest.mark.slow
def test_token_routes_ignore_sessions(web_branch):
    """The query API answers 401 to every session, whatever its role: a logged-in browser cannot be
    made to call it (no cookie authority, so no CSRF either)."""
    w = web_branch()
    rules = [
        r for r in w.app.url_map.iter_rules() if r.rule.startswith("/api/v1/") and r.endpoint != "api.openapi"
    ]
    for client in (w.client(), w.client("boss"), w.client("admin1")):
        for rule in rules:
            path = re.sub(r"<(?:[^:>]+:)?[^>]+>", "C1", rule.rule)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                r = client.open(path, method=method, json={})
                assert r.status_code == 401, (rule.rule, method, r.status_code)


def test_admin_and_auditor_are_accounts_not_staff(write_profile):
    from vipsense.config.errors import ProfileError
    from vipsense.config.profile import load_profile
    from vipsense.pluginhost import load_host

    text = WEB_PROFILE.replace("role: card_issuer}", "role: auditor}")
    with pytest.raises(ProfileError) as exc:
        load_profile(write_profile(text), load_host())
    assert (
        "staff[4].role: auditor is a web account, not a member of staff: make it with vipsense users add"
        in str(exc.value)
    )


@pytest.mark.slow
def test_x_forwarded_for_counts_only_from_a_trusted_proxy(web_branch):
    text = WEB_PROFILE.replace(
        "web: {bind: 127.0.0.1,", "web: {trusted_proxies: [127.0.0.5], bind: 127.0.0.1,"
    )
    w = web_branch(text=text)
    spoofed = {"X-Forwarded-For": "10.9.9.9"}
    for proxy, expected in (("127.0.0.5", "web:10.9.9.9"), ("127.0.0.6", "web:127.0.0.6")):
        client = from_address(w, proxy)
        token = csrf_from(client.get("/login").text)
        client.post(
            "/login", data={"username": "boss", "password": "x", "csrf_token": token}, headers=spoofed
        )
        assert login_entries(w)[-1].source == expected, proxy
