"""One status object for the whole branch: counts, errors, the last error and latency per stage and
per device.  The web status page, the CLI status line and the benchmark all read :meth:`snapshot`."""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs

_RING = 2048


class Stats:
    """Counts, errors, the last error and a latency ring for one stage or device.  Thread-safe."""

    __slots__ = ("_lat", "_lock", "_pos", "count", "errors", "last_error", "last_error_at")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.last_error = ""
        self.last_error_at = 0.0
        self._lat: list[float] = []
        self._pos = 0
        self._lock = threading.Lock()

    def ok(self, latency: float | None = None, n: int = 1) -> None:
        with self._lock:
            self.count += n
            if latency is not None:
                self._add(latency)

    def _add(self, latency: float) -> None:
        if len(self._lat) < _RING:
            self._lat.append(latency)
        else:
            self._lat[self._pos] = latency
            self._pos = (self._pos + 1) % _RING

    def fail(self, message: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = message
            self.last_error_at = time.time()

    def percentiles(self) -> tuple[float | None, float | None]:
        with self._lock:
            lat = sorted(self._lat)
        if not lat:
            return None, None
        return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]

    def snapshot(self) -> dict[str, Any]:
        p50, p99 = self.percentiles()
        return {
            "count": self.count,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at or None,
            "latency_ms_p50": None if p50 is None else round(p50 * 1000, 3),
            "latency_ms_p99": None if p99 is None else round(p99 * 1000, 3),
        }


STAGES = ("presence", "cards", "customers", "visit_log", "routing", "outbox", "notify")


@attrs.define
class DeviceStatus:
    """A reader, store or notifier: its state in words, and its stats."""

    kind: str
    type: str
    state: str = "starting"
    reason: str = ""
    since: float = attrs.Factory(time.time)
    stats: Stats = attrs.Factory(Stats)
    counters: dict[str, int] = attrs.Factory(dict)  #: driver-specific, e.g. dropped frames
    #: the device's own facts for the status page (:meth:`vipsense.api.Notifier.health`)
    details: Any = None
    reads: int = 0  #: readers: reads handed to the pipeline (written by the reader's thread only)
    last_read_at: float | None = None  #: readers: wall-clock time of the last read

    def set(self, state: str, reason: str = "") -> bool:
        changed = (state, reason) != (self.state, self.reason)
        if changed:
            self.state, self.reason, self.since = state, reason, time.time()
        return changed

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.type,
            "state": self.state,
            "reason": self.reason,
            "since": self.since,
            "counters": dict(self.counters),
            "details": self._details(),
            **self.stats.snapshot(),
            **({"reads": self.reads, "last_read_at": self.last_read_at} if self.kind == "reader" else {}),
        }

    def _details(self) -> dict[str, Any]:
        if self.details is None:
            return {}
        try:
            return dict(self.details())
        except Exception as exc:  # a plugin's bug must not break the status page
            return {"error": f"health() raised {type(exc).__name__}: {exc}"}


class BranchStatus:
    def __init__(self, branch_id: str, branch_name: str) -> None:
        self.branch_id = branch_id
        self.branch_name = branch_name
        self.started_at = time.time()
        self.stages = {name: Stats() for name in STAGES}
        self.devices: dict[str, DeviceStatus] = {}
        self.counters = dict.fromkeys(
            (
                "reads",
                "arrivals",
                "greeted",
                "rejected",
                "suspect",
                "suppressed",
                "unknown",
                "unresolved",
                "resolved_late",
                "stale",
                "departures",
                "acknowledged",
            ),
            0,
        )
        #: the replica refresh (``sync:``): state ok/failed, last_ok_at, cards, customers, error
        self.sync: dict[str, Any] = {}
        #: the plugin host, for plugin states and the errors its broadcast hooks caught
        self.host: Any = None
        #: today's response times per member of staff (:mod:`vipsense.responses`), set by the branch
        self.responses: Any = None
        #: arrivals no identity store has judged yet (:meth:`vipsense.pipeline.Pipeline.held`)
        self.held: Any = None
        self._rate = (time.monotonic(), 0, 0.0)

    def device(self, item_id: str, kind: str, type_name: str) -> DeviceStatus:
        dev = self.devices.setdefault(item_id, DeviceStatus(kind, type_name))
        return dev

    def reads_per_second(self) -> float:
        """Reads per second since the previous call (for a status line refreshed periodically)."""
        now, reads = time.monotonic(), self.counters["reads"]
        then, before, last = self._rate
        if now - then >= 0.5:
            last = (reads - before) / (now - then)
            self._rate = (now, reads, last)
        return last

    def _plugins(self) -> dict[str, Any]:
        if self.host is None:
            return {}
        out = {
            p.name: {"state": p.state.value, "error": p.error, "version": p.version, "hook_errors": {}}
            for p in self.host.plugins
        }
        for (plugin, hook), (count, last) in dict(self.host.hook_errors).items():
            entry = out.setdefault(plugin, {"state": "loaded", "error": "", "version": "", "hook_errors": {}})
            entry["hook_errors"][hook] = {"count": count, "last_error": last}
        return out

    def snapshot(self) -> dict[str, Any]:
        return {
            "branch": {"id": self.branch_id, "name": self.branch_name},
            "started_at": self.started_at,
            "counters": dict(self.counters),
            "stages": {name: s.snapshot() for name, s in self.stages.items()},
            "devices": {i: d.snapshot() for i, d in self.devices.items()},
            "plugins": self._plugins(),
            "sync": dict(self.sync),
            "responses": self._responses(),
            "held": list(self.held()) if self.held is not None else [],
        }

    def _responses(self) -> dict[str, Any]:
        if self.responses is None:
            return {}
        try:
            return dict(self.responses())
        except Exception as exc:  # the outbox file is gone or locked: the rest of the status stands
            return {"error": f"{type(exc).__name__}: {exc}"}
