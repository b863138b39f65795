"""What a PDA remembers: keys already shown (so a repeated push is not shown twice, even after a
restart), arrivals still waiting for a key press, and acknowledgements not yet taken by the hub.

Kept in memory and, with ``--data-dir``, in one small SQLite file (``pda-state.sqlite3``) that each
change updates in place: a push costs the same whether the PDA has shown ten arrivals today or ten
thousand, where rewriting one JSON document per push grew with every arrival shown.  No customer
data beyond what the waiting list needs to name an arrival (name and tier), and nothing on disk when
the PDA runs without a data directory.  Entries are forgotten once their push has expired
(``expires_at``, plus the signing skew), or after :data:`DEFAULT_KEEP` when it said no expiry.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from vipsense.signing import MAX_SKEW

FILE_NAME = "pda-state.sqlite3"
DEFAULT_KEEP = 24 * 3600.0  #: seconds a key is remembered when the push did not say when it expires
PRUNE_EVERY = 60.0  #: seconds between sweeps of expired entries

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS waiting (seq INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, until REAL NOT NULL,
                                    entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS acks (seq INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, entry TEXT NOT NULL);
"""


class AgentState:
    """The agent's three lists.  Every method takes :attr:`lock`; callers may hold it around several."""

    def __init__(self, data_dir: Path | None) -> None:
        self.path = data_dir / FILE_NAME if data_dir else None
        self.lock = threading.RLock()
        self._seen: dict[str, float] = {}  #: key -> remember until (unix time)
        #: key -> (remember until, {key, ack_url, hub, label}): shown, not acknowledged, oldest first
        self._waiting: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._acks: OrderedDict[str, dict[str, Any]] = OrderedDict()  #: key -> {key, url, hub, doc}
        self._next_prune = 0.0
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()

    # -- the file ---------------------------------------------------------------------------------

    def _open(self) -> None:
        assert self.path is not None
        try:
            self._db = self._connect()
            self._load()
        except sqlite3.DatabaseError:  # a torn or foreign file: start afresh rather than not at all
            if self._db is not None:
                self._db.close()
            with contextlib.suppress(OSError):
                self.path.replace(self.path.with_suffix(".corrupt"))
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # survives the agent being killed, as the JSON did
        db.executescript(SCHEMA)
        return db

    def _load(self) -> None:
        assert self._db is not None
        now = time.time()
        self._seen = dict(self._db.execute("SELECT key, until FROM seen WHERE until > ?", (now,)))
        for key, until, entry in self._db.execute(
            "SELECT key, until, entry FROM waiting WHERE until > ? ORDER BY seq", (now,)
        ):
            self._waiting[key] = (until, json.loads(entry))
        for key, entry in self._db.execute("SELECT key, entry FROM acks ORDER BY seq"):
            self._acks[key] = json.loads(entry)

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        if self._db is not None:
            self._db.execute(sql, args)

    # -- shown keys and the waiting list ------------------------------------------------------------

    def remember(self, key: str, expires_at: float | None) -> bool:
        """Record ``key`` as shown; False if it already was (then nothing changes)."""
        now = time.time()
        with self.lock:
            if self._seen.get(key, 0.0) > now:
                return False
            self._prune(now)
            until = now + DEFAULT_KEEP if expires_at is None else max(expires_at, now) + MAX_SKEW
            self._seen[key] = until
            self._write("INSERT OR REPLACE INTO seen (key, until) VALUES (?, ?)", (key, until))
            return True

    def add_waiting(self, entry: dict[str, Any]) -> None:
        """A shown arrival now waits for a key press (``entry``: key, ack_url, hub, label)."""
        key = entry["key"]
        with self.lock:
            until = self._seen.get(key, time.time() + DEFAULT_KEEP)
            self._waiting[key] = (until, entry)
            self._write(
                "INSERT OR REPLACE INTO waiting (key, until, entry) VALUES (?, ?, ?)",
                (key, until, json.dumps(entry, ensure_ascii=False)),
            )

    def waiting(self) -> list[dict[str, Any]]:
        """Arrivals still waiting for a key press, oldest first (a copy)."""
        with self.lock:
            return [entry for _, entry in self._waiting.values()]

    def oldest_waiting(self) -> str | None:
        with self.lock:
            return next(iter(self._waiting), None)

    def acknowledge(self, key: str, ack: dict[str, Any]) -> bool:
        """Move ``key`` from the waiting list to the acknowledgements to post (``ack``: key, doc; its
        url and hub instance are the push's).  False when ``key`` is not waiting."""
        with self.lock:
            held = self._waiting.pop(key, None)
            if held is None:
                return False
            ack = {**ack, "url": held[1]["ack_url"], "hub": held[1].get("hub")}
            self._acks[key] = ack
            if self._db is not None:
                with self._db:
                    self._db.execute("BEGIN")
                    self._db.execute("DELETE FROM waiting WHERE key=?", (key,))
                    self._db.execute(
                        "INSERT OR REPLACE INTO acks (key, entry) VALUES (?, ?)",
                        (key, json.dumps(ack, ensure_ascii=False)),
                    )
            return True

    # -- acknowledgements to post -------------------------------------------------------------------

    def pending_acks(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self._acks.values())

    def redirect_ack(self, key: str, url: str) -> None:
        """Post ``key``'s acknowledgement to ``url`` from now on (the hub moved)."""
        with self.lock:
            ack = self._acks.get(key)
            if ack is not None:
                ack["url"] = url
                self._write("UPDATE acks SET entry=? WHERE key=?", (json.dumps(ack, ensure_ascii=False), key))

    def ack_done(self, key: str) -> None:
        with self.lock:
            if self._acks.pop(key, None) is not None:
                self._write("DELETE FROM acks WHERE key=?", (key,))

    # -- housekeeping -------------------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        """Forget expired keys and waiting arrivals, at most once a :data:`PRUNE_EVERY`."""
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY
        self._seen = {k: v for k, v in self._seen.items() if v > now}
        for key in [k for k, (until, _) in self._waiting.items() if until <= now]:
            del self._waiting[key]
        if self._db is not None:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM seen WHERE until <= ?", (now,))
                self._db.execute("DELETE FROM waiting WHERE until <= ?", (now,))

    def close(self) -> None:
        with self.lock:
            if self._db is not None:
                self._db.close()
                self._db = None
