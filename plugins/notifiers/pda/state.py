"""What a PDA remembers: keys already shown (so a repeated push is not shown twice, even after a
restart), arrivals still waiting for a key press, and acknowledgements not yet taken by the hub.

Kept in memory and, with ``--data-dir``, in one small JSON file replaced atomically on each change.
No customer data beyond what the waiting list needs to name an arrival (name and tier), and nothing
when the PDA runs without a data directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from vipsense.signing import MAX_SKEW

FILE_NAME = "pda-state.json"
DEFAULT_KEEP = 24 * 3600.0  #: seconds a key is remembered when the push did not say when it expires


class AgentState:
    def __init__(self, data_dir: Path | None) -> None:
        self.path = data_dir / FILE_NAME if data_dir else None
        self.lock = threading.RLock()
        self.seen: dict[str, float] = {}  #: key -> remember until (unix time)
        self.waiting: list[dict[str, Any]] = []  #: shown, not acknowledged: {key, ack_url, label}
        self.acks: list[dict[str, Any]] = []  #: acknowledgements to post: {key, url, doc}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError):  # a torn or foreign file: start afresh rather than not at all
            with contextlib.suppress(OSError):
                self.path.replace(self.path.with_suffix(".corrupt"))
            return
        now = time.time()
        self.seen = {str(k): float(v) for k, v in doc.get("seen", {}).items() if float(v) > now}
        self.waiting = [w for w in doc.get("waiting", []) if isinstance(w, dict) and w.get("key")]
        self.acks = [a for a in doc.get("acks", []) if isinstance(a, dict) and a.get("key")]

    def save(self) -> None:
        if self.path is None:
            return
        with self.lock:
            doc = {"seen": self.seen, "waiting": self.waiting, "acks": self.acks}
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.path)

    def remember(self, key: str, expires_at: float | None) -> bool:
        """Record ``key`` as shown; False if it already was (then nothing changes)."""
        now = time.time()
        with self.lock:
            if self.seen.get(key, 0.0) > now:
                return False
            until = now + DEFAULT_KEEP if expires_at is None else max(expires_at, now) + MAX_SKEW
            self.seen = {k: v for k, v in self.seen.items() if v > now}
            self.seen[key] = until
            return True
