"""Branch web benchmark: the status page under load, and push latency to the console's live streams.

    python bench/web.py            # measure and print; always exits 0
    python bench/web.py --check    # exit 1 when a target is missed

Everything runs on loopback.  A branch is started for real (sqlite store seeded with a few thousand
cards, an idle simulated reader, a console notifier writing to memory) with its WebServer (cheroot,
80 threads) on 127.0.0.1, and a feeder thread submits 1,000 reads/s through the real pipeline: 1,000
cards present in the door zone, plus a new VIP card arriving every 50 ms.

Phases:

1. status   5 client threads, each with its own keep-alive connection and its own branch manager
            login (session cookie), GET /status every 100 ms: 50 requests/s over real HTTP.  Latency =
            request sent to the last byte of the answer.  Target: p99 of 50 ms or less.  The same
            again for GET /api/status (reported, same target).
2. sse      50 clients, each logged in as the lobby manager with its own session, hold
            GET /console/events open (one thread each, http.client).  For every ``event: arrival``
            a client receives, latency = the moment its thread read the line minus the event's
            ``arrived_unix`` (the arrival's wall-clock time, stamped by the pipeline when the
            completing read was judged).  The window opens once every client streams live (has read
            an arrival newer than its connection) and only arrivals inside it count.  Target: p99
            of 100 ms or less, every client getting every arrival.  When the endpoint is missing
            (404) the phase says "not available".
2b. login  GET /login, a new connection for each of 200 requests, one after another: first with the
            web otherwise idle (the peer), then while 500 idle TCP connections are held open (25 from
            each of 20 loopback addresses 127.0.2.x, under the per-address cap), as an attacker who
            opens connections and sends nothing would.  Target: p99 of 50 ms or less with the 500 held.
3. audit    Before the branch starts, its audit log is filled with ``--audit-entries`` entries
            (default 1,000,000; 20,000 with ``--seconds`` under 5) through the real chain code
            (``AuditLog.append_many``, batches of 10,000, synchronous=OFF while building), in the
            temporary data directory.  ``--phases audit`` runs this phase alone.  An auditor
            logs in; the first view of /audit starts the walk of the whole chain on its own thread,
            and the phase polls until the page says the chain is verified (reported: how long the
            first full walk took).  Then one auditor's keep-alive connection GETs /audit 5 times a
            second: each view audits itself (one synced append) and checks only the entries added
            since the last view.  Latency = request sent to the last byte.  Target: p99 of 200 ms
            or less, at 1,000,000 entries.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import logging
import os
import platform
import re
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from load import NEW_EVERY, Feeder, write_seed  # bench/load.py, beside this script
from machine import cpu_model, peak_rss_mb  # bench/machine.py, beside this script

from vipsense.branch import Branch
from vipsense.config.profile import load_profile
from vipsense.model import Role
from vipsense.output import Output
from vipsense.pluginhost import load_host
from vipsense.stats import percentile
from vipsense.storage.audit import AuditAction, AuditLog, AuditRecord, AuditResult
from vipsense.web.server import WebServer

PRESENT = 1000  #: cards in the door zone
STATUS_RATE = 50  #: requests per second
STATUS_CLIENTS = 5
SSE_CLIENTS = 50
STATUS_TARGET = 50.0  #: ms, p99
SSE_TARGET = 100.0  #: ms, p99
AUDIT_TARGET = 200.0  #: ms, p99, at AUDIT_ENTRIES
AUDIT_ENTRIES = 1_000_000
QUICK_ENTRIES = 20_000  #: the audit log of a quick run (--seconds under 5), unless --audit-entries says
PHASES = ("status", "login", "sse", "audit")
IDLE_CONNECTIONS = 500  #: held open, silent, during the second half of the login phase
IDLE_PER_SOURCE = 25  #: from this many per loopback address (127.0.2.x), under web.connections.max_per_source
LOGIN_REQUESTS = 200
LOGIN_TARGET = 50.0  #: ms, p99 of GET /login while the idle connections are held
AUDIT_RATE = 5  #: /audit views per second
SETTLE = 1.0  #: s: the live phase's window closes this long before its clients stop reading
PASSWORD = "Bench-Password-42!"


def write_profile(tmp: Path, cards: int) -> Path:
    write_seed(tmp, cards)
    profile = tmp / "bench.yaml"
    profile.write_text(
        """\
branch: {id: sh-bench, name: Bench Branch}
readers:
  - {id: door, type: simulated, visitors: []}
stores:
  - {id: local, type: sqlite, seed: [seed.yaml]}
notifiers:
  - {id: screen, type: console, color: never}
presence: {min_reads: 2, window: 1s, depart_after: 10m, reentry_suppress: 10m}
staff:
  - {id: zhang.wei, name: 张伟, role: lobby_manager}
  - {id: chen.jing, name: 陈静, role: branch_manager}
routing:
  - {event: arrival, to: lobby_manager, via: [screen]}
  - {event: rejected, to: branch_manager, via: [screen]}
  - {event: suspect, to: branch_manager, via: [screen]}
web:
  bind: 127.0.0.1
  port: 0
  threads: 80
  streams: {per_user: 50, max_total: 60}  # the 50 tabs of the push phase are one lobby manager's
  connections: {max_per_source: 200}  # and every client is on 127.0.0.1
""",
        encoding="utf-8",
    )
    return profile


# -- HTTP with a session ------------------------------------------------------------------------------


class Session:
    """One keep-alive connection and one login (the session cookie), as a browser tab would have."""

    def __init__(self, port: int, username: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.cookie = ""
        page = self.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.decode()).group(1)  # type: ignore[union-attr]
        form = urlencode({"username": username, "password": PASSWORD, "csrf_token": token})
        status, _ = self.request(
            "POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        if status != 302:
            raise SystemExit(f"login as {username} failed: HTTP {status}")

    def request(self, method: str, path: str, body: str | None = None, headers: dict | None = None):
        headers = {**(headers or {}), "Cookie": self.cookie} if self.cookie else dict(headers or {})
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.startswith("vipsense_session="):
                self.cookie = value.split(";", 1)[0]
        return response.status, data

    def get(self, path: str) -> bytes:
        status, data = self.request("GET", path)
        if status != 200:
            raise SystemExit(f"GET {path}: HTTP {status}")
        return data


def phase_status(port: int, path: str, seconds: float) -> dict[str, Any]:
    sessions = [Session(port, "chen.jing") for _ in range(STATUS_CLIENTS)]
    latencies: list[float] = []
    failures: list[str] = []
    period = STATUS_CLIENTS / STATUS_RATE
    end = time.monotonic() + seconds

    def client(s: Session, offset: float) -> None:
        due = time.monotonic() + offset
        while due < end:
            time.sleep(max(0.0, due - time.monotonic()))
            t0 = time.perf_counter()
            status, _ = s.request("GET", path)
            latencies.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                failures.append(f"HTTP {status}")
            due += period

    threads = [
        threading.Thread(target=client, args=(s, i * period / STATUS_CLIENTS)) for i, s in enumerate(sessions)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "requests": len(latencies),
        "rate": len(latencies) / seconds,
        "failures": len(failures),
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies),
    }


class SseClient(threading.Thread):
    """One console tab: a lobby manager's session holding /console/events open.  It keeps every
    arrival it reads (visit id -> (arrived_unix, read at)); the phase picks its window afterwards."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.session = Session(port, "zhang.wei")
        self.port = port
        self.arrivals: dict[str, tuple[float, float]] = {}
        self.status = 0
        self.open = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/console/events", headers={"Cookie": self.session.cookie})
            response = conn.getresponse()
        except OSError:  # refused or reset: the phase reports status 0 at once instead of waiting
            conn.close()
            self.open.set()
            return
        self.status = response.status
        if response.status != 200:
            self.open.set()
            return
        self.open.set()
        received = 0.0
        name = ""
        try:
            while not self.stopping.is_set():
                line = response.fp.readline()
                if not line:
                    return
                if line.startswith(b"event: "):
                    name, received = line[7:].strip().decode(), time.time()
                elif line.startswith(b"data: ") and name == "arrival":
                    event = json.loads(line[6:])
                    self.arrivals[event["visit_id"]] = (float(event["arrived_unix"]), received)
        except (OSError, ValueError):
            return
        finally:
            conn.close()


def login_times(port: int, n: int) -> list[float]:
    """``n`` GET /login, each on a new connection (as each new visitor's first page): ms each."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/login")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"GET /login: HTTP {response.status}")
        finally:
            conn.close()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def phase_login(port: int) -> dict[str, Any]:
    """/login p50/p99 alone, then with IDLE_CONNECTIONS silent connections held open."""
    alone = login_times(port, LOGIN_REQUESTS)
    idle: list[socket.socket] = []
    try:
        for i in range(IDLE_CONNECTIONS):
            s = socket.create_connection(
                ("127.0.0.1", port), timeout=5, source_address=(f"127.0.2.{1 + i // IDLE_PER_SOURCE}", 0)
            )
            idle.append(s)
        time.sleep(0.5)  # the server has accepted and is watching every one of them
        held = login_times(port, LOGIN_REQUESTS)
    finally:
        for s in idle:
            s.close()
    return {
        "alone": (percentile(alone, 0.5), percentile(alone, 0.99)),
        "held": (percentile(held, 0.5), percentile(held, 0.99)),
        "max": max(held),
    }


def phase_sse(port: int, seconds: float) -> dict[str, Any]:
    """Latency of every arrival that happened inside the measured window, at every client.  The
    window opens once every client is streaming live (each has read an arrival that happened after
    it connected: its snapshot and the backlog of 50 tabs opening at once are behind it) and closes
    ``SETTLE`` s before the clients stop, so an arrival at the edge is not counted as missed."""
    clients = [SseClient(port) for _ in range(SSE_CLIENTS)]
    for c in clients:
        c.start()
    for c in clients:
        c.open.wait(10)
    if any(c.status == 404 for c in clients):
        return {"available": False, "why": "GET /console/events answered 404"}
    if any(c.status != 200 for c in clients):
        codes = sorted({c.status for c in clients})
        return {"available": False, "why": f"GET /console/events answered {codes}"}
    connected = time.time()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        any(at > connected for at, _ in list(c.arrivals.values())) for c in clients
    ):
        time.sleep(0.1)
    start = time.time()
    settled = start - connected
    time.sleep(seconds + SETTLE)
    for c in clients:
        c.stopping.set()
    end = time.time() - SETTLE
    union = {v for c in clients for v, (at, _) in list(c.arrivals.items()) if start <= at < end}
    lat = [(read - at) * 1000 for c in clients for v, (at, read) in list(c.arrivals.items()) if v in union]
    return {
        "available": True,
        "settled": settled,
        "arrivals": len(union),
        "complete": sum(1 for c in clients if union <= set(c.arrivals)),
        "events": len(lat),
        "p50": percentile(lat, 0.5) if lat else None,
        "p99": percentile(lat, 0.99) if lat else None,
        "max": max(lat) if lat else None,
    }


def build_audit_log(data_dir: Path, entries: int) -> float:
    """``entries`` look-ups by card issuers, chained by the real code; returns the seconds it took."""
    t0 = time.perf_counter()
    log = AuditLog(data_dir / "audit.sqlite3", synchronous="OFF")
    try:
        base = time.time() - entries
        for start in range(0, entries, 10_000):
            log.append_many(
                [
                    AuditRecord(
                        f"clerk{i % 50}",
                        "card_issuer",
                        "sh-bench",
                        AuditAction.LOOKUP,
                        f"C{1_000_000 + i}",
                        "cli:bench@host",
                        AuditResult.SUCCESS,
                        reason="phone appointment",
                        at=base + i,
                    )
                    for i in range(start, min(start + 10_000, entries))
                ]
            )
    finally:
        log.close()
    return time.perf_counter() - t0


def _chain(page: bytes) -> str:
    m = re.search(rb'<p id="chain"[^>]*data-ok="(\w+)"', page)
    return m.group(1).decode() if m else "?"


def phase_audit(port: int, seconds: float) -> dict[str, Any]:
    session = Session(port, "auditor1")
    t0 = time.perf_counter()
    state = _chain(session.get("/audit"))
    first_view = walk_max = (time.perf_counter() - t0) * 1000
    while state == "pending" and time.perf_counter() - t0 < 600:
        time.sleep(0.5)
        t = time.perf_counter()
        state = _chain(session.get("/audit"))
        walk_max = max(walk_max, (time.perf_counter() - t) * 1000)
    first_walk = time.perf_counter() - t0
    latencies: list[float] = []
    failures = 0
    period, end = 1 / AUDIT_RATE, time.monotonic() + seconds
    due = time.monotonic()
    while due < end:
        time.sleep(max(0.0, due - time.monotonic()))
        t = time.perf_counter()
        status, page = session.request("GET", "/audit")
        latencies.append((time.perf_counter() - t) * 1000)
        failures += status != 200 or _chain(page) != "true"
        due += period
    return {
        "chain": state,
        "first_view": first_view,
        "walk_max": walk_max,
        "first_walk": first_walk,
        "requests": len(latencies),
        "failures": failures,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies),
    }


def start(tmp: Path, cards: int) -> tuple[Branch, WebServer]:
    host = load_host()
    profile = load_profile(write_profile(tmp, cards), host, data_dir=tmp / "data")
    branch = Branch(profile, host, output=Output(io.StringIO(), live=False))
    branch.start()
    if not branch.wait_stores_open(120):
        raise SystemExit(
            f"bench: the store did not open within 120 s: {branch.status.devices['local'].reason}"
        )
    server = WebServer(branch, profile.web)
    server.users.add("chen.jing", Role.BRANCH_MANAGER, PASSWORD)
    server.users.add("zhang.wei", Role.LOBBY_MANAGER, PASSWORD)
    server.users.add("auditor1", Role.AUDITOR, PASSWORD)
    server.start()
    return branch, server


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    ap.add_argument(
        "--audit-entries",
        type=int,
        default=None,
        help=f"entries in the audit log of the /audit phase (default {AUDIT_ENTRIES:,}; {QUICK_ENTRIES:,}"
        " with --seconds under 5)",
    )
    ap.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"the phases to run, comma-separated (default {','.join(PHASES)})",
    )
    args = ap.parse_args(argv)
    phases = [name.strip() for name in args.phases.split(",") if name.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        ap.error(f"unknown phase {', '.join(unknown)}; the phases are {', '.join(PHASES)}")
    if args.audit_entries is None:
        args.audit_entries = AUDIT_ENTRIES if args.seconds >= 5 else QUICK_ENTRIES
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    print("vipsense web benchmark")
    print(
        f"  machine  : {cpu_model()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()} ({platform.python_implementation()}),"
        f" SQLite {sqlite3.sqlite_version}"
    )
    cards = PRESENT + int((4 * args.seconds + 60) / NEW_EVERY)  # new VIPs for every phase, and spare
    ok = True
    with tempfile.TemporaryDirectory(prefix="vipsense-bench-web-") as name:
        if "audit" in phases:
            built = build_audit_log(Path(name) / "data", args.audit_entries)
            print(
                f"  audit log : {args.audit_entries:,} entries chained in {built:.1f} s"
                " (through append_many)",
                flush=True,
            )
        branch, server = start(Path(name), cards)
        feeder = Feeder(branch, cards, PRESENT)
        try:
            feeder.warm()
            feeder.start()
            time.sleep(1.0)
            for path in ("/status", "/api/status") if "status" in phases else ():
                r = phase_status(server.bound_port, path, args.seconds)
                good = r["p99"] <= STATUS_TARGET and r["failures"] == 0
                ok &= good
                print(
                    f"  {path:<12}: {r['requests']} requests at {r['rate']:.0f}/s, p50 {r['p50']:.1f} ms,"
                    f" p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms, {r['failures']} failed"
                    f"  target p99 <= {STATUS_TARGET:g} ms: {'ok' if good else 'MISSED'}",
                    flush=True,
                )
            if "login" in phases:
                g = phase_login(server.bound_port)
                good = g["held"][1] <= LOGIN_TARGET
                ok &= good
                print(
                    f"  /login      : {LOGIN_REQUESTS} requests, a new connection each: alone p50"
                    f" {g['alone'][0]:.1f} ms, p99 {g['alone'][1]:.1f} ms; with {IDLE_CONNECTIONS} idle"
                    f" connections held p50 {g['held'][0]:.1f} ms, p99 {g['held'][1]:.1f} ms, max"
                    f" {g['max']:.1f} ms  target p99 <= {LOGIN_TARGET:g} ms: {'ok' if good else 'MISSED'}",
                    flush=True,
                )
            s = phase_sse(server.bound_port, args.seconds) if "sse" in phases else {"available": None}
            if s["available"] is None:
                pass
            elif not s["available"]:
                ok = False
                print(f"  sse         : not available ({s['why']})")
            else:
                good = s["p99"] is not None and s["p99"] <= SSE_TARGET and s["complete"] == SSE_CLIENTS
                ok &= good
                print(
                    f"  sse         : {SSE_CLIENTS} clients live after {s['settled']:.1f} s, {s['arrivals']}"
                    f" arrivals, {s['events']} events"
                    f" received ({s['complete']}/{SSE_CLIENTS} clients got every arrival), p50"
                    f" {fmt(s['p50'])} ms, p99 {fmt(s['p99'])} ms, max {fmt(s['max'])} ms"
                    f"  target p99 <= {SSE_TARGET:g} ms: {'ok' if good else 'MISSED'}"
                )
            if "audit" in phases:
                a = phase_audit(server.bound_port, args.seconds)
                good = a["chain"] == "true" and a["p99"] <= AUDIT_TARGET and a["failures"] == 0
                ok &= good
                print(
                    f"  /audit      : {args.audit_entries:,} entries; first view {a['first_view']:.0f} ms,"
                    f" first full walk {a['first_walk']:.1f} s (chain {a['chain']}, views meanwhile: max"
                    f" {a['walk_max']:.0f} ms); then {a['requests']} views at {AUDIT_RATE}/s,"
                    f" p50 {a['p50']:.1f} ms, p99 {a['p99']:.1f} ms, max {a['max']:.1f} ms,"
                    f" {a['failures']} failed"
                    f"  target p99 <= {AUDIT_TARGET:g} ms: {'ok' if good else 'MISSED'}",
                    flush=True,
                )
            print(
                f"  background: {feeder.rate():,.0f} reads/s submitted,"
                f" {branch.status.counters['arrivals']:,} arrivals; peak RSS {peak_rss_mb():.0f} MB"
            )
        finally:
            feeder.stopping.set()
            feeder.join(2)
            server.stop()
            branch.stop()
    if args.check and not ok:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
