"""The branch web under the attacks of the penetration test ("Hardening for a bank", web points), each
against a real running branch and its server over loopback sockets.

* point 4: 500 idle connections and 100 slowloris clients (plain and TLS) while /login and /status
  must still answer; the per-source cap;
* point 3: a cookie copied before logout, a password change, a disabled account, "end all sessions"
  and the absolute lifetime;
* point 6: lockout as a weapon (a real user still logs in from elsewhere) and as an oracle (the same
  answer and the same work for every failure);
* point 1: the ID-number look-up as an oracle for a masked number;
* point 13: live streams per user and in total;
* point 14: expired API tokens, and their last use.

Every loop here is bounded in count and time, sends traffic to 127.0.0.0/8 only, and closes every
socket it opened.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import ipaddress
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

import vipsense
from vipsense.identity.idnumber import check_character

from .conftest import REPO
from .web_support import PASSWORD, WEB_PROFILE, csrf_from

# -- a throwaway certificate, made with the cryptography package --------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, valid for a day: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vipsense test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


# -- a real HTTP client with a cookie ------------------------------------------------------------------


class Browser:
    """http.client over loopback, one connection per request, with the session cookie."""

    def __init__(
        self, url: str, cafile: Path | None = None, timeout: float = 10.0, src: str = "127.0.0.1"
    ) -> None:
        self.src = src
        parts = urlsplit(url)
        self.host, self.port, self.tls = (
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            parts.scheme == "https",
        )
        self.context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
        self.timeout = timeout
        self.cookie = ""

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, Any]:
        address = (self.src, 0)
        if self.tls:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, context=self.context, timeout=self.timeout, source_address=address
            )
        else:
            conn = http.client.HTTPConnection(
                self.host, self.port, timeout=self.timeout, source_address=address
            )
        headers = {"Accept": "text/html"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            conn.close()
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return response.status, text, response

    def csrf(self) -> str:
        return csrf_from(self.request("GET", "/login")[1])

    def login(self, username: str, password: str = PASSWORD) -> int:
        _, page, _ = self.request("GET", "/login")
        status, _, _ = self.request(
            "POST", "/login", {"username": username, "password": password, "csrf_token": csrf_from(page)}
        )
        return status


# -- the attackers -----------------------------------------------------------------------------------


def source(block: int, n: int) -> str:
    """A loopback source address of its own (127.0.<block>.<n>): the web sees many clients."""
    return f"127.0.{block}.{1 + n % 250}"


def connect(port: int, src: str, timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


@contextlib.contextmanager
def idle_connections(port: int, count: int, per_source: int, block: int = 1) -> Iterator[list[socket.socket]]:
    """``count`` TCP connections that send nothing, ``per_source`` from each address."""
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            socks.append(connect(port, source(block, i // per_source)))
        yield socks
    finally:
        for s in socks:
            s.close()


class Slowloris:
    """``count`` clients that start a request and then send one header byte each ``every`` seconds,
    never finishing it (over TLS too: the handshake is done first)."""

    def __init__(self, port: int, count: int, per_source: int, context: ssl.SSLContext | None = None,
                 every: float = 1.0, block: int = 2) -> None:  # fmt: skip
        self.socks: list[socket.socket] = []
        self.closed_by_server = 0
        self.every = every
        self._stop = threading.Event()
        for i in range(count):
            s: socket.socket = connect(port, source(block, i // per_source))
            if context is not None:
                s = context.wrap_socket(s, server_hostname="127.0.0.1")
            s.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            self.socks.append(s)
        self._thread = threading.Thread(target=self._drip, name="slowloris", daemon=True)
        self._thread.start()

    def _drip(self) -> None:
        alive = list(self.socks)
        while alive and not self._stop.wait(self.every):
            for s in list(alive):
                try:
                    s.sendall(b"X")
                except OSError:  # the server closed it
                    alive.remove(s)
                    self.closed_by_server += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self.socks:
            s.close()


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


# -- point 4: the port cannot be taken down ------------------------------------------------------------

ATTACK_PROFILE = WEB_PROFILE.replace(
    "web: {bind: 127.0.0.1, port: 0,",
    "web: {bind: 127.0.0.1, port: 0, connections: {request_timeout: 3s, idle_timeout: 60s},",
)


def run_attack(w: Any, cafile: Path | None, context: ssl.SSLContext | None) -> dict[str, float]:
    """500 idle connections and 100 slowloris clients (many source addresses), then /login and /status
    from 127.0.0.1; returns the timings."""
    port = int(urlsplit(w.url).port or 0)
    user = Browser(w.url, cafile, timeout=10)
    with idle_connections(port, 500, per_source=25) as idle:
        loris = Slowloris(port, 100, per_source=20, context=context, every=1.0)
        try:
            gate = w.server._server.gate
            assert wait_until(lambda: gate.counts()["open"] >= 600, 10), gate.counts()  # all really held
            login_s, status = timed(user.login, "boss")
            assert status == 302
            status_s, (code, page, _) = timed(user.request, "GET", "/status")
            assert code == 200 and "Web Test Branch" in page
            bounds = {"login": login_s, "status": status_s}
            assert max(bounds.values()) < 5.0, bounds  # each answered within a bounded time
            # the slowloris requests never finish: the server closes them after request_timeout (3 s)
            assert wait_until(lambda: loris.closed_by_server == 100, 10), loris.closed_by_server
            assert wait_until(lambda: gate.counts()["open"] <= 510, 5), gate.counts()
            code, page, _ = user.request("GET", "/status")
            assert code == 200
            assert all(s.fileno() >= 0 for s in idle)  # the idle ones were held all along
        finally:
            loris.close()
    return bounds


def wait_until(condition: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


@pytest.mark.slow
def test_idle_and_slowloris_connections_do_not_take_plain_http_down(web_branch):
    from vipsense.model import Role

    w = web_branch(text=ATTACK_PROFILE, accounts={"boss": Role.BRANCH_MANAGER})
    run_attack(w, None, None)


@pytest.mark.slow
def test_idle_and_slowloris_connections_do_not_take_https_down(web_branch, tmp_path):
    cert, key = make_certificate(tmp_path / "tls")
    text = ATTACK_PROFILE.replace("port: 0,", f"port: 0, tls: {{cert: '{cert}', key: '{key}'}},", 1)
    from vipsense.model import Role

    w = web_branch(text=text, accounts={"boss": Role.BRANCH_MANAGER})
    assert w.url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    run_attack(w, cert, context)


class SlowBody:
    """``count`` clients that send a whole chunked POST head, then one body chunk each ``every``
    seconds, never the last one: without the gate each would hold a request thread as long as it
    liked (the app waits for the body)."""

    def __init__(self, port: int, count: int, every: float = 1.0, block: int = 4) -> None:
        self.socks: list[socket.socket] = []
        self.closed_by_server = 0
        self._stop = threading.Event()
        for i in range(count):
            s = connect(port, source(block, i))
            s.sendall(
                b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\n1\r\nu\r\n"
            )
            self.socks.append(s)
        self._thread = threading.Thread(target=self._drip, args=(every,), name="slow-body", daemon=True)
        self._thread.start()

    def _drip(self, every: float) -> None:
        alive = list(self.socks)
        while alive and not self._stop.wait(every):
            for s in list(alive):
                try:
                    s.sendall(b"1\r\nx\r\n")
                except OSError:  # the server closed it
                    alive.remove(s)
                    self.closed_by_server += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self.socks:
            s.close()


@pytest.mark.slow
def test_a_slowly_sent_chunked_body_does_not_hold_a_thread(web_branch):
    """More slow chunked uploads than there are threads: pages still answer, and each upload is closed
    ``request_timeout`` after it began (a body counts as part of the request)."""
    from vipsense.model import Role

    w = web_branch(text=ATTACK_PROFILE, accounts={"boss": Role.BRANCH_MANAGER})
    port = int(urlsplit(w.url).port or 0)
    slow = SlowBody(port, w.branch.profile.web.threads + 16)
    try:
        user = Browser(w.url, timeout=10)
        login_s, status = timed(user.login, "boss")
        assert status == 302 and login_s < 5.0, login_s
        assert wait_until(lambda: slow.closed_by_server == len(slow.socks), 10), slow.closed_by_server
    finally:
        slow.close()


def test_one_source_cannot_hold_more_than_its_cap(web_branch):
    from vipsense.model import Role

    w = web_branch(accounts={"boss": Role.BRANCH_MANAGER})
    cap = w.branch.profile.web.connections.max_per_source
    port = int(urlsplit(w.url).port or 0)
    socks: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(cap + 100):
            try:
                socks.append(connect(port, "127.0.3.1"))
            except ConnectionResetError:  # closed by the server before connect() even returned
                refused += 1
        # the others past the cap are closed at once too: they read as closed (EOF or reset)
        end = time.monotonic() + 5
        open_ = list(socks)
        while refused < 100 and time.monotonic() < end:
            readable, _, _ = select.select(open_, [], [], 0.2)
            for s in readable:
                with contextlib.suppress(OSError):
                    s.recv(1)
                open_.remove(s)
                refused += 1
        assert refused == 100
        assert w.server._server.gate.counts()["open"] == cap
        assert Browser(w.url).request("GET", "/login")[0] == 200  # another address is served
    finally:
        for s in socks:
            s.close()


# -- point 3: a session ends when it is ended ------------------------------------------------------------

SESSION_PROFILE = WEB_PROFILE.replace("session_timeout: 15m,", "session_timeout: 15m, session_lifetime: 1h,")


@pytest.mark.slow
def test_a_cookie_copied_before_logout_reads_nothing_after_it(web_branch):
    w = web_branch()
    owner = Browser(w.url)
    assert owner.login("boss") == 302
    thief = Browser(w.url, src="127.0.0.66")
    thief.cookie = owner.cookie  # copied off the screen, a proxy log or a shared PC
    assert thief.request("GET", "/console/customer/C1")[0] == 200
    assert owner.request("POST", "/logout", {"csrf_token": owner.csrf()})[0] == 302
    code, _, response = thief.request("GET", "/console/customer/C1")
    assert code == 302 and "/login" in response.getheader("Location")
    assert thief.request("GET", "/api/status")[0] == 401


@pytest.mark.slow
def test_a_password_change_disabling_and_logout_all_end_sessions_at_once(web_branch, write_profile, tmp_path):
    w = web_branch()
    browsers = {name: Browser(w.url) for name in ("boss", "lobby", "cm1", "cm2")}
    for name, browser in browsers.items():
        assert browser.login(name) == 302
        assert browser.request("GET", "/api/status")[0] == 200
    w.server.users.set_password("boss", "Another-Horse-43!")  # what vipsense users passwd does
    assert browsers["boss"].request("GET", "/api/status")[0] == 401
    w.server.users.set_disabled("lobby", True)
    assert browsers["lobby"].request("GET", "/api/status")[0] == 401
    profile = write_profile(WEB_PROFILE)
    done = subprocess.run(
        [sys.executable, "-m", "vipsense.cli", "users", "logout-all", str(profile), "--data-dir",
         str(w.branch.data_dir)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0 and "2 sessions ended" in done.stdout, done.stderr
    assert browsers["cm1"].request("GET", "/api/status")[0] == 401  # the running web, at once
    assert browsers["cm2"].request("GET", "/api/status")[0] == 401
    assert browsers["cm1"].login("cm1") == 302  # a new login is a new session


@pytest.mark.slow
def test_a_session_in_use_still_ends_at_its_lifetime(web_branch, monkeypatch):
    w = web_branch(text=SESSION_PROFILE)
    client = w.client("boss")
    real = time.time
    for minutes in range(10, 60, 10):  # a request every 10 minutes: never idle for 15
        monkeypatch.setattr(time, "time", lambda m=minutes: real() + m * 60)
        assert client.get("/api/status").status_code == 200, minutes
    monkeypatch.setattr(time, "time", lambda: real() + 61 * 60)  # past the 1 h lifetime
    page = client.get("/status")
    assert page.status_code == 302 and "expired=1" in page.headers["Location"]
    assert client.get("/api/status").status_code == 401


class LiveStream:
    """/console/events over a real socket with a browser's cookie."""

    def __init__(self, browser: Browser) -> None:
        self.conn = http.client.HTTPConnection(browser.host, browser.port, timeout=10)
        self.conn.request(
            "GET", "/console/events", headers={"Cookie": browser.cookie, "Accept": "text/event-stream"}
        )
        self.sock = self.conn.sock
        self.response = self.conn.getresponse()
        self.status = self.response.status

    def next_event(self, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
        import json

        self.sock.settimeout(timeout)
        name, data = "", ""
        while True:
            line = self.response.readline().decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line == "" and name:
                return name, json.loads(data)
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]

    def close(self) -> None:
        self.conn.close()


@pytest.mark.slow
def test_an_open_live_stream_ends_with_its_session(web_branch):
    from .web_support import CARD

    w = web_branch()
    lobby = Browser(w.url)
    assert lobby.login("lobby") == 302
    stream = LiveStream(lobby)
    try:
        assert stream.status == 200 and stream.next_event()[0] == "snapshot"
        assert lobby.request("POST", "/logout", {"csrf_token": lobby.csrf()})[0] == 302
        w.walk_in(CARD[1])  # an arrival after the logout must not reach the logged-out screen
        name, _ = stream.next_event()
        assert name == "ended"
    finally:
        stream.close()


# -- point 6: lockout is neither a weapon nor an oracle ---------------------------------------------------


@pytest.mark.slow
def test_an_attacker_cannot_shut_a_real_user_out(web_branch, monkeypatch):
    from vipsense.storage.audit import AuditAction

    w = web_branch()
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)  # the attack is quicker than any wait: none runs out
    attacker = Browser(w.url, src="127.0.0.9")
    for _ in range(12):  # well past five, from the attacker's address
        assert attacker.login("lobby", "Wrong-Password-1!") == 401
    assert Browser(w.url, src="127.0.0.1").login("lobby") == 302  # the lobby manager, at their desk
    assert attacker.login("lobby") == 401  # the attacker's address waits, even with the right password
    reasons = [e.reason for e in w.branch.audit.entries(action=AuditAction.LOGIN, actor="lobby")]
    assert reasons.count("wrong password") == 5
    assert sum(r.startswith("too many failures, not checked") for r in reasons) == 8


@pytest.mark.slow
def test_every_failed_login_answers_alike_and_costs_one_password_check(web_branch, monkeypatch):
    import vipsense.web.users as users

    w = web_branch()
    checks: list[int] = []
    real_matches = users._matches
    monkeypatch.setattr(
        users, "_matches", lambda digest, password: checks.append(1) or real_matches(digest, password)
    )
    frozen = time.time()
    w.server.users.clock = lambda: frozen  # cm2's wait must not run out on a slow machine mid-test
    attacker = Browser(w.url, src="127.0.0.10")
    for _ in range(5):
        attacker.login("cm2", "Wrong-Password-1!")  # cm2 now waits, from this address
    w.server.users.set_disabled("cm1", True)
    answers = {}
    for case, (name, password) in {
        "no such account": ("nobody", PASSWORD),
        "wrong password": ("lobby", "Wrong-Password-2!"),
        "waiting (right password)": ("cm2", PASSWORD),
        "disabled (right password)": ("cm1", PASSWORD),
    }.items():
        browser = Browser(w.url, src="127.0.0.10" if name == "cm2" else "127.0.0.11")
        token = browser.csrf()
        del checks[:]
        code, page, _ = browser.request(
            "POST", "/login", {"username": name, "password": password, "csrf_token": token}
        )
        answers[case] = (code, page.replace(token, "TOKEN"))
        assert len(checks) == 1, case  # the same scrypt work whatever the failure
    assert len(set(answers.values())) == 1, {k: v[0] for k, v in answers.items()}
    assert (
        answers["no such account"][0] == 401
        and "Wrong user name or password" in answers["no such account"][1]
    )


# -- point 1: the ID-number look-up is no oracle for a masked number ----------------------------------------

C1_VALID = "110101199003071233"  #: C1's ID number with a right check digit
C2_VALID = "310101198512125677"


def valid_ids_ending(tail: str, region: str = "110101", count: int = 15) -> list[str]:
    """Whole, valid ID numbers that end in ``tail`` (3 sequence digits and the check character):
    what an attacker who sees ``**************<tail>`` can try."""
    out: list[str] = []
    day = dt.date(1990, 1, 1)
    while len(out) < count:
        first17 = f"{region}{day:%Y%m%d}{tail[:3]}"
        if check_character(first17) == tail[3]:
            out.append(first17 + tail[3])
        day += dt.timedelta(days=1)
    return out


def lookup_seed() -> str:
    from .web_support import WEB_SEED

    return WEB_SEED.replace("110101199003071234", C1_VALID).replace("310101198512125678", C2_VALID)


class AlertObserver:
    """A plugin that records the vipsense_security_alert broadcasts."""

    def __init__(self) -> None:
        self.alerts: list[tuple[str, str, str, str]] = []

    @vipsense.hookimpl
    def vipsense_security_alert(self, kind: str, actor: str, source: str, detail: str) -> None:
        self.alerts.append((kind, actor, source, detail))


def post_lookup(browser: Browser, token: str, q: str, reason: str = "phone appointment") -> int:
    return browser.request("POST", "/console/lookup", {"q": q, "reason": reason, "csrf_token": token})[0]


@pytest.mark.slow
def test_guessing_a_masked_id_number_is_refused_limited_and_alerted(web_branch):
    from vipsense.storage.audit import AuditAction

    observer = AlertObserver()
    w = web_branch(seed=lookup_seed(), plugins={"alert-observer": observer})
    lobby = Browser(w.url)
    assert lobby.login("lobby") == 302
    masked = lobby.request("GET", "/console/customer/C1")[1]
    assert "**************1233" in masked and C1_VALID not in masked  # what the lobby manager sees
    guesses = valid_ids_ending("1233")
    token = lobby.csrf()
    assert {post_lookup(lobby, token, g) for g in guesses[:5]} == {403}  # no right to search by ID
    # and the third refusal in a day alerts, for the account and for its address
    assert observer.alerts == [
        ("id_lookup_forbidden", "lobby", "web:127.0.0.1", observer.alerts[0][3]),
        ("id_lookup_forbidden", "lobby", "web:127.0.0.1", observer.alerts[1][3]),
    ]
    assert "user lobby" in observer.alerts[0][3] and "address 127.0.0.1" in observer.alerts[1][3]
    del observer.alerts[:]
    boss = Browser(w.url, src="127.0.0.20")
    assert boss.login("boss") == 302
    stream = LiveStream(boss)
    try:
        assert stream.next_event()[0] == "snapshot"
        token = boss.csrf()
        answered = [post_lookup(boss, token, g) for g in guesses[:10]]
        assert set(answered) <= {200, 404}
        refused = [post_lookup(boss, token, g) for g in guesses[10:14]]
        assert refused == [429] * 4  # 10 a minute: the 11th and later are refused
        assert post_lookup(boss, token, C1_VALID) == 429  # even the right one, once over the limit
        name, alert = stream.next_event()
        assert name == "alert" and alert["kind"] == "id_lookup_limit" and C1_VALID not in json_dump(alert)
    finally:
        stream.close()
    assert [a[:2] for a in observer.alerts] == [("id_lookup_limit", "boss")] * 2  # the user and the address
    entries = list(w.branch.audit.entries(action=AuditAction.LOOKUP, actor="boss"))
    assert sum(e.result == "denied" and "over the limit" in e.reason for e in entries) == 5
    assert any(e.object.startswith("security alert") for e in entries)
    lobby_entries = list(w.branch.audit.entries(action=AuditAction.LOOKUP, actor="lobby"))
    assert sum(e.object == "security alert: id_lookup_forbidden" for e in lobby_entries) == 2
    assert all(C1_VALID not in e.object + e.reason for e in entries)


def json_dump(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


@pytest.mark.slow
def test_a_number_nobody_has_answers_like_a_customer_one_may_not_see(web_branch, monkeypatch):
    """Were a client manager given the right to search by ID number, a hit on another manager's
    customer and a number nobody has would still be the same answer."""
    from vipsense.model import Role
    from vipsense.permissions import GRANTS, Permission

    grants = GRANTS[Permission.CUSTOMER_SEARCH_ID] | {Role.CLIENT_MANAGER}
    monkeypatch.setitem(GRANTS, Permission.CUSTOMER_SEARCH_ID, grants)
    w = web_branch(seed=lookup_seed())
    cm1 = Browser(w.url)
    assert cm1.login("cm1") == 302
    token = cm1.csrf()
    nobody = next(g for g in valid_ids_ending(C2_VALID[-4:], region="310101") if g != C2_VALID)
    answers = []
    for number in (C2_VALID, nobody):  # the same masked tail: the same query shown
        for accept in ("text/html", "application/json"):
            conn = http.client.HTTPConnection(cm1.host, cm1.port, timeout=10)
            headers = {
                "Cookie": cm1.cookie,
                "Accept": accept,
                "Content-Type": "application/x-www-form-urlencoded",
            }
            conn.request(
                "POST",
                "/console/lookup",
                urlencode({"q": number, "reason": "x", "csrf_token": token}),
                headers,
            )
            response = conn.getresponse()
            answers.append((accept, response.status, response.read().replace(token.encode(), b"")))
            conn.close()
    assert answers[0] == answers[2] and answers[1] == answers[3]
    assert answers[0][1] == 404


# -- point 13: live streams are capped below the thread pool ------------------------------------------------

STREAMS_PROFILE = WEB_PROFILE.replace(
    "web: {bind: 127.0.0.1, port: 0,", "web: {bind: 127.0.0.1, port: 0, threads: 16,"
)


@pytest.mark.slow
def test_live_streams_are_capped_per_user_and_in_total(web_branch):
    w = web_branch(text=STREAMS_PROFILE)
    browsers = {name: Browser(w.url) for name in ("lobby", "boss", "cm1")}
    for name, browser in browsers.items():
        assert browser.login(name) == 302
    streams: list[LiveStream] = []
    try:
        for _ in range(4):
            streams.append(LiveStream(browsers["lobby"]))
        assert [s.status for s in streams] == [200] * 4
        fifth = LiveStream(browsers["lobby"])
        streams.append(fifth)
        assert fifth.status == 429 and fifth.response.getheader("Retry-After")
        for _ in range(4):
            streams.append(LiveStream(browsers["boss"]))
        assert streams[-1].status == 200  # 8 open: half of the 16 threads
        over = LiveStream(browsers["cm1"])
        streams.append(over)
        assert over.status == 503
        assert Browser(w.url).request("GET", "/login")[0] == 200  # pages still have threads
        assert browsers["cm1"].request("GET", "/console/customer/C1")[0] == 200
    finally:
        for s in streams:
            s.close()


# -- point 14: API tokens expire, and their last use shows ---------------------------------------------------


@pytest.mark.slow
def test_an_expired_token_is_refused_like_an_unknown_one(web_branch, monkeypatch, write_profile):
    w = web_branch(accounts={})
    token = w.server.users.add_token("crm", ("customer_no", "name", "tier"), 60, expires_in=3600)
    api = Browser(w.url)

    def call(bearer: str) -> tuple[int, str | None]:
        conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
        conn.request("GET", "/api/v1/customers/C1", headers={"Authorization": f"Bearer {bearer}"})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status, response.getheader("WWW-Authenticate")

    assert call(token)[0] == 200
    unknown = call("vst_" + "x" * 43)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3601)
    assert call(token) == unknown == (401, 'Bearer realm="vipsense", error="invalid_token"')
    monkeypatch.setattr(time, "time", real)
    profile, data = str(write_profile(WEB_PROFILE)), str(w.branch.data_dir)
    listed = subprocess.run(
        [sys.executable, "-m", "vipsense.cli", "tokens", "list", profile, "--data-dir", data],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    [line] = [x for x in listed.stdout.splitlines() if x.startswith("crm")]
    assert "last used never" not in line and "expires never" not in line and "active" in line
    for expires, words in (("90d", "expires"), ("soon", "give a time such as 90d")):
        made = subprocess.run(
            [sys.executable, "-m", "vipsense.cli", "tokens", "add", profile, "queue", "--expires", expires,
             "--data-dir", data],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        assert words in made.stdout + made.stderr, made.stderr
        assert "Traceback" not in made.stderr


@pytest.mark.slow
def test_check_warns_about_a_web_on_the_network_without_tls(write_profile):
    profile = write_profile(WEB_PROFILE.replace("bind: 127.0.0.1", "bind: 0.0.0.0"))
    done = subprocess.run(
        [sys.executable, "-m", "vipsense.cli", "check", str(profile)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "web.bind" in out and "without web.tls" in out
    quiet = subprocess.run(
        [sys.executable, "-m", "vipsense.cli", "check", str(write_profile(WEB_PROFILE))],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert "without web.tls" not in quiet.stdout + quiet.stderr
