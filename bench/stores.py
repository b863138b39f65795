"""Identity-store benchmark: bulk CSV import and random lookups at a bank's full scale.

    python bench/stores.py                     # 1,000,000 customers; measure and print; exits 0
    python bench/stores.py --check             # exit 1 when a target is missed
    python bench/stores.py --customers 100000  # a smaller run
    python bench/stores.py --tuned-reads       # lookups with a 64 MiB cache and 256 MiB mmap

Setup: a temporary directory with a deterministic customers CSV (fictional names, many of them
Chinese, 18-character ID numbers, 11-digit mobiles) and a matching cards CSV (one card per customer,
every 100th customer a second one, some with allowed branches and validity dates).

Each store benchmark is one entry of ``STORE_BENCHES`` returning rows of (name, value, target, ok);
the ``sqlite`` one times ``import_csv`` for both files (the customers import has a target), then opens a
``SqliteStore`` on the result and times ``find_card`` + ``find_customer`` pairs on random keys, on the
store's own connection, one pair at a time.

The ``ldap`` one starts a real slapd on 127.0.0.1 (tests/slapd.py; nothing else is contacted) with
``--ldap-entries`` fictional customers and their cards as LDIF written by the store's converter.  It
times the offline import (``slapadd``) and the online one (``ldapadd`` into a second, empty slapd,
every entry a synchronous write), then ``find_card`` + ``find_customer`` pairs through ``LdapStore``:
with the cache off, on first touch with the cache on, and cached.  It needs slapd, ldap-utils and
python-ldap, and is skipped with a note without them.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs
from machine import cpu_model, peak_rss_mb  # bench/machine.py, beside this script

from vipsense.api import PluginContext
from vipsense.clock import Clock
from vipsense.output import Output
from vipsense.plugins.stores import sqlite as sqlite_store
from vipsense.plugins.stores.sqlite import ImportResult, ProgressBar, SqliteSettings, SqliteStore, import_csv
from vipsense.stats import percentile

# -- targets ---------------------------------------------------------------------------------------

TARGET_IMPORT_SECONDS_PER_MILLION = 60.0  #: customers CSV import, at most (scaled to --customers)
TARGET_LOOKUP_P99_MS = 0.5  #: find_card + find_customer, at most
TARGET_LDAP_UNCACHED_P99_MS = 5.0  #: find_card + find_customer against slapd on loopback, at most
TARGET_LDAP_CACHED_P99_MS = 0.05  #: the same pair answered from the store's cache, at most
LDAP_ENTRIES = 10_000  #: customers (and as many cards) in the directory
LDAP_LOOKUPS = 20_000

# -- workload --------------------------------------------------------------------------------------

SURNAMES = ("王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "Wong", "Lee", "Chan", "O'Brien")
GIVEN = ("伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "洋", "Ada", "Bo", "Mei-Ling", "Zoë")
COMPANIES = ("", "", "华兴贸易有限公司", "Acme Holdings", "东方精密制造", "Harbour, Lane & Co")
BUSINESS = ("", "wealth management", "foreign exchange", "对公结算", "mortgage")
TIERS = ("standard", "gold", "platinum", "diamond")
BRANCHES = ("", "", "", "SZ001", "SZ001;SZ002", "GZ010")
EXTRA_CARD_EVERY = 100
LOOKUPS = 100_000
#: What --tuned-reads adds to ``SqliteStore.open()`` (sqlite.READ_PRAGMAS), to compare with the default.
TUNED_READ_PRAGMAS = ("PRAGMA cache_size=-65536", "PRAGMA mmap_size=268435456")

log = logging.getLogger("bench")


def customer_no(i: int) -> str:
    return f"C{i:09d}"


def epc(i: int) -> str:
    return f"E2801170{i:016X}"


def write_customers(path: Path, n: int, rng: random.Random) -> None:
    digits = "0123456789"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(sqlite_store.CUSTOMER_COLUMNS)
        for i in range(n):
            w.writerow(
                (
                    customer_no(i),
                    rng.choice(SURNAMES) + rng.choice(GIVEN),
                    rng.choice(COMPANIES),
                    "".join(rng.choices(digits, k=17)) + rng.choice("0123456789X"),
                    "1" + "".join(rng.choices(digits, k=10)),
                    rng.choice(BUSINESS),
                    TIERS[i % len(TIERS)],
                    f"cm-{i % 40}",
                )
            )


def write_cards(path: Path, n: int, rng: random.Random) -> int:
    """One card per customer plus one for every ``EXTRA_CARD_EVERY``-th; returns the card count."""
    cards = n + n // EXTRA_CARD_EVERY
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(sqlite_store.CARD_COLUMNS)
        for i in range(cards):
            dated = i % 7 == 0
            w.writerow(
                (
                    epc(i),
                    customer_no(i % n),
                    "",
                    "lost" if i % 997 == 0 else "active",
                    "",
                    "2024-01-01" if dated else "",
                    "2030-12-31" if dated else "",
                    rng.choice(BRANCHES),
                )
            )
    return cards


# -- measurements ----------------------------------------------------------------------------------


@attrs.define
class Config:
    customers: int
    lookups: int
    tuned_reads: bool
    tmp: Path
    ldap_entries: int = LDAP_ENTRIES
    ldap_lookups: int = LDAP_LOOKUPS
    ldap_online: bool = True


Row = tuple[str, str, str, bool | None]  #: (name, value, target, ok or None for information only)


def make_ctx(data_dir: Path) -> PluginContext:
    return PluginContext(
        branch_id="bench",
        branch_name="Bench",
        item_id="local",
        data_dir=data_dir,
        profile_dir=data_dir,
        clock=Clock(),
        output=Output(live=False),
        log=log,
    )


def timed_import(db: sqlite3.Connection, path: Path) -> tuple[ImportResult, float]:
    bar = ProgressBar(sys.stderr)
    t0 = time.perf_counter()
    try:
        result = import_csv(db, path, bar)
    finally:
        bar.close()
    return result, time.perf_counter() - t0


def bench_sqlite(cfg: Config, details: list[str]) -> list[Row]:
    n = cfg.customers
    rng = random.Random(20240601)
    customers_csv, cards_csv = cfg.tmp / "customers.csv", cfg.tmp / "cards.csv"
    t0 = time.perf_counter()
    write_customers(customers_csv, n, rng)
    n_cards = write_cards(cards_csv, n, rng)
    details.append(
        f"sqlite   : generated {n:,} customers ({customers_csv.stat().st_size / 2**20:.0f} MB) and"
        f" {n_cards:,} cards ({cards_csv.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t0:.1f} s"
    )

    db_path = cfg.tmp / "identity.sqlite3"
    store = SqliteStore(SqliteSettings(path=str(db_path)), make_ctx(cfg.tmp))
    store.open()  # the schema, as a branch would create it
    assert store.db is not None
    cust, cust_s = timed_import(store.db, customers_csv)
    cards, cards_s = timed_import(store.db, cards_csv)
    store.close()
    details.append(
        f"           customers import: {cust.rows:,} rows, {cust.upserted:,} upserted,"
        f" {cust.rejected} rejected, {cust.rows / cust_s:,.0f} rows/s"
    )
    details.append(
        f"           cards import: {cards.rows:,} rows, {cards.upserted:,} upserted,"
        f" {cards.rejected} rejected, {cards_s:.1f} s, {cards.rows / cards_s:,.0f} rows/s;"
        f" database {db_path.stat().st_size / 2**20:.0f} MB"
    )

    if cfg.tuned_reads:
        sqlite_store.READ_PRAGMAS = TUNED_READ_PRAGMAS
    store = SqliteStore(SqliteSettings(path=str(db_path)), make_ctx(cfg.tmp))
    store.open()
    keys = [epc(rng.randrange(n_cards)) for _ in range(cfg.lookups)]
    samples, misses = _pairs(store, keys)
    store.close()
    p50, p99 = percentile(samples, 0.50) * 1000, percentile(samples, 0.99) * 1000
    pragmas = (
        "tuned: " + ", ".join(TUNED_READ_PRAGMAS) if cfg.tuned_reads else "SQLite default cache, no mmap"
    )
    details.append(
        f"           lookups: {cfg.lookups:,} random card EPCs, {misses} missed;"
        f" max {samples[-1] * 1000:.3f} ms; {pragmas}"
    )

    target_s = TARGET_IMPORT_SECONDS_PER_MILLION * n / 1_000_000
    return [
        (
            f"import {n:,} customers (CSV)",
            f"{cust_s:.1f} s",
            f"<= {target_s:g} s",
            cust_s <= target_s and cust.rejected == 0,
        ),
        (f"import {n_cards:,} cards (CSV)", f"{cards_s:.1f} s", "", None),
        ("card + customer lookup p50", f"{p50:.3f} ms", "", None),
        (
            "card + customer lookup p99",
            f"{p99:.3f} ms",
            f"<= {TARGET_LOOKUP_P99_MS:g} ms",
            p99 <= TARGET_LOOKUP_P99_MS,
        ),
    ]


# -- LDAP ------------------------------------------------------------------------------------------


def _pairs(store, keys: list[str]) -> tuple[list[float], int]:
    """Time ``find_card`` then ``find_customer`` for each key; returns (sorted seconds, misses)."""
    samples: list[float] = []
    misses = 0
    clock = time.perf_counter
    find_card, find_customer = store.find_card, store.find_customer
    for key in keys:
        t = clock()
        card = find_card(key)
        customer = find_customer(card.customer_no) if card else None
        samples.append(clock() - t)
        misses += customer is None
    samples.sort()
    return samples, misses


def _vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of another process (slapd), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_ldap(cfg: Config, details: list[str]) -> list[Row]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/slapd.py
    try:
        import ldap  # noqa: F401  (python-ldap, the optional extra)

        from tests.slapd import (
            BASE_LDIF,
            CARDS,
            CUSTOMERS,
            SERVICE_DN,
            SERVICE_PW,
            Slapd,
            card_epc,
            missing_tools,
            population_ldif,
        )
    except ImportError as exc:
        details.append(f"ldap     : skipped ({exc}; pip install 'vipsense[ldap]')")
        return []
    if missing_tools():
        details.append(f"ldap     : skipped ({', '.join(missing_tools())} not installed)")
        return []
    from vipsense.api import Secret
    from vipsense.plugins.stores.ldap import make_store
    from vipsense.plugins.stores.ldap.settings import (
        CacheSettings,
        CardSettings,
        CustomerSettings,
        LdapSettings,
    )

    n = cfg.ldap_entries
    ldif = cfg.tmp / "directory.ldif"
    t0 = time.perf_counter()
    entries = population_ldif(ldif, n)
    details.append(
        f"ldap     : generated {n:,} customers and {n:,} cards as LDIF ({ldif.stat().st_size / 2**20:.0f} MB)"
        f" in {time.perf_counter() - t0:.1f} s"
    )
    rows: list[Row] = []
    server = Slapd(cfg.tmp / "slapd")
    offline_s = server.slapadd(ldif)
    rows.append((f"slapadd {entries:,} entries (offline)", f"{offline_s:.1f} s", "", None))
    details.append(f"           slapadd: {entries / offline_s:,.0f} entries/s")
    if cfg.ldap_online:
        online = Slapd(cfg.tmp / "slapd-online")
        online.slapadd(BASE_LDIF)
        online.start()
        try:
            body = ldif.read_text(encoding="utf-8").split("\n\n", BASE_LDIF.count("dn: "))[-1]
            online_s = online.ldapadd(body)
        finally:
            online.stop()
        added = entries - BASE_LDIF.count("dn: ")
        rows.append((f"ldapadd {added:,} entries (online)", f"{online_s:.1f} s", "", None))
        details.append(f"           ldapadd: {added / online_s:,.0f} entries/s, one synchronous write each")

    server.start()
    try:
        rng = random.Random(20240602)
        keys = [card_epc(rng.randrange(n)) for _ in range(cfg.ldap_lookups)]

        def store_with(cache: CacheSettings):
            settings = LdapSettings(
                uri=server.uri,
                bind_dn=SERVICE_DN,
                password=Secret(SERVICE_PW),
                customers=CustomerSettings(base=CUSTOMERS),
                cards=CardSettings(base=CARDS),
                cache=cache,
            )
            store = make_store(settings, make_ctx(cfg.tmp))
            store.open()
            return store

        off = store_with(CacheSettings(max_entries=0))
        cold, cold_miss = _pairs(off, keys)
        off.close()
        on = store_with(CacheSettings(max_entries=2 * n))
        first, _ = _pairs(on, list(dict.fromkeys(keys)))  # each key once: every lookup a miss
        cached, cached_miss = _pairs(on, keys)  # every key now cached
        on.close()
        slapd_mb = _vm_hwm_mb(server.proc.pid)
    finally:
        server.stop()
    peak = peak_rss_mb()

    def ms(samples: list[float], q: float) -> float:
        return percentile(samples, q) * 1000

    details.append(
        f"           lookups: {len(keys):,} random card EPCs, then the customer;"
        f" {cold_miss + cached_miss} missed; max cold {cold[-1] * 1000:.2f} ms,"
        f" max cached {cached[-1] * 1000:.3f} ms"
    )
    details.append(
        f"           first touch with the cache on ({len(first):,} distinct keys) p50 / p99:"
        f" {ms(first, 0.5):.3f} / {ms(first, 0.99):.3f} ms; slapd peak RSS {slapd_mb:.0f} MB"
    )
    p99_cold, p99_cached = ms(cold, 0.99), ms(cached, 0.99)
    return [
        *rows,
        ("ldap lookup, cache off, p50", f"{ms(cold, 0.5):.3f} ms", "", None),
        (
            "ldap lookup, cache off, p99",
            f"{p99_cold:.3f} ms",
            f"<= {TARGET_LDAP_UNCACHED_P99_MS:g} ms",
            p99_cold <= TARGET_LDAP_UNCACHED_P99_MS,
        ),
        ("ldap lookup, cached, p50", f"{ms(cached, 0.5):.4f} ms", "", None),
        (
            "ldap lookup, cached, p99",
            f"{p99_cached:.4f} ms",
            f"<= {TARGET_LDAP_CACHED_P99_MS:g} ms",
            p99_cached <= TARGET_LDAP_CACHED_P99_MS,
        ),
        ("peak RSS after the ldap bench", f"{peak:.1f} MB", "", None),
    ]


#: Store benchmarks in the order they run: (name, function).
STORE_BENCHES: list[tuple[str, Callable[[Config, list[str]], list[Row]]]] = [
    ("sqlite", bench_sqlite),
    ("ldap", bench_ldap),
]


# -- reporting -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--customers", type=int, default=1_000_000, help="customers in the CSV")
    ap.add_argument("--lookups", type=int, default=LOOKUPS, help="random card+customer lookups")
    ap.add_argument("--tuned-reads", action="store_true", help="lookups with a big cache and mmap")
    ap.add_argument("--only", choices=[name for name, _ in STORE_BENCHES], help="run one store bench")
    ap.add_argument("--ldap-entries", type=int, default=LDAP_ENTRIES, help="customers (and cards) in slapd")
    ap.add_argument("--ldap-lookups", type=int, default=LDAP_LOOKUPS, help="card+customer lookups per phase")
    ap.add_argument("--no-ldap-online", action="store_true", help="skip the (slow) online ldapadd import")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    rows: list[Row] = []
    details: list[str] = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vipsense-bench-stores-") as tmpname:
        cfg = Config(
            args.customers,
            args.lookups,
            args.tuned_reads,
            Path(tmpname),
            args.ldap_entries,
            args.ldap_lookups,
            not args.no_ldap_online,
        )
        for name, bench in STORE_BENCHES:
            if args.only in (None, name):
                rows += bench(cfg, details)
    peak = peak_rss_mb()
    rows.append(("peak RSS", f"{peak:.1f} MB", "", None))

    out = io.StringIO()
    print("vipsense identity-store benchmark", file=out)
    print(
        f"  machine  : {cpu_model()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()} ({platform.python_implementation()}),"
        f" SQLite {sqlite3.sqlite_version}",
        file=out,
    )
    print(file=out)
    missed = []
    for name, value, target, ok in rows:
        mark = "" if ok is None else ("PASS" if ok else "MISS")
        print(f"  {name:<36} {value:>12}   {target:<12} {mark}", file=out)
        if ok is False:
            missed.append(name)
    print("\ndetails", file=out)
    for line in details:
        print(f"  {line}", file=out)
    print(f"  total    : {time.perf_counter() - t_all:.1f} s", file=out)
    if missed:
        print(f"\nMISSED: {', '.join(missed)}", file=out)
    sys.stdout.write(out.getvalue())
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
