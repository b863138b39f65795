"""An SQLite file that the branch's threads write all day: the visit log and the outbox.

WAL mode with a chosen ``synchronous`` level.  Checkpoints run on a thread of their own, because
SQLite's automatic checkpoint would stall the writing thread for milliseconds every thousand pages
(measured by bench/pipeline.py).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path


class WalFile:
    def __init__(self, path: Path, schema: str, synchronous: str = "NORMAL", name: str = "sqlite") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.db.executescript(schema)
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name=f"{name}-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_loop(self, interval: float = 1.0) -> None:
        db = sqlite3.connect(str(self.path), isolation_level=None)
        try:
            while not self._closing.wait(interval):
                with contextlib.suppress(sqlite3.Error):  # busy now: the next round catches up
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def close(self) -> None:
        """Stop checkpointing, fold the WAL into the file, close."""
        self._closing.set()
        self._checkpointer.join(2.0)
        with contextlib.suppress(sqlite3.Error):  # if busy, the WAL stays valid and is replayed on open
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()
