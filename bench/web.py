"""Branch web benchmark: the status page under load, and push latency to the console's live streams.

    python bench/web.py            # measure and print; always exits 0
    python bench/web.py --check    # exit 1 when a target is missed

Everything runs on loopback.  A branch is started for real (sqlite store seeded with a few thousand
cards, an idle simulated reader, a console notifier writing to memory) with its WebServer (waitress,
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
            completing read was judged).  Target: p99 of 100 ms or less, every client getting every
            arrival.  When the endpoint is missing (404) the phase says "not available".
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
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from load import NEW_EVERY, Feeder, percentile, write_seed  # bench/load.py, beside this script
from machine import cpu_model, peak_rss_mb  # bench/machine.py, beside this script

from vipsense.branch import Branch
from vipsense.config.profile import load_profile
from vipsense.model import Role
from vipsense.output import Output
from vipsense.pluginhost import load_host
from vipsense.web.server import WebServer

PRESENT = 1000  #: cards in the door zone
STATUS_RATE = 50  #: requests per second
STATUS_CLIENTS = 5
SSE_CLIENTS = 50
STATUS_TARGET = 50.0  #: ms, p99
SSE_TARGET = 100.0  #: ms, p99
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
web: {bind: 127.0.0.1, port: 0, threads: 80}
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
    """One console tab: a lobby manager's session holding /console/events open."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.session = Session(port, "zhang.wei")
        self.port = port
        self.latencies: list[float] = []
        self.visits: set[str] = set()
        self.status = 0
        self.open = threading.Event()
        self.stopping = threading.Event()
        self.measuring = False

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", "/console/events", headers={"Cookie": self.session.cookie})
        response = conn.getresponse()
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
                elif line.startswith(b"data: ") and name == "arrival" and self.measuring:
                    event = json.loads(line[6:])
                    self.latencies.append((received - float(event["arrived_unix"])) * 1000)
                    self.visits.add(event["visit_id"])
        except (OSError, ValueError):
            return
        finally:
            conn.close()


def phase_sse(port: int, seconds: float) -> dict[str, Any]:
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
    time.sleep(0.5)  # past the snapshot events
    for c in clients:
        c.measuring = True
    time.sleep(seconds)
    for c in clients:
        c.measuring = False
    time.sleep(0.3)
    for c in clients:
        c.stopping.set()
    lat = [x for c in clients for x in c.latencies]
    union = set().union(*(c.visits for c in clients))
    return {
        "available": True,
        "arrivals": len(union),
        "complete": sum(1 for c in clients if c.visits == union),
        "events": len(lat),
        "p50": percentile(lat, 0.5) if lat else None,
        "p99": percentile(lat, 0.99) if lat else None,
        "max": max(lat) if lat else None,
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
    server.start()
    return branch, server


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    print("vipsense web benchmark")
    print(
        f"  machine  : {cpu_model()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()} ({platform.python_implementation()}),"
        f" SQLite {sqlite3.sqlite_version}"
    )
    cards = PRESENT + int((3 * args.seconds + 10) / NEW_EVERY)
    ok = True
    with tempfile.TemporaryDirectory(prefix="vipsense-bench-web-") as name:
        branch, server = start(Path(name), cards)
        feeder = Feeder(branch, cards, PRESENT)
        try:
            feeder.warm()
            feeder.start()
            time.sleep(1.0)
            for path in ("/status", "/api/status"):
                r = phase_status(server.bound_port, path, args.seconds)
                good = r["p99"] <= STATUS_TARGET and r["failures"] == 0
                ok &= good
                print(
                    f"  {path:<12}: {r['requests']} requests at {r['rate']:.0f}/s, p50 {r['p50']:.1f} ms,"
                    f" p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms, {r['failures']} failed"
                    f"  target p99 <= {STATUS_TARGET:g} ms: {'ok' if good else 'MISSED'}"
                )
            s = phase_sse(server.bound_port, args.seconds)
            if not s["available"]:
                ok = False
                print(f"  sse         : not available ({s['why']})")
            else:
                good = s["p99"] is not None and s["p99"] <= SSE_TARGET and s["complete"] == SSE_CLIENTS
                ok &= good
                print(
                    f"  sse         : {SSE_CLIENTS} clients, {s['arrivals']} arrivals, {s['events']} events"
                    f" received ({s['complete']}/{SSE_CLIENTS} clients got every arrival), p50"
                    f" {fmt(s['p50'])} ms, p99 {fmt(s['p99'])} ms, max {fmt(s['max'])} ms"
                    f"  target p99 <= {SSE_TARGET:g} ms: {'ok' if good else 'MISSED'}"
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
