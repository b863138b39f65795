"""Pipeline benchmark: synthetic reads straight into the real arrival pipeline.

    python bench/pipeline.py            # measure and print; always exits 0
    python bench/pipeline.py --check    # exit 1 when a target is missed
    python bench/pipeline.py --profile arrivals   # also cProfile one phase (hot or arrivals)

Setup: a temporary directory holding an SQLite identity store with 100,000 customers and 101,000
active cards (the schema comes from ``SqliteStore.open()``), a profile with one ``sqlite`` store, an
idle ``simulated`` reader and a ``null`` notifier that this script registers as a plugin.  Nothing
touches the network.

Phases (each uses the real Pipeline, Presence, StoreRunner, VisitLog and NotifierRunner):

1. hot      1,000 cards are made present, then duplicate reads of them go through
            ``pipeline.process`` in batches of ``BATCH`` on the main thread: reads/s through
            presence.
2. arrivals Distinct new cards, ``min_reads`` reads each (plus a few duplicate reads per batch so
            the 1,000 cards stay present), end to end: card and customer lookups through the
            StoreRunner, the visit-log commit, routing and the null notifier's ``send`` on the
            notifier thread.  The clock stops once the notifier has been called for every arrival.
3. latency  A second branch started with ``Branch.start()`` (pipeline thread running); a feeder
            thread submits 2,000 reads/s for a few seconds, 1,000 cards present and a new card
            arriving every 20 reads.  Latency = null notifier ``send`` time minus the time of the
            read that completed the arrival, both on the branch clock.

Phases 1 and 2 drive ``pipeline.process`` themselves, ticking presence as ``Pipeline.run`` does;
read objects are built before each timed chunk, so their creation cost is reported separately.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
from machine import cpu_model, peak_rss_mb  # bench/machine.py, beside this script

import vipsense
from vipsense.api import Notifier, PluginContext
from vipsense.branch import Branch
from vipsense.clock import Clock
from vipsense.config.profile import load_profile
from vipsense.devices import NotifierRunner
from vipsense.model import Notification, TagRead
from vipsense.output import Output
from vipsense.pipeline.arrivals import BATCH, TICK_SECONDS
from vipsense.pluginhost import PluginHost, load_host
from vipsense.plugins.stores.sqlite import SqliteSettings, SqliteStore
from vipsense.stats import percentile

# -- targets ---------------------------------------------------------------------------------------

TARGET_HOT_READS = 100_000.0  #: reads/s, at least
TARGET_ARRIVALS = 2_000.0  #: arrivals/s, at least
TARGET_P99_MS = 5.0  #: ms, at most
TARGET_RSS_MB = 80.0  #: MB, at most

# -- workload --------------------------------------------------------------------------------------

CUSTOMERS = 100_000
EXTRA_CARDS = 1_000  #: every 100th customer has a second card: 101,000 cards in all
PRESENT = 1_000  #: cards standing in the door zone
READER = "door"
TIERS = ("standard", "gold", "platinum", "diamond")
HOT_CHUNK = 16 * BATCH  #: duplicate reads built ahead of each timed chunk
ARRIVALS_PER_BATCH = 448  #: new cards per batch of BATCH reads in phase 2 ...
DUPS_PER_BATCH = BATCH - 2 * ARRIVALS_PER_BATCH  #: ... the rest are duplicates of present cards
ARRIVAL_CHUNK_BATCHES = 4  #: batches built ahead of each timed chunk in phase 2
PACED_RATE = 2_000.0  #: reads/s in phase 3
NEW_CARD_EVERY = 20  #: phase 3: a new card's first read every this many reads (100 arrivals/s)
SECOND_READ_AFTER = 100  #: phase 3: its second read about this many reads later (50 ms)
MIN_READS = 2
EPS = 1e-7  #: seconds between synthetic timestamps built ahead of time

log = logging.getLogger("bench")


def epc_bytes(i: int) -> bytes:
    """Card ``i``'s EPC as a reader reports it: 12 bytes (24 upper-case hex chars as text)."""
    return bytes.fromhex(f"E2801160{i:016X}")


def epc_text(i: int) -> str:
    return epc_bytes(i).hex().upper()


# -- the null notifier, registered by this script as a plugin --------------------------------------


@attrs.frozen
class NullSettings:
    pass


class NullNotifier(Notifier):
    """Counts calls and records (arrived_mono, latency) at the moment ``send`` is called."""

    def __init__(self, settings: NullSettings, ctx: PluginContext) -> None:
        self.mono = ctx.clock.mono
        self.sent = 0
        self.samples: list[tuple[float, float]] = []
        self.record = False
        self._target = -1
        self.reached = threading.Event()

    def expect(self, total: int) -> None:
        """Set :attr:`reached` once ``send`` has been called ``total`` times in all."""
        self.reached.clear()
        self._target = total
        if self.sent >= total:
            self.reached.set()

    def send(self, notification: Notification) -> None:
        if self.record:
            arrived = notification.visit.arrival.arrived_mono
            self.samples.append((arrived, self.mono() - arrived))
        self.sent += 1
        if self.sent == self._target:
            self.reached.set()


class NullPlugin:
    @vipsense.hookimpl
    def vipsense_register_notifier_types(self, register: Any) -> None:
        register("null", NullSettings, NullNotifier, summary="discards notifications (benchmark)")


# -- setup -----------------------------------------------------------------------------------------


def build_identity_db(path: Path) -> float:
    """Create the schema through ``SqliteStore.open()``, then bulk-insert; returns seconds taken."""
    t0 = time.perf_counter()
    ctx = PluginContext(
        branch_id="bench",
        branch_name="Bench",
        item_id="local",
        data_dir=path.parent,
        profile_dir=path.parent,
        clock=Clock(),
        output=Output(live=False),
        log=log,
    )
    store = SqliteStore(SqliteSettings(path=str(path)), ctx)
    store.open()
    db = store.db
    assert db is not None
    with db:
        db.executemany(
            "INSERT INTO customers (customer_no, name, tier, client_manager) VALUES (?, ?, ?, ?)",
            ((f"C{i:07d}", f"Customer {i}", TIERS[i % len(TIERS)], f"cm-{i % 40}") for i in range(CUSTOMERS)),
        )
        db.executemany(
            "INSERT INTO cards (epc, customer_no, status) VALUES (?, ?, 'active')",
            ((epc_text(i), f"C{i % CUSTOMERS:07d}") for i in range(CUSTOMERS + EXTRA_CARDS)),
        )
    store.close()
    return time.perf_counter() - t0


def write_profile(tmp: Path, db_path: Path) -> Path:
    q = json.dumps  # quote strings: a bare `null` would be YAML's null
    text = f"""\
branch: {{id: bench, name: Bench Branch}}
readers:
  - {{id: {READER}, type: simulated, visitors: []}}
stores:
  - {{id: local, type: sqlite, path: {q(str(db_path))}, timeout: 500ms}}
notifiers:
  - {{id: "null", type: "null"}}
staff:
  - {{id: lobby, name: Lobby Manager, role: lobby_manager}}
  - {{id: boss, name: Branch Manager, role: branch_manager}}
routing:
  - {{event: arrival, to: lobby_manager, via: ["null"]}}
  - {{event: rejected, reasons: [lost, revoked], to: branch_manager, via: ["null"]}}
  - {{event: suspect, to: branch_manager, via: ["null"]}}
presence:
  min_reads: {MIN_READS}
  window: 1s
  min_rssi: -70
  reentry_suppress: 10m
  depart_after: 3s
notification_ttl: 10m
"""
    path = tmp / "bench.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def make_branch(host: PluginHost, profile_path: Path, data_dir: Path) -> Branch:
    profile = load_profile(profile_path, host, data_dir=data_dir)
    return Branch(profile, host, output=Output(live=False))


def null_notifier(branch: Branch) -> NullNotifier:
    runner: NotifierRunner = branch.notifiers["null"]
    assert isinstance(runner.notifier, NullNotifier)
    return runner.notifier


def start_devices(branch: Branch) -> None:
    """What ``Branch.start`` does, minus the pipeline and reader threads: the main thread drives the
    pipeline itself in phases 1 and 2."""
    branch.pipeline.restore()
    for store in branch.stores:
        store.open()
    wait_open(branch)
    for notifier in branch.notifiers.values():
        notifier.start()


def wait_open(branch: Branch, timeout: float = 120.0) -> None:
    """Measure a steady branch: arrivals before its stores open are held (correctly), not timed."""
    if not branch.wait_stores_open(timeout):
        states = {s.store_id: s.status.reason for s in branch.stores}
        raise SystemExit(f"bench: gave up after {timeout:g} s waiting for the stores to open; got {states}")


# -- synthetic reads -------------------------------------------------------------------------------


class Stamps:
    """Increasing branch-clock timestamps for reads built ahead of time: each chunk starts at the
    branch clock's present (or just after the previous chunk) and steps by ``EPS``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.last = clock.mono()

    def chunk(self, n: int) -> Iterator[float]:
        start = max(self.clock.mono(), self.last + EPS)
        self.last = start + (n - 1) * EPS
        return (start + k * EPS for k in range(n))


def make_read(raw: bytes, seen: float, rng: random.Random) -> TagRead:
    """A read as a driver would build it: the EPC decoded afresh, so its hash is not cached."""
    return TagRead(
        reader_id=READER,
        antenna=1 + (raw[-1] & 1),
        epc=raw.hex().upper(),
        rssi=round(rng.uniform(-65.0, -45.0), 1),
        seen_mono=seen,
    )


def build(raws: list[bytes], stamps: Stamps, rng: random.Random) -> tuple[list[TagRead], float]:
    """TagReads for ``raws`` in order; returns them and the seconds spent building them."""
    t0 = time.perf_counter()
    seen = stamps.chunk(len(raws))
    reads = [make_read(raw, at, rng) for raw, at in zip(raws, seen, strict=True)]
    return reads, time.perf_counter() - t0


def batches(items: list[Any], size: int = BATCH) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Driver:
    """Feeds batches to ``pipeline.process`` and ticks presence the way ``Pipeline.run`` does."""

    def __init__(self, branch: Branch) -> None:
        self.pipeline = branch.pipeline
        self.last_tick = time.monotonic()
        self.ticks = 0

    def feed(self, batch_list: list[list[TagRead]]) -> None:
        process, tick = self.pipeline.process, self.pipeline.tick
        for batch in batch_list:
            process(batch)
            now = time.monotonic()
            if now - self.last_tick >= TICK_SECONDS:
                tick()
                self.last_tick = now
                self.ticks += 1


def wait_sent(notifier: NullNotifier, total: int, timeout: float) -> bool:
    notifier.expect(total)
    return notifier.reached.wait(timeout)


# -- phases ----------------------------------------------------------------------------------------


@attrs.define
class Results:
    hot_reads_per_s: float = 0.0
    hot_reads: int = 0
    hot_build_us: float = 0.0
    arrivals_per_s: float = 0.0
    arrivals: int = 0
    arrivals_complete: bool = True
    arrival_build_us: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    latency_samples: int = 0
    latency_expected: int = 0
    status_p50_ms: float | None = None
    status_p99_ms: float | None = None
    paced_rate: float = 0.0
    warmup_p99_ms: float | None = None
    notes: list[str] = attrs.Factory(list)


def make_present(
    branch: Branch, driver: Driver, cards: list[int], stamps: Stamps, rng: random.Random
) -> None:
    """``min_reads`` reads for each card, then wait until each arrival reached the notifier."""
    notifier = null_notifier(branch)
    before = notifier.sent
    raws = [epc_bytes(c) for c in cards for _ in range(MIN_READS)]
    reads, _ = build(raws, stamps, rng)
    driver.feed(batches(reads))
    if not wait_sent(notifier, before + len(cards), 30.0):
        got = notifier.sent - before
        raise SystemExit(f"only {got} of {len(cards)} warm-up arrivals were notified")


def phase_hot(
    branch: Branch, driver: Driver, present: list[int], stamps: Stamps, total: int, res: Results
) -> None:
    rng = random.Random(2)
    raws = [epc_bytes(c) for c in present]
    counters = branch.status.counters
    arrivals_before = counters["arrivals"]
    elapsed = built = 0.0
    done = 0
    while done < total:
        n = min(HOT_CHUNK, total - done)
        reads, b = build(rng.choices(raws, k=n), stamps, rng)
        built += b
        chunk = batches(reads)
        t0 = time.perf_counter()
        driver.feed(chunk)
        elapsed += time.perf_counter() - t0
        done += n
        del reads, chunk
    if counters["arrivals"] != arrivals_before:
        extra = counters["arrivals"] - arrivals_before
        res.notes.append(f"hot phase made {extra} unexpected arrivals")
    res.hot_reads = done
    res.hot_reads_per_s = done / elapsed
    res.hot_build_us = built / done * 1e6


def phase_arrivals(
    branch: Branch,
    driver: Driver,
    present: list[int],
    new_cards: list[int],
    stamps: Stamps,
    res: Results,
) -> None:
    rng = random.Random(3)
    notifier = null_notifier(branch)
    present_raws = [epc_bytes(c) for c in present]
    per_chunk = ARRIVALS_PER_BATCH * ARRIVAL_CHUNK_BATCHES
    elapsed = built = 0.0
    done = cycle = 0
    while done < len(new_cards):
        cards = new_cards[done : done + per_chunk]
        raws: list[bytes] = []
        for start in range(0, len(cards), ARRIVALS_PER_BATCH):
            group = cards[start : start + ARRIVALS_PER_BATCH]
            # The present cards in turn, spread through the batch: each is read every 8 batches.
            dups = [present_raws[(cycle + k) % len(present_raws)] for k in range(DUPS_PER_BATCH)]
            cycle += DUPS_PER_BATCH
            every = max(1, len(group) // DUPS_PER_BATCH)
            for k, card in enumerate(group):
                raws += [epc_bytes(card)] * MIN_READS
                if k % every == every - 1 and dups:
                    raws.append(dups.pop())
            raws += dups
        reads, b = build(raws, stamps, rng)
        built += b
        chunk = batches(reads)
        target = notifier.sent + len(cards)
        t0 = time.perf_counter()
        driver.feed(chunk)
        ok = wait_sent(notifier, target, 30.0)
        elapsed += time.perf_counter() - t0
        done += len(cards)
        if not ok:
            res.arrivals_complete = False
            res.notes.append(f"arrivals: notifier got {notifier.sent} of {target} calls in 30 s")
            break
    res.arrivals = done
    res.arrivals_per_s = done / elapsed
    res.arrival_build_us = built / max(1, done * MIN_READS) * 1e6


def phase_latency(
    host: PluginHost,
    profile_path: Path,
    data_dir: Path,
    present: list[int],
    new_cards: list[int],
    seconds: float,
    res: Results,
) -> Branch:
    branch = make_branch(host, profile_path, data_dir)
    notifier = null_notifier(branch)
    notifier.record = True
    clock = branch.clock
    rng = random.Random(4)

    # The read sequence: warm-up (every present card arrives), then the measured mix.
    warm = [epc_bytes(c) for c in present for _ in range(MIN_READS)]
    n = int(seconds * PACED_RATE)
    seq: list[bytes | None] = [None] * n
    # New cards start after a quarter second, once the warm-up burst has been handled.
    firsts = range(int(0.25 * PACED_RATE), n - 2 * SECOND_READ_AFTER, NEW_CARD_EVERY)
    reserved = set(firsts)
    arriving = 0
    for slot, card in zip(firsts, new_cards, strict=False):
        raw = epc_bytes(card)
        seq[slot] = raw
        second = slot + SECOND_READ_AFTER
        while second in reserved or seq[second] is not None:
            second += 1
        seq[second] = raw
        arriving += 1
    present_raws = [epc_bytes(c) for c in present]
    cycle = 0
    for i in range(n):
        if seq[i] is None:
            seq[i] = present_raws[cycle % len(present_raws)]
            cycle += 1
    sequence = warm + [raw for raw in seq if raw is not None]
    measure_from = [0.0]
    submitted = [0, 0.0]

    def feeder() -> None:
        submit = branch.pipeline.submit
        last = clock.mono()
        t_start = time.perf_counter()
        i = 0
        total = len(sequence)
        while i < total and not branch.stopping:
            due = min(total, int((time.perf_counter() - t_start) * PACED_RATE) + 1)
            while i < due:
                if i == len(warm):
                    measure_from[0] = clock.mono()
                raw = sequence[i]
                seen = clock.mono()
                last = seen = seen if seen > last else last + 1e-9
                submit(
                    TagRead(
                        reader_id=READER,
                        antenna=1 + (raw[-1] & 1),
                        epc=raw.hex().upper(),
                        rssi=round(rng.uniform(-65.0, -45.0), 1),
                        seen_mono=seen,
                    )
                )
                i += 1
            time.sleep(0.001)
        submitted[0] = i
        submitted[1] = time.perf_counter() - t_start

    branch.start()
    wait_open(branch)
    thread = threading.Thread(target=feeder, name="bench-feeder", daemon=True)
    thread.start()
    thread.join(len(sequence) / PACED_RATE + 30.0)
    expected = len(present) + arriving
    if not wait_sent(notifier, expected, 5.0):
        res.notes.append(f"latency: notifier called {notifier.sent} of {expected} times")
    stats = branch.status.devices["null"].stats
    p50, p99 = stats.percentiles()
    res.status_p50_ms = None if p50 is None else p50 * 1000
    res.status_p99_ms = None if p99 is None else p99 * 1000
    branch.stop()

    start = measure_from[0]
    measured = sorted(lat for at, lat in notifier.samples if at >= start)
    warmup = sorted(lat for at, lat in notifier.samples if at < start)
    res.latency_expected = arriving
    res.latency_samples = len(measured)
    res.paced_rate = submitted[0] / submitted[1] if submitted[1] else 0.0
    if measured:
        res.p50_ms = percentile(measured, 0.50) * 1000
        res.p99_ms = percentile(measured, 0.99) * 1000
        res.max_ms = measured[-1] * 1000
    if warmup:
        res.warmup_p99_ms = percentile(warmup, 0.99) * 1000
    return branch


# -- reporting -------------------------------------------------------------------------------------


def rss_now_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def profiled(name: str, wanted: str | None, fn: Callable[[], None]) -> None:
    if wanted != name:
        fn()
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
        for key in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key).print_stats(25)
            print(f"\n--- cProfile of phase {name!r} (main thread), by {key} ---")
            print(out.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--hot-reads", type=int, default=1_000_000, help="duplicate reads in phase 1")
    ap.add_argument("--arrivals", type=int, default=20_000, help="new-card arrivals in phase 2")
    ap.add_argument("--latency-seconds", type=float, default=5.0, help="measured length of phase 3")
    ap.add_argument("--profile", choices=("hot", "arrivals"), help="cProfile one phase")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    rss_start = rss_now_mb()
    res = Results()
    t_all = time.perf_counter()
    rng = random.Random(1)
    all_cards = list(range(CUSTOMERS + EXTRA_CARDS))
    rng.shuffle(all_cards)  # cards are looked up in random order, not in insertion order
    n_lat_new = int(args.latency_seconds * PACED_RATE) // NEW_CARD_EVERY + 1
    need = 2 * PRESENT + args.arrivals + n_lat_new
    if need > len(all_cards):
        raise SystemExit(f"not enough cards: {need} needed, {len(all_cards)} in the store")
    take = iter(all_cards)
    present1 = [next(take) for _ in range(PRESENT)]
    new1 = [next(take) for _ in range(args.arrivals)]
    present2 = [next(take) for _ in range(PRESENT)]
    new2 = [next(take) for _ in range(n_lat_new)]
    del all_cards, take

    with tempfile.TemporaryDirectory(prefix="vipsense-bench-") as tmpname:
        tmp = Path(tmpname)
        db_path = tmp / "identity.sqlite3"
        db_seconds = build_identity_db(db_path)
        profile_path = write_profile(tmp, db_path)
        host = load_host()
        host.add(NullPlugin(), "bench-null")
        rss_setup = rss_now_mb()

        # Phases 1 and 2: one branch whose pipeline the main thread drives.
        branch = make_branch(host, profile_path, tmp / "throughput")
        start_devices(branch)
        stamps = Stamps(branch.clock)
        driver = Driver(branch)
        try:
            make_present(branch, driver, present1, stamps, random.Random(5))
            profiled(
                "hot",
                args.profile,
                lambda: phase_hot(branch, driver, present1, stamps, args.hot_reads, res),
            )
            profiled(
                "arrivals",
                args.profile,
                lambda: phase_arrivals(branch, driver, present1, new1, stamps, res),
            )
            counters1 = dict(branch.status.counters)
            errors1 = errors_of(branch)
        finally:
            branch.stop()
        rss_after_throughput = rss_now_mb()

        # Phase 3: a second branch, started for real, with a paced feeder thread.
        branch2 = phase_latency(
            host, profile_path, tmp / "latency", present2, new2, args.latency_seconds, res
        )
        counters2 = dict(branch2.status.counters)
        errors2 = errors_of(branch2)

    peak = peak_rss_mb()
    total = time.perf_counter() - t_all

    print("vipsense pipeline benchmark")
    print(
        f"  machine  : {cpu_model()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()} ({platform.python_implementation()}),"
        f" SQLite {sqlite3.sqlite_version}"
    )
    print(
        f"  store    : {CUSTOMERS:,} customers, {CUSTOMERS + EXTRA_CARDS:,} cards"
        f" (built in {db_seconds:.1f} s); {PRESENT:,} cards present;"
        f" min_reads {MIN_READS}, window 1s"
    )
    print()
    rows = [
        (
            "duplicate reads through presence",
            f"{res.hot_reads_per_s:,.0f} reads/s",
            f">= {TARGET_HOT_READS:,.0f}/s",
            res.hot_reads_per_s >= TARGET_HOT_READS,
        ),
        (
            "arrivals end to end (durable)",
            f"{res.arrivals_per_s:,.0f} arrivals/s",
            f">= {TARGET_ARRIVALS:,.0f}/s",
            res.arrivals_complete and res.arrivals_per_s >= TARGET_ARRIVALS,
        ),
        ("read-to-notifier latency p50", fmt_ms(res.p50_ms), "", None),
        (
            "read-to-notifier latency p99",
            fmt_ms(res.p99_ms),
            f"<= {TARGET_P99_MS:g} ms",
            res.p99_ms is not None and res.p99_ms <= TARGET_P99_MS,
        ),
        ("peak RSS", f"{peak:.1f} MB", f"<= {TARGET_RSS_MB:g} MB", peak <= TARGET_RSS_MB),
    ]
    missed = []
    for name, value, target, ok in rows:
        mark = "" if ok is None else verdict(ok)
        print(f"  {name:<34} {value:>20}   {target:<12} {mark}")
        if ok is False:
            missed.append(name)
    print()
    print("details")
    print(
        f"  hot      : {res.hot_reads:,} reads in batches of {BATCH}; building a TagRead"
        f" (EPC decode included) costs {res.hot_build_us:.2f} µs, not timed"
    )
    print(
        f"  arrivals : {res.arrivals:,} new cards x {MIN_READS} reads"
        f" (+{DUPS_PER_BATCH} duplicate reads per {BATCH}-read batch);"
        f" building reads {res.arrival_build_us:.2f} µs each, not timed"
    )
    print(f"             counters {counters1}")
    print(
        f"  latency  : {res.latency_samples} of {res.latency_expected} arrivals sampled,"
        f" {res.paced_rate:,.0f} reads/s fed (a new card every {NEW_CARD_EVERY} reads);"
        f" max {fmt_ms(res.max_ms)}"
    )
    burst = PRESENT * MIN_READS / PACED_RATE
    print(
        f"             warm-up burst ({PRESENT:,} arrivals in {burst:g} s)"
        f" p99 {fmt_ms(res.warmup_p99_ms)}; BranchStatus notifier stats (last 2048 deliveries,"
        f" warm-up included) p50 {fmt_ms(res.status_p50_ms)}, p99 {fmt_ms(res.status_p99_ms)}"
    )
    print(f"             counters {counters2}")
    print(
        f"  memory   : RSS {rss_start:.1f} MB at start, {rss_setup:.1f} MB after setup,"
        f" {rss_after_throughput:.1f} MB after phases 1-2 (bench overhead included)"
    )
    for name, errs in (("phases 1-2", errors1), ("phase 3", errors2)):
        if errs:
            print(f"  errors in {name}: {errs}")
    for note in res.notes:
        print(f"  note     : {note}")
    print(f"  total    : {total:.1f} s")
    if missed:
        print(f"\nMISSED: {', '.join(missed)}")
    return 1 if (args.check and missed) else 0


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def errors_of(branch: Branch) -> dict[str, tuple[int, str]]:
    """Stages and devices that recorded errors: count and last message."""
    out = {k: (s.errors, s.last_error) for k, s in branch.status.stages.items() if s.errors}
    for k, d in branch.status.devices.items():
        if d.stats.errors:
            out[k] = (d.stats.errors, d.stats.last_error)
    return out


if __name__ == "__main__":
    sys.exit(main())
