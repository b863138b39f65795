"""A small LRU cache with a TTL per entry, negative entries, and access to expired entries.

Expired entries are kept (until pushed out by ``max_entries``) because they are what the store
answers with, marked stale, while the directory is unreachable (ldap.md §3: the directory stays the
source of truth; the cache only bridges it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class _Missing:
    """The cached answer "the directory has no such entry"."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


class TtlCache(Generic[V]):
    """``key -> (value or MISSING, stored_at)``; thread-safe; O(1) per call."""

    def __init__(self, ttl: float, negative_ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self.clock = clock
        self._data: OrderedDict[str, tuple[V | _Missing, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> tuple[V | _Missing, bool] | None:
        """``(value, fresh)``, or ``None`` when nothing is cached for ``key``."""
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
        value, stored = hit
        ttl = self.negative_ttl if value is MISSING else self.ttl
        return value, self.clock() - stored < ttl

    def put(self, key: str, value: V | _Missing) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._data[key] = (value, self.clock())
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def replace(self, key: str, value: V) -> None:
        """Change a cached value but keep its age (a detail changed; the rest is no fresher)."""
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data[key] = (value, hit[1])

    def pop(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
