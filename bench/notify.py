"""Notification benchmark: the durable outbox's throughput, and read-to-PDA latency under load.

    python bench/notify.py            # measure and print; always exits 0
    python bench/notify.py --check    # exit 1 when a target is missed

Everything runs on loopback; zeroconf is pinned to 127.0.0.1.

Phases:

1. outbox   The real Outbox, OutboxWriter and NotifierRunner with a notifier that only counts:
            notifications are put in batches of 64 (as the pipeline hands them over), each stored in
            the outbox before it is dispatched, "delivered", and its result written back.  The clock
            stops when every result is in the file.  Target: at least 2,000 notifications/s.
2. pda      A branch started for real (sqlite store, idle simulated reader, ``pda`` notifier on
            127.0.0.1) and a real PDA agent process discovered by zeroconf.  A feeder thread submits
            1,000 reads/s (cards present in the door zone) and a new VIP card every 50 ms.  Latency =
            the moment the hub has the agent's HTTP 200 for the push (the agent answers once the
            arrival is on its screen) minus the read that completed the arrival, both on the branch
            clock: an upper bound of read-to-receipt.  Target: p99 of 25 ms or less.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from load import NEW_EVERY, Feeder, wait_until, write_seed  # bench/load.py, beside this script
from machine import cpu_model, peak_rss_mb  # bench/machine.py, beside this script

import vipsense
from vipsense.api import Notifier
from vipsense.branch import Branch
from vipsense.clock import Clock
from vipsense.config.profile import load_profile
from vipsense.devices import NotifierRunner
from vipsense.model import (
    Arrival,
    Card,
    Customer,
    DeliveryState,
    Notification,
    Role,
    Staff,
    Visit,
    VisitKind,
)
from vipsense.output import Output
from vipsense.pluginhost import load_host
from vipsense.stats import percentile
from vipsense.status import DeviceStatus, Stats
from vipsense.storage.outbox import Outbox, OutboxWriter

OUTBOX_TARGET = 2000.0  #: notifications/s
LATENCY_TARGET = 0.025  #: seconds, p99
BATCH = 64
PRESENT = 200  #: cards kept present by the background reads


# -- phase 1: the outbox -------------------------------------------------------------------------


class Counting(Notifier):
    def __init__(self) -> None:
        self.sent = 0

    def send(self, notification: Notification) -> None:
        self.sent += 1


def sample_visits(n: int, clock: Clock) -> list[Visit]:
    now, mono = clock.wall(), clock.mono()
    out = []
    for i in range(n):
        epc = f"E280116060000208{i:08X}"
        customer = Customer(
            customer_no=f"C{i:07d}",
            name="王小明",
            tier="gold",
            id_number="310115198002081033",
            mobile="13812345678",
            company="浦东贸易有限公司",
            usual_business="外汇结算",
            client_manager="li.mei",
        )
        card = Card(epc=epc, customer_no=customer.customer_no)
        arrival = Arrival(epc, "door", 1, mono - 0.2, mono, 3, -52.0, None)
        out.append(
            Visit(
                f"visit-{i}",
                "sh",
                VisitKind.GREETED,
                arrival,
                now,
                card,
                customer,
                tier="gold",
                store_id="local",
            )
        )
    return out


def phase_outbox(tmp: Path, total: int) -> dict[str, Any]:
    clock = Clock()
    outbox = Outbox(tmp / "outbox.sqlite3")
    notifier = Counting()
    runner = NotifierRunner(
        "pda", notifier, clock, DeviceStatus("notifier", "counting"), outbox.result, Stats()
    )
    writer = OutboxWriter(outbox, runner.put, Stats())
    staff = [Staff("zhang.wei", "张伟", Role.LOBBY_MANAGER), Staff("li.mei", "李梅", Role.CLIENT_MANAGER)]
    visits = sample_visits(total // 2, clock)
    ttl = clock.wall() + 600
    notes = [
        Notification(f"{v.visit_id}:{p.id}", v, p, "pda", clock.wall(), ttl) for v in visits for p in staff
    ]
    runner.start()
    writer.start()
    t0 = time.perf_counter()
    for i in range(0, len(notes), BATCH):
        writer.put(notes[i : i + BATCH])
    budget = 60 + len(notes) / 500  # far beyond the target rate: only a hang takes this long
    wait_until(
        lambda: notifier.sent >= len(notes),
        budget,
        f"{len(notes):,} notifications to be delivered",
        lambda: f"{notifier.sent:,} delivered",
    )
    t_sent = time.perf_counter() - t0
    delivered = lambda: outbox.counts().get(("pda", "delivered"), 0)  # noqa: E731
    wait_until(
        lambda: delivered() >= len(notes),
        budget,
        f"{len(notes):,} delivery results in the outbox",
        lambda: f"{delivered():,} recorded",
    )
    t_all = time.perf_counter() - t0
    writer.stop(5)
    runner.close(1)
    outbox.close()
    size = (tmp / "outbox.sqlite3").stat().st_size
    return {"total": len(notes), "sent_s": t_sent, "all_s": t_all, "file_mb": size / 2**20}


# -- phase 2: read to PDA ------------------------------------------------------------------------


def write_profile(tmp: Path, cards: int, key: str) -> Path:
    write_seed(tmp, cards, extra=", client_manager: li.mei")
    (tmp / "secrets.yaml").write_text(f"branch_key: {key}\n")
    profile = tmp / "bench.yaml"
    profile.write_text(
        """\
branch: {id: sh-bench, name: Bench Branch}
readers:
  - {id: door, type: simulated, visitors: []}
stores:
  - {id: local, type: sqlite, seed: [seed.yaml]}
notifiers:
  - id: pda
    type: pda
    key: !secret branch_key
    interfaces: [127.0.0.1]
    retry: {first: 50ms, max: 200ms}
presence: {min_reads: 2, window: 1s, depart_after: 30s, reentry_suppress: 10m}
staff:
  - {id: zhang.wei, name: 张伟, role: lobby_manager}
  - {id: chen.jing, name: 陈静, role: branch_manager}
routing:
  - {event: arrival, to: lobby_manager, via: [pda]}
  - {event: rejected, to: branch_manager, via: [pda]}
  - {event: suspect, to: branch_manager, via: [pda]}
""",
        encoding="utf-8",
    )
    return profile


class Samples:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.latencies: list[float] = []
        self.failed = 0

    @vipsense.hookimpl
    def vipsense_delivery_result(self, notification: Notification, result: Any) -> None:
        if result.state is DeliveryState.DELIVERED:
            self.latencies.append(self.clock.mono() - notification.visit.arrival.arrived_mono)
        elif result.state is not DeliveryState.ACKNOWLEDGED:
            self.failed += 1


def start_agent(tmp: Path, key: str) -> Any:
    import subprocess

    env = {**os.environ, "VIPSENSE_PDA_KEY": key}
    cmd = [
        sys.executable,
        "-m",
        "vipsense.plugins.notifiers.pda.agent",
        "--name",
        "bench-pda",
        "--role",
        "lobby",
        "--staff-id",
        "zhang.wei",
        "--branch",
        "sh-bench",
        "--interface",
        "127.0.0.1",
        "--data-dir",
        str(tmp / "pda"),
    ]
    return subprocess.Popen(
        cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def phase_pda(tmp: Path, seconds: float, seed_cards: int | None = None) -> dict[str, Any]:
    key = os.urandom(16).hex()
    n_new = int(seconds / NEW_EVERY) + 10
    cards = max(PRESENT + n_new, seed_cards or 0)
    profile_path = write_profile(tmp, cards, key)
    host = load_host()
    branch = Branch(
        load_profile(profile_path, host, data_dir=tmp / "data"), host, output=Output(io.StringIO())
    )
    samples = Samples(branch.clock)
    host.add(samples, "bench-samples")
    agent = start_agent(tmp, key)
    branch.start()
    try:
        peers = lambda: branch.status.devices["pda"].snapshot()["details"].get("pdas", [])  # noqa: E731
        discovery = wait_until(
            lambda: any(p.get("state") != "gone" for p in _rows(peers())),
            15,
            "the PDA agent to be discovered by zeroconf",
            lambda: f"PDAs {_rows(peers())}",
        )
        opened = wait_until(
            lambda: branch.wait_stores_open(0.05),
            120,
            f"the SQLite store to open with its {cards:,}-card seed",
            lambda: branch.status.devices["local"].reason,
        )
        feeder = Feeder(branch, cards, PRESENT)
        feeder.warm()  # present, and greeted once before measuring
        wait_until(
            lambda: len(samples.latencies) >= PRESENT,
            30,
            f"the {PRESENT} warm-up arrivals on the PDA",
            lambda: f"{len(samples.latencies)} on the PDA, {samples.failed} failed attempts",
        )
        samples.latencies.clear()
        feeder.start()
        time.sleep(seconds)
        feeder.stopping.set()
        feeder.join()
        wanted = feeder.new - PRESENT
        deadline = time.monotonic() + 5
        while len(samples.latencies) < wanted and time.monotonic() < deadline:
            time.sleep(0.01)
        lat = list(samples.latencies)
        return {
            "discovery_s": discovery,
            "cards": cards,
            "open_s": opened,
            "reads_per_s": feeder.rate(),
            "arrivals": wanted,
            "received": len(lat),
            "failed": samples.failed,
            "p50": percentile(lat, 0.5) if lat else None,
            "p99": percentile(lat, 0.99) if lat else None,
            "max": max(lat) if lat else None,
        }
    finally:
        branch.stop()
        agent.terminate()
        agent.wait(5)


def _rows(table: Any) -> list[dict[str, Any]]:
    return list(table.values()) if isinstance(table, dict) else list(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--notifications", type=int, default=40_000, help="phase 1 size")
    ap.add_argument("--seconds", type=float, default=15.0, help="phase 2 length")
    ap.add_argument(
        "--seed-cards", type=int, help="cards in phase 2's seed (default: as many as the run needs)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )
    ok = True
    with tempfile.TemporaryDirectory(prefix="vipsense-bench-notify-") as name:
        tmp = Path(name)
        (tmp / "outbox").mkdir()
        r = phase_outbox(tmp / "outbox", args.notifications)
        rate = r["total"] / r["all_s"]
        good = rate >= OUTBOX_TARGET
        ok &= good
        print(
            f"outbox: {r['total']:,} notifications stored, delivered and recorded in {r['all_s']:.2f} s"
            f" = {rate:,.0f}/s (dispatched after {r['sent_s']:.2f} s; file {r['file_mb']:.1f} MB)"
            f"  target >= {OUTBOX_TARGET:,.0f}/s: {'ok' if good else 'MISSED'}"
        )
        (tmp / "pda").mkdir()
        p = phase_pda(tmp / "pda", args.seconds, args.seed_cards)
        good = p["p99"] is not None and p["p99"] <= LATENCY_TARGET and p["received"] == p["arrivals"]
        ok &= good
        print(
            f"pda: agent discovered in {p['discovery_s']:.2f} s; store with {p['cards']:,} cards open after"
            f" {p['open_s']:.2f} s more; background {p['reads_per_s']:,.0f} reads/s"
        )
        print(
            f"pda: {p['received']}/{p['arrivals']} arrivals on the PDA ({p['failed']} failed attempts);"
            f" read to PDA receipt p50 {p['p50'] * 1000:.1f} ms, p99 {p['p99'] * 1000:.1f} ms,"
            f" max {p['max'] * 1000:.1f} ms  target p99 <= {LATENCY_TARGET * 1000:.0f} ms:"
            f" {'ok' if good else 'MISSED'}"
        )
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
