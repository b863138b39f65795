"""Centre benchmark (issue 14, part 7): the ingest, a branch's backlog and the board, against a real
PostgreSQL this script starts itself.

    python bench/centre.py            # measure and print; always exits 0
    python bench/centre.py --check    # exit 1 when a target is missed
    python bench/centre.py --quick    # tiny sizes (tests/test_bench.py)

A throwaway PostgreSQL cluster is made in a temporary directory with the tests' helper
(``tests/postgres.py``: initdb, pg_ctl on 127.0.0.1 and a Unix socket; as ``postgres`` via runuser
when run as root), but **durable**: fsync, synchronous_commit and full_page_writes stay on (the tests
turn them off).  It is always stopped and removed.  The centre's ingest is the real one
(``vipsense.centreweb.ingest_api.create_ingest_app``: signature, size and branch checks, the JSON
checks, one transaction per batch) served by the branch web's own server class
(``vipsense.web.server.Server``, cheroot with the connection gate, 64 threads) on 127.0.0.1.  All
traffic is on loopback.

Phases:

1. ingest    ``--branches`` (1,000) branches, each with its own key (``BranchKeys.add``), its own
             source address (127.0.3.1, 127.0.3.2, ...) and its own keep-alive connection, post
             signed wire-format-1 batches of ``--batch`` visits and as many deliveries, with a
             heartbeat of six devices, for ``--seconds``.  The posting runs in a separate process
             (``--client``, ``--client-threads`` threads), so the client's Python does not share the
             server's interpreter lock.  Figure: visits/s sustained, accepted and applied (200);
             target 5,000/s or more.  Checked afterwards: the visits held equal those accepted.
             Then again with ``--processes`` (2) centre processes on the one database: this one and
             ingest-only ``--serve`` processes on other ports, the branches spread over them, each
             going on from the position the centre holds (one process is GIL-bound: see
             docs/centre.md, "Measured (part 7)").
   peer      The floor: the same rows (same batch size, one transaction per batch) inserted with a
             bare ``INSERT ... ON CONFLICT DO NOTHING`` through psycopg by 8 threads, no HTTP, no
             validation, into a database of their own.
2. backlog   One branch with ``--backlog`` (20,000) visits and as many deliveries not yet shipped,
             in a real visit log and outbox (the branch's own classes and change-feed triggers),
             drains through the branch's real shipper (``vipsense.uplink.shipper.Shipper``) and the
             ``https`` uplink type (plain http on loopback), batches of 500 (``centre.batch``'s
             default), until the shipper's cursor holds the last row of both streams.  Target: 30 s
             or less.
3. board     ``vipsense.centre.queries.board(database, now)`` over the branches of phase 1, each with
             its day of visits from phase 1 and its devices: p50/p99 over ``--board-runs`` runs.
             Target: p99 of 100 ms or less.  Peer: the naive board, one query per branch (today's
             counts and last arrival of each branch, one after another).
4. door      Read-to-PDA latency at a real branch, measured as ``bench/notify.py`` does (a real PDA
             agent found by zeroconf, 1,000 reads/s, a new VIP every 50 ms, ``--door-seconds``):
             first the branch without ``centre:`` (the peer), then the same branch reporting to this
             centre with ``--door-backlog`` (100,000) visits and as many deliveries waiting in its
             files, which its shipper drains meanwhile.  The centre then runs in a process of its own
             (``--serve``), as it would on its own machine, so its work does not share the
             branch's interpreter lock; it and its PostgreSQL run at nice 19, so they take only
             the cores the branch leaves (the two share this machine's 2 cores).  Target: p99
             of 25 ms or less (notify.py's), and at most 1.5 times the peer's in the same run.
             ``--no-door`` skips it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from machine import cpu_model, peak_rss_mb  # bench/machine.py, beside this script

from vipsense.signing import signed_headers

ROOT = Path(__file__).resolve().parent.parent
INGEST_TARGET = 5000.0  #: visits/s sustained
BACKLOG_TARGET = 30.0  #: s to drain
BOARD_TARGET = 100.0  #: ms, p99
DOOR_TARGET = 25.0  #: ms, p99 of read to PDA (bench/notify.py's target)
DOOR_RATIO = 1.5  #: the door's p99 while a backlog drains, at most this times the peer's (same run)
BACKLOG_BATCH = 500  #: visits (and deliveries) per batch while draining
ZONE = "Asia/Shanghai"
CENTRE_KEY = "bench-centre-data-key-0123456789abcdef"  #: seals the branch keys (a throwaway)
DEVICES = [
    {"kind": "reader", "id": "door", "state": "connected", "reason": None},
    {"kind": "store", "id": "local", "state": "ready", "reason": None},
    {"kind": "notifier", "id": "pda", "state": "ready", "reason": None},
    {"kind": "notifier", "id": "console", "state": "ready", "reason": None},
    {"kind": "pda", "id": "lobby-1", "state": "connected", "reason": None},
    {"kind": "sync", "id": "central", "state": "ready", "reason": None},
]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# -- the rows a branch sends ----------------------------------------------------------------------


class BranchFeed:
    """One simulated branch: its stream positions and the next batch's rows.  Visits fall inside
    today (the centre's zone), before now, so the board counts them."""

    def __init__(self, branch_id: str, key: str, seed: int) -> None:
        self.branch_id = branch_id
        self.key = key.encode("utf-8")
        self.rng = random.Random(seed)
        self.sent = {"visits": 0, "deliveries": 0}
        now = time.time()
        midnight = datetime.now(ZoneInfo(ZONE)).replace(hour=0, minute=0, second=0, microsecond=0)
        self.earliest = max(midnight.timestamp(), now - 8 * 3600)
        self.made = 0

    def rows(self, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rng, now = self.rng, time.time()
        visits, deliveries = [], []
        for i in range(count):
            self.made += 1
            visit_id = f"{self.branch_id}-{self.made:08d}"
            arrived = rng.uniform(self.earliest, now - 1)
            acked = arrived + rng.uniform(5, 60)
            kind = "greeted" if rng.random() < 0.97 else "rejected"
            visits.append(
                {"visit_id": visit_id, "seq": self.sent["visits"] + i + 1, "arrived_at": round(arrived, 3),
                 "kind": kind, "epc": f"E28011606000{rng.getrandbits(48):012X}",
                 "customer_no": f"C{rng.randrange(10**7):07d}", "tier": "gold",
                 "reason": None if kind == "greeted" else "lost", "reader_id": "door",
                 "read_count": rng.randint(2, 30), "peak_rssi": -55.5, "departed_at": None,
                 "acknowledged_at": round(acked, 3), "acknowledged_by": "lobby-1"}
            )  # fmt: skip
            deliveries.append(
                {"delivery_key": f"pda:{visit_id}:lobby-1", "seq": self.sent["deliveries"] + i + 1,
                 "created_at": round(arrived + 0.2, 3), "visit_id": visit_id, "notifier_id": "pda",
                 "recipient_id": "lobby-1", "state": "acknowledged", "attempts": 1,
                 "delivered_at": round(arrived + 0.5, 3), "acknowledged_at": round(acked, 3),
                 "finished_at": round(acked, 3), "escalated_from": None}
            )  # fmt: skip
        return visits, deliveries

    def batch(self, count: int) -> tuple[bytes, int]:
        """The next batch's body and its last visit seq (the body is not resent: positions move
        only on the centre's 200)."""
        visits, deliveries = self.rows(count)
        after = dict(self.sent)
        upto = {"visits": after["visits"] + len(visits), "deliveries": after["deliveries"] + len(deliveries)}
        body = {
            "format": 1,
            "branch_id": self.branch_id,
            "sent_at": time.time(),
            "streams": {
                "visits": {"after": after["visits"], "upto": upto["visits"], "rows": visits},
                "deliveries": {"after": after["deliveries"], "upto": upto["deliveries"], "rows": deliveries},
            },
            "heartbeat": {
                "at": time.time(),
                "devices": DEVICES,
                "audit_head": {"seq": self.made, "hash": f"{self.made:064x}"},
                "backlog": {"visits": 0, "deliveries": 0},
                "version": "bench",
            },
        }
        self.sent = upto
        return json.dumps(body, separators=(",", ":")).encode("utf-8"), upto["visits"]


def post(conn: http.client.HTTPConnection, feed: BranchFeed, body: bytes) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", "X-Vipsense-Branch": feed.branch_id}
    headers.update(signed_headers(feed.key, body))
    conn.request("POST", "/api/v1/ingest", body, headers)
    answer = conn.getresponse()
    data = answer.read()
    try:
        return answer.status, json.loads(data)
    except ValueError:
        return answer.status, {"raw": data[:200].decode("utf-8", "replace")}


def source_address(i: int) -> str:
    return f"127.0.{3 + i // 250}.{1 + i % 250}"


# -- the client process (phase 1) -----------------------------------------------------------------


def client_main(args: argparse.Namespace) -> int:
    """Post batches for every branch in ``--client`` 's key file until ``--seconds`` pass; print the
    outcome as JSON on stdout."""
    spec = json.loads(Path(args.client).read_text())
    host, ports = spec["host"], spec["ports"]
    branches = [BranchFeed(b, k, seed=i) for i, (b, k) in enumerate(spec["keys"].items())]
    for feed in branches:  # a second run goes on from what the centre holds, with new visit ids
        held = spec.get("start", {}).get(feed.branch_id, 0)
        feed.sent = {"visits": held, "deliveries": held}
        feed.made = held
    threads = max(1, min(args.client_threads, len(branches)))
    lock = threading.Lock()
    totals: Counter[str] = Counter()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    start = time.monotonic() + 0.5  # every thread connected first
    end = start + args.seconds

    def work(mine: list[tuple[int, BranchFeed]]) -> None:
        conns = {}
        own_lat: list[float] = []
        own: Counter[str] = Counter()
        own_status: Counter[int] = Counter()
        for i, feed in mine:
            conns[feed.branch_id] = http.client.HTTPConnection(  # branches spread over the processes
                host, ports[i % len(ports)], timeout=30, source_address=(source_address(i), 0)
            )
        while time.monotonic() < start:
            time.sleep(0.01)
        while time.monotonic() < end:
            for _, feed in mine:
                if time.monotonic() >= end:
                    break
                body, _last = feed.batch(args.batch)
                began = time.monotonic()
                try:
                    status, answer = post(conns[feed.branch_id], feed, body)
                except (OSError, http.client.HTTPException):
                    conns[feed.branch_id].close()  # closed while idle: the next post reconnects
                    own["reconnects"] += 1
                    feed.sent = {k: v - args.batch for k, v in feed.sent.items()}
                    continue
                own_lat.append(time.monotonic() - began)
                own_status[status] += 1
                if status == 200:
                    own["visits"] += args.batch
                    own["deliveries"] += args.batch
                    own["applied_visits"] += answer["applied"]["visits"]
                elif status == 409:
                    feed.sent = dict(answer["position"])
                else:
                    feed.sent = {k: v - args.batch for k, v in feed.sent.items()}
                    own["error:" + str(answer.get("code", status))] += 1
        for conn in conns.values():
            conn.close()
        with lock:
            totals.update(own)
            latencies.extend(own_lat)
            statuses.update(own_status)

    indexed = list(enumerate(branches))
    workers = [
        threading.Thread(target=work, args=(indexed[t::threads],), name=f"branches-{t}")
        for t in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = max(time.monotonic() - start, 1e-9)
    out = {
        "elapsed": elapsed,
        "totals": dict(totals),
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }
    print(json.dumps(out))
    return 0


# -- the centre side ------------------------------------------------------------------------------


def serve_main(args: argparse.Namespace) -> int:
    """The centre's ingest in a process of its own (the door phase: a centre is not on the branch's
    machine, so its work must not share the branch's interpreter); prints its port, serves until
    its stdin closes."""
    from vipsense.centre.database import PoolSettings, open_database
    from vipsense.centre.keys import BranchKeys
    from vipsense.centreweb.ingest_api import create_ingest_app
    from vipsense.storage.audit import AuditLog

    db = open_database(args.serve, PoolSettings(min_size=4, max_size=16))  # as this script's own
    audit = AuditLog(Path(args.audit))
    server, thread, port = start_server(create_ingest_app(db, audit, BranchKeys(db, CENTRE_KEY)))
    print(port, flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()
        thread.join(5)
        db.close()
        audit.close()
    return 0


class DurableCluster:
    """The tests' throwaway cluster (``tests/postgres.py``), started with durable settings."""

    def __init__(self) -> None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))  # tests/postgres.py: the cluster helper the tests use
        from tests import postgres

        bin_dir = postgres.binaries()
        if bin_dir is None:
            raise SystemExit("bench: no PostgreSQL binaries (initdb, pg_ctl): run tests/install.sh as root")
        cluster = postgres.Cluster(bin_dir)
        plain = cluster._run

        def durable(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
            argv = tuple(
                a.replace("-c fsync=off", "-c fsync=on")
                .replace("-c synchronous_commit=off", "-c synchronous_commit=on")
                .replace("-c full_page_writes=off", "-c full_page_writes=on")
                + " -c max_connections=200"
                if a.startswith("-k ")
                else a
                for a in argv
            )
            return plain(*argv, timeout=timeout)

        cluster._run = durable  # type: ignore[method-assign]
        self.cluster = cluster
        self.new_database = postgres.new_database

    def __enter__(self) -> DurableCluster:
        self.url = self.cluster.start()
        return self

    def postmaster(self) -> int | None:
        """The server's process id (its pid file's first line), or None."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        return None

    def __exit__(self, *exc: object) -> None:
        self.cluster.stop()


def settings_line(url: str) -> str:
    import psycopg

    params = dict(p.split("=", 1) for p in url.partition("?")[2].split("&"))
    with psycopg.connect(host=params["host"], port=params["port"], user="postgres", dbname="postgres") as c:
        version = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        shown = {
            name: c.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers")
        }
    return f"PostgreSQL {version.split()[0]} ({', '.join(f'{k}={v}' for k, v in shown.items())})"


def open_centre(url: str) -> Any:
    from vipsense.centre import migrations
    from vipsense.centre.database import PoolSettings, open_database

    db = open_database(url, PoolSettings(min_size=4, max_size=16))
    migrations.migrate(db)
    return db


def start_server(app: Any) -> tuple[Any, threading.Thread, int]:
    from vipsense.web.server import Server
    from vipsense.web.settings import Connections, WebSettings

    # a centre takes every branch's connection: max_total above the bench's 1,000 branches
    settings = WebSettings(connections=Connections(max_total=4000, max_per_source=64))
    from vipsense.centre.ingest import MAX_BODY

    server = Server(settings, "127.0.0.1", 0, app, None, body_limit=MAX_BODY)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="centre-web", daemon=True)
    thread.start()
    return server, thread, server.socket.getsockname()[1]


def phase_ingest(
    args: argparse.Namespace,
    db: Any,
    tmp: Path,
    port: int,
    keys: dict[str, str],
    out: dict,
    url: str = "",
    processes: int = 1,
) -> None:
    """Phase 1 with ``processes`` centre processes on the one database: this one's server, and
    ``processes - 1`` more (``--serve``), the branches spread over them."""
    from sqlalchemy import func, select

    from vipsense.centre import schema

    with db.begin() as conn:
        before = conn.execute(select(func.count()).select_from(schema.visits)).scalar_one()
        b = schema.branches.c
        start = dict(conn.execute(select(b.branch_id, b.visits_position)).all())
    extra: list[subprocess.Popen[str]] = []
    try:
        ports = [port]
        for n in range(processes - 1):
            extra.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--serve", url, "--audit", str(tmp / f"audit-{n}.sqlite3")],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                )
            )  # fmt: skip
            ports.append(int(extra[-1].stdout.readline() if extra[-1].stdout else "0"))
        spec = tmp / "client.json"
        spec.write_text(json.dumps({"host": "127.0.0.1", "ports": ports, "keys": keys, "start": start}))
        spec.chmod(0o600)
        argv = [sys.executable, __file__, "--client", str(spec), "--seconds", str(args.seconds),
                "--batch", str(args.batch), "--client-threads", str(args.client_threads)]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=args.seconds + 120, check=False)
    finally:
        for proc in extra:
            with contextlib.suppress(Exception):
                if proc.stdin:
                    proc.stdin.close()  # serve_main stops when its stdin closes
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if done.returncode != 0:
        raise SystemExit(f"bench: the client failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    with db.begin() as conn:
        held = conn.execute(select(func.count()).select_from(schema.visits)).scalar_one() - before
    totals = result["totals"]
    out["ingest" if processes == 1 else f"ingest{processes}"] = {
        "visits_per_s": totals.get("visits", 0) / result["elapsed"],
        "deliveries_per_s": totals.get("deliveries", 0) / result["elapsed"],
        "batches_per_s": int(result["statuses"].get("200", 0)) / result["elapsed"],
        "accepted": totals.get("visits", 0),
        "held": held,
        "statuses": result["statuses"],
        "errors": {k: v for k, v in totals.items() if k.startswith("error:") or k == "reconnects"},
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "elapsed": result["elapsed"],
    }


def phase_floor(args: argparse.Namespace, url: str, out: dict) -> None:
    """The same rows, bare: INSERT ... ON CONFLICT DO NOTHING through psycopg, 8 connections."""
    import psycopg

    from vipsense.centre import migrations
    from vipsense.centre.database import open_database

    db = open_database(url)
    migrations.migrate(db)
    db.close()
    params = dict(p.split("=", 1) for p in url.partition("?")[2].split("&"))
    dbname = url.partition("?")[0].rpartition("/")[2]
    insert_visit = (
        "INSERT INTO visits (branch_id, visit_id, arrived_at, kind, epc, customer_no, tier, reason,"
        " reader_id, departed_at, acknowledged_at, acknowledged_by, received_at, change_seq)"
        " VALUES (%s,%s,to_timestamp(%s),%s,%s,%s,%s,%s,%s,to_timestamp(%s),to_timestamp(%s),%s,now(),%s)"
        " ON CONFLICT DO NOTHING"
    )
    insert_delivery = (
        "INSERT INTO deliveries (branch_id, delivery_key, created_at, visit_id, notifier_id, recipient_id,"
        " state, attempts, delivered_at, acknowledged_at, finished_at, escalated_from, change_seq)"
        " VALUES (%s,%s,to_timestamp(%s),%s,%s,%s,%s,%s,to_timestamp(%s),to_timestamp(%s),"
        "to_timestamp(%s),%s,%s) ON CONFLICT DO NOTHING"
    )
    branches = [f"floor-{i:04d}" for i in range(args.branches)]
    with (
        psycopg.connect(host=params["host"], port=params["port"], user="postgres", dbname=dbname) as c,
        c.cursor() as cur,
    ):
        cur.executemany(
            "INSERT INTO branches (branch_id, name, timezone, created_at) VALUES (%s,%s,%s,now())",
            [(b, b, ZONE) for b in branches],
        )
    threads, lock, total = 8, threading.Lock(), Counter[str]()
    start = time.monotonic() + 0.3
    end = start + args.seconds

    def work(mine: list[str]) -> None:
        feeds = [BranchFeed(b, "k", seed=i) for i, b in enumerate(mine)]
        n = 0
        with psycopg.connect(host=params["host"], port=params["port"], user="postgres", dbname=dbname) as c:
            while time.monotonic() < start:
                time.sleep(0.01)
            while time.monotonic() < end:
                for feed in feeds:
                    if time.monotonic() >= end:
                        break
                    visits, deliveries = feed.rows(args.batch)
                    b = feed.branch_id
                    with c.transaction(), c.cursor() as cur:
                        cur.executemany(
                            insert_visit,
                            [(b, v["visit_id"], v["arrived_at"], v["kind"], v["epc"], v["customer_no"],
                              v["tier"], v["reason"], v["reader_id"], v["departed_at"], v["acknowledged_at"],
                              v["acknowledged_by"], v["seq"]) for v in visits],
                        )  # fmt: skip
                        cur.executemany(
                            insert_delivery,
                            [(b, d["delivery_key"], d["created_at"], d["visit_id"], d["notifier_id"],
                              d["recipient_id"], d["state"], d["attempts"], d["delivered_at"],
                              d["acknowledged_at"], d["finished_at"], d["escalated_from"], d["seq"])
                             for d in deliveries],
                        )  # fmt: skip
                    n += len(visits)
        with lock:
            total["visits"] += n

    workers = [threading.Thread(target=work, args=(branches[t::threads],)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out["floor"] = {"visits_per_s": total["visits"] / max(time.monotonic() - start, 1e-9)}


def branch_files(folder: Path, feed: BranchFeed, count: int) -> None:
    """A branch's visit log and outbox with ``count`` visits and as many deliveries not yet shipped:
    made by the branch's own classes (schema, migrations, the change feed's triggers), filled in one
    transaction each (the triggers number the rows, as the pipeline's writes do)."""
    from vipsense.storage.outbox import Outbox
    from vipsense.storage.visitlog import VisitLog

    visits, deliveries = feed.rows(count)
    log = VisitLog(folder / "visits.sqlite3")
    with log.db:
        log.db.executemany(
            "INSERT INTO visits (visit_id, branch_id, kind, epc, customer_no, tier, reason, reader_id,"
            " antenna, read_count, peak_rssi, arrived_at, acknowledged_at, acknowledged_by, resolved_at)"
            " VALUES (?,?,?,?,?,?,?,?,1,?,?,?,?,?,?)",
            [(v["visit_id"], feed.branch_id, v["kind"], v["epc"], v["customer_no"], v["tier"], v["reason"],
              v["reader_id"], v["read_count"], v["peak_rssi"], v["arrived_at"], v["acknowledged_at"],
              v["acknowledged_by"], v["arrived_at"]) for v in visits],
        )  # fmt: skip
    log.close()
    box = Outbox(folder / "outbox.sqlite3")
    with box.db:
        box.db.executemany(
            "INSERT INTO outbox (notifier_id, key, visit_id, recipient_id, state, arrived_at, created_at,"
            " expires_at, attempts, delivered_at, acknowledged_at, finished_at)"
            " VALUES ('pda',?,?,?,?,?,?,?,1,?,?,?)",
            [(f"{d['visit_id']}:lobby-1", d["visit_id"], d["recipient_id"], d["state"], d["created_at"],
              d["created_at"], d["created_at"] + 300, d["delivered_at"], d["acknowledged_at"],
              d["finished_at"]) for d in deliveries],
        )  # fmt: skip
    box.close()


def phase_backlog(args: argparse.Namespace, port: int, keys: Any, tmp: Path, out: dict) -> None:
    """One branch's backlog drained by the branch's real shipper (``vipsense.uplink``) through the
    ``https`` uplink type (plain http on loopback), batches of 500 (``centre.batch``'s default)."""
    import logging

    from vipsense.api import UplinkContext
    from vipsense.config.types import Duration, Secret
    from vipsense.pluginhost import Kind, load_host
    from vipsense.uplink.settings import CentreLink
    from vipsense.uplink.shipper import Shipper

    branch_id = "backlog-branch"
    key = keys.add(branch_id, "backlog", ZONE)
    folder = tmp / "branch"
    folder.mkdir()
    branch_files(folder, BranchFeed(branch_id, key, seed=99), args.backlog)
    url = f"http://127.0.0.1:{port}"
    link = CentreLink(url=url, key=Secret(key, "bench"), interval=Duration(5), batch=BACKLOG_BATCH)
    uplink = load_host().types[Kind.UPLINK]["https"]
    context = UplinkContext(url, 30.0, None, branch_id, logging.getLogger("vipsense.uplink.https"))
    transport = uplink.factory(uplink.settings(), context)

    def beat() -> dict[str, Any]:
        return {"at": time.time(), "devices": DEVICES, "audit_head": None}

    shipper = Shipper(link, transport, branch_id, folder, beat)
    want = {"visits": args.backlog, "deliveries": args.backlog}
    began = time.monotonic()
    shipper.start()
    try:
        deadline = began + max(120.0, 30 * BACKLOG_TARGET)
        while (state := shipper.state)["position"] != want:
            if time.monotonic() > deadline or state["state"] in ("refused", "unreachable"):
                raise SystemExit(
                    f"bench: the backlog did not drain: {state['state']} at {state['position']} of {want}:"
                    f" {state['reason'] or state['error']}"
                )
            time.sleep(0.01)
        drained = time.monotonic() - began
    finally:
        shipper.stop(5.0)
    out["backlog"] = {
        "seconds": drained,
        "visits": args.backlog,
        "visits_per_s": args.backlog / drained,
        "sent": dict(shipper.state["sent"]),
    }


def background(pid: int) -> None:
    """Process ``pid`` and its children (PostgreSQL's postmaster and its workers) to nice 19; the
    backends it starts later inherit it."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry.name))
    for found in pids:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, found, 19)


def phase_door(
    args: argparse.Namespace, url: str, keys: Any, tmp: Path, out: dict, pg_root: int | None = None
) -> None:
    """Read-to-PDA latency of a real branch (``bench/notify.py``'s pda phase: a real PDA agent,
    1,000 reads/s and a new VIP every 50 ms), first without ``centre:`` (the peer), then reporting to
    this centre with ``--door-backlog`` visits and as many deliveries waiting in its files, which its
    shipper drains while the door is measured."""
    import notify  # bench/notify.py, beside this script

    port = 0  # the centre process's, once started

    def run(name: str, backlog: int | None) -> dict[str, Any]:
        """``backlog`` None: the branch without ``centre:`` (the peer)."""
        folder = tmp / f"door-{name}"
        folder.mkdir()
        original = notify.write_profile
        # the PDA agent (bench/notify.py) serves the branch sh-bench: that is the branch reporting
        key = keys.add("sh-bench", "door", ZONE) if backlog is not None else ""

        def with_centre(where: Path, cards: int, pda_key: str) -> Path:
            profile = original(where, cards, pda_key)
            if backlog is None:
                return profile
            text = profile.read_text("utf-8")
            text += f"centre: {{url: 'http://127.0.0.1:{port}', key: !secret centre_key, interval: 1s}}\n"
            profile.write_text(text, "utf-8")
            with (where / "secrets.yaml").open("a", encoding="utf-8") as f:
                f.write(f"centre_key: {key}\n")
            return profile

        if backlog:
            (folder / "data").mkdir(mode=0o700)  # owner-only, as the branch keeps its data directory
            branch_files(folder / "data", BranchFeed("sh-bench", key, seed=7), backlog)
            for made in (folder / "data").iterdir():
                made.chmod(0o600)
        notify.write_profile = with_centre
        shipped: dict[str, Any] = {}
        started = notify.Branch.start

        def start(branch: Any) -> None:
            started(branch)
            shipped["shipper"] = branch.shipper

        notify.Branch.start = start  # type: ignore[method-assign]
        samples: list[int] = []  # the shipper's backlog (visits) every 0.2 s: was it still draining?
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                shipper = shipped.get("shipper")
                backlog = shipper.state.get("backlog") if shipper is not None else None
                if backlog:
                    samples.append(int(backlog["visits"]))

        sampler = threading.Thread(target=sample, name="door-sampler", daemon=True)
        sampler.start()
        try:
            result = notify.phase_pda(folder, args.door_seconds)
        finally:
            done.set()
            sampler.join(2)
            notify.write_profile = original
            notify.Branch.start = started  # type: ignore[method-assign]
        shipper = shipped.get("shipper")
        result["centre"] = dict(shipper.state) if shipper is not None else {}
        result["backlog_seen"] = (samples[0], samples[-1]) if samples else None
        return result

    idle = run("idle", None)
    # the centre is another machine: here it shares the branch's 2 cores, so it and its PostgreSQL
    # run at the lowest priority (nice 19) and take only what the branch leaves; the branch, its
    # shipper and the PDA agent keep their own, as in the peer's run
    if pg_root is not None:
        background(pg_root)
    centre = subprocess.Popen(
        [
            "nice",
            "-n",
            "19",
            sys.executable,
            __file__,
            "--serve",
            url,
            "--audit",
            str(tmp / "door-audit.sqlite3"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(centre.stdout.readline() if centre.stdout else "0")
        busy = run("backlog", args.door_backlog)
    finally:
        if centre.stdin:
            centre.stdin.close()
        try:
            centre.wait(15)
        except subprocess.TimeoutExpired:
            centre.kill()
            centre.wait()
    out["door"] = {"idle": idle, "backlog": busy}


def naive_board(db: Any, now: datetime) -> list[tuple[Any, ...]]:
    """The board the naive way: the branches, then per branch one query for today's figures."""
    from sqlalchemy import case, func, select

    from vipsense.centre import schema

    v, b = schema.visits, schema.branches
    rows = []
    with db.begin() as conn:
        branches = list(conn.execute(select(b.c.branch_id, b.c.name, b.c.timezone, b.c.last_heartbeat_at)))
        for br in branches:
            local = now.astimezone(ZoneInfo(br.timezone))
            start = local.replace(hour=0, minute=0, second=0, microsecond=0)
            found = conn.execute(
                select(
                    func.count(),
                    func.sum(case((v.c.kind == "greeted", 1), else_=0)),
                    func.sum(case((v.c.kind == "rejected", 1), else_=0)),
                    func.max(v.c.arrived_at),
                ).where(
                    v.c.branch_id == br.branch_id,
                    v.c.arrived_at >= start,
                    v.c.arrived_at < start + timedelta(days=1),
                )
            ).one()
            rows.append((br.branch_id, *found))
    return rows


def phase_board(args: argparse.Namespace, db: Any, out: dict) -> None:
    """The board's p50/p99 and its peer's.  The bench's own objects (the earlier phases' feeds, rows
    and threads: no part of a centre) are frozen out of the collector first (``gc.freeze``): else a
    full collection walking them, about 300 ms with 1.5 million objects, lands inside some boards
    and the p99 measures the bench's heap (docs/centre.md, "Measured (part 7)")."""
    import gc

    from vipsense.centre.queries import board

    gc.collect()
    gc.freeze()
    try:
        _board_runs(args, db, out, board)
    finally:
        gc.unfreeze()


def _board_runs(args: argparse.Namespace, db: Any, out: dict, board: Any) -> None:
    now = datetime.now(timezone.utc)
    shown = board(db, now)  # warm: plans and caches, as a board polled every few seconds has them
    counted = sum(r.arrivals_today for r in shown)
    times = []
    for _ in range(args.board_runs):
        t0 = time.perf_counter()
        board(db, datetime.now(timezone.utc))
        times.append(time.perf_counter() - t0)
    naive_board(db, now)
    naive = []
    for _ in range(max(3, args.board_runs // 10)):
        t0 = time.perf_counter()
        naive_board(db, datetime.now(timezone.utc))
        naive.append(time.perf_counter() - t0)
    from sqlalchemy import text as sql

    with db.begin() as conn:  # what a visit costs on disk, its indexes included (all partitions)
        size = {
            table: conn.execute(
                sql(
                    "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits"
                    f" WHERE inhparent = '{table}'::regclass"
                )
            ).scalar_one()
            / max(conn.execute(sql(f"SELECT count(*) FROM {table}")).scalar_one(), 1)
            for table in ("visits", "deliveries")
        }
    out["size"] = size
    out["board"] = {
        "branches": len(shown),
        "visits_today": counted,
        "p50_ms": percentile(times, 50) * 1000,
        "p99_ms": percentile(times, 99) * 1000,
        "naive_p50_ms": percentile(naive, 50) * 1000,
        "naive_p99_ms": percentile(naive, 99) * 1000,
        "runs": len(times),
        "naive_runs": len(naive),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--branches", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0, help="ingest (and floor) duration")
    parser.add_argument("--batch", type=int, default=25, help="visits (and deliveries) per branch batch")
    parser.add_argument("--client-threads", type=int, default=48)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--board-runs", type=int, default=50)
    parser.add_argument("--door-seconds", type=float, default=30.0, help="each door measurement")
    parser.add_argument("--door-backlog", type=int, default=100_000, help="visits waiting at the branch")
    parser.add_argument("--no-door", action="store_true", help="skip the door phase")
    parser.add_argument(
        "--processes", type=int, default=2, help="also measure the ingest with this many centre processes"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests/test_bench.py")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--audit", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main(args)
    if args.serve:
        return serve_main(args)
    if args.quick:
        args.branches, args.seconds, args.backlog, args.board_runs = 40, 2.0, 2000, 5
        args.door_seconds, args.door_backlog = 1.0, 5000
        args.client_threads = 8

    import logging

    logging.basicConfig(level=logging.WARNING)
    from vipsense.centre.keys import BranchKeys
    from vipsense.centreweb.ingest_api import create_ingest_app
    from vipsense.storage.audit import AuditLog

    t_all = time.perf_counter()
    load = os.getloadavg()  # the machine may be shared: said beside the figures
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vipsense-bench-centre-") as tmpname, DurableCluster() as pg:
        tmp = Path(tmpname)
        server_line = settings_line(pg.url)
        centre_url = pg.new_database(pg.url)
        db = open_centre(centre_url)
        audit = AuditLog(tmp / "audit.sqlite3")
        keys = BranchKeys(db, CENTRE_KEY)
        t0 = time.perf_counter()
        branch_keys = {
            f"br-{i:04d}": keys.add(f"br-{i:04d}", f"支行 {i:04d}", ZONE) for i in range(args.branches)
        }
        results["keys_s"] = time.perf_counter() - t0
        server, thread, port = start_server(create_ingest_app(db, audit, keys))
        try:
            phase_ingest(args, db, tmp, port, branch_keys, results)
            if args.processes > 1:
                phase_ingest(args, db, tmp, port, branch_keys, results, centre_url, args.processes)
            phase_backlog(args, port, keys, tmp, results)
            phase_board(args, db, results)
            if not args.no_door:
                phase_door(args, centre_url, keys, tmp, results, pg.postmaster())
        finally:
            server.stop()
            thread.join(5)
            db.close()
            audit.close()
        phase_floor(args, pg.new_database(pg.url), results)

    ing, floor, back, brd = results["ingest"], results["floor"], results["backlog"], results["board"]
    rows = [
        (f"ingest, {args.branches} branches, visits/s", f"{ing['visits_per_s']:,.0f}",
         f">= {INGEST_TARGET:,.0f}", ing["visits_per_s"] >= INGEST_TARGET),
        ("  peer: bare INSERT ON CONFLICT, visits/s", f"{floor['visits_per_s']:,.0f}", "(floor)", None),
        ("  ingest / floor", f"{ing['visits_per_s'] / max(floor['visits_per_s'], 1e-9):.2f}", "", None),
        ("  batch round trip p50 / p99", f"{ing['p50_ms']:.0f} / {ing['p99_ms']:.0f} ms", "", None),
    ]  # fmt: skip
    many = results.get(f"ingest{args.processes}")
    if many is not None:
        rows += [
            (f"ingest, {args.processes} centre processes, visits/s", f"{many['visits_per_s']:,.0f}",
             f">= {INGEST_TARGET:,.0f}", many["visits_per_s"] >= INGEST_TARGET),
            ("  batch round trip p50 / p99", f"{many['p50_ms']:.0f} / {many['p99_ms']:.0f} ms", "", None),
        ]  # fmt: skip
    rows += [
        (f"backlog of {args.backlog:,} visits drained", f"{back['seconds']:.1f} s",
         f"<= {BACKLOG_TARGET:.0f} s", back["seconds"] <= BACKLOG_TARGET),
        (f"board, {brd['branches']} branches, p50 / p99", f"{brd['p50_ms']:.1f} / {brd['p99_ms']:.1f} ms",
         f"p99 <= {BOARD_TARGET:.0f} ms", brd["p99_ms"] <= BOARD_TARGET),
        ("  peer: one query per branch, p50 / p99",
         f"{brd['naive_p50_ms']:.0f} / {brd['naive_p99_ms']:.0f} ms", "", None),
    ]  # fmt: skip
    door = results.get("door")
    if door is not None:
        idle, busy = door["idle"], door["backlog"]

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value * 1000:.1f}"

        rows.append(
            (f"door: read to PDA p50 / p99, backlog of {args.door_backlog:,} draining",
             f"{ms(busy['p50'])} / {ms(busy['p99'])} ms", f"p99 <= {DOOR_TARGET:.0f} ms",
             busy["p99"] is not None and busy["p99"] * 1000 <= DOOR_TARGET)
        )  # fmt: skip
        rows.append(
            (
                "  peer: the same branch, nothing to ship",
                f"{ms(idle['p50'])} / {ms(idle['p99'])} ms",
                "",
                None,
            )
        )
        if busy["p99"] is not None and idle["p99"]:
            ratio = busy["p99"] / idle["p99"]
            rows.append(("  door p99 draining / peer p99", f"{ratio:.2f}", "<= 1.5", ratio <= DOOR_RATIO))
    rows.append(("peak RSS (server side)", f"{peak_rss_mb():.1f} MB", "", None))
    text = io.StringIO()
    print("vipsense centre benchmark", file=text)
    print(
        f"  machine  : {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f" ({platform.python_implementation()}), {server_line}; load average before {load[0]:.1f},"
        f" after {os.getloadavg()[0]:.1f}",
        file=text,
    )
    print(file=text)
    missed = []
    for name, value, target, ok in rows:
        mark = "" if ok is None else ("PASS" if ok else "MISS")
        print(f"  {name:<44} {value:>16}   {target:<14} {mark}", file=text)
        if ok is False:
            missed.append(name.strip())
    print("\ndetails", file=text)
    print(
        f"  ingest   : {ing['accepted']:,} visits accepted and {ing['held']:,} held after "
        f"{ing['elapsed']:.1f} s; {ing['deliveries_per_s']:,.0f} deliveries/s beside them;"
        f" {ing['batches_per_s']:,.0f} batches/s of {args.batch} visits + {args.batch} deliveries"
        " + a heartbeat;"
        f" answers {ing['statuses']}; {ing['errors'] or 'no errors'}",
        file=text,
    )
    print(
        f"  keys     : {args.branches} branches added (BranchKeys.add) in {results['keys_s']:.1f} s",
        file=text,
    )
    print(
        f"  backlog  : {back['visits']:,} visits + as many deliveries in batches of {BACKLOG_BATCH},"
        f" {back['visits_per_s']:,.0f} visits/s, by the branch's own shipper (vipsense.uplink, the https"
        f" uplink type) from a real visit log and outbox; rows sent {back['sent']}",
        file=text,
    )
    print(
        f"  board    : {brd['visits_today']:,} visits today over {brd['branches']} branches;"
        f" {brd['runs']} runs, the naive peer {brd['naive_runs']}",
        file=text,
    )
    print(
        f"  on disk  : {results['size']['visits']:.0f} bytes a visit, {results['size']['deliveries']:.0f}"
        " a delivery, indexes included (PostgreSQL, after the run)",
        file=text,
    )
    if door is not None:
        for name, d in (("idle", door["idle"]), ("backlog", door["backlog"])):
            centre = d["centre"]
            print(
                f"  door {name:<7}: {d['arrivals']} arrivals, {d['received']} on the PDA,"
                f" {d['failed']} failed, {d['reads_per_s']:,.0f} reads/s; the centre at the end:"
                f" {centre.get('state')}, position {centre.get('position')}; backlog (visits) first seen"
                f" / last seen before the branch stopped: {d.get('backlog_seen')}",
                file=text,
            )
    print(f"  total    : {time.perf_counter() - t_all:.1f} s", file=text)
    if many is not None:
        print(
            f"  ingest x{args.processes}: {many['accepted']:,} visits accepted and {many['held']:,} held"
            f" after {many['elapsed']:.1f} s; answers {many['statuses']}; {many['errors'] or 'no errors'}",
            file=text,
        )
        if many["held"] != many["accepted"]:
            print(f"\nWRONG: {many['accepted']} visits accepted but {many['held']} held", file=text)
            missed.append("ingest held")
    if ing["held"] != ing["accepted"]:
        print(f"\nWRONG: {ing['accepted']} visits accepted but {ing['held']} held", file=text)
        missed.append("ingest held")
    if missed:
        print(f"\nMISSED: {', '.join(missed)}", file=text)
    sys.stdout.write(text.getvalue())
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
