"""One status object for the whole branch: counts, errors, the last error and latency per stage and
per device, and the files it could not write.  The web status page, the CLI status line and the
benchmark all read :meth:`BranchStatus.snapshot`."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import attrs

from .i18n import _, lazy_gettext, ngettext
from .states import DeviceState
from .stats import percentile
from .texts import translated

_RING = 2048


class Stats:
    """Counts, errors, the last error and a latency ring for one stage or device.  Thread-safe."""

    __slots__ = ("_file", "_lat", "_lock", "_pos", "count", "errors", "last_error", "last_error_at")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.last_error = ""
        self.last_error_at = 0.0
        self._lat: list[float] = []
        self._pos = 0
        self._lock = threading.Lock()
        self._file: tuple[Storage, str] | None = None  #: a stage that writes a file reports to

    def writes(self, storage: Storage, name: str) -> None:
        """This stage writes the file ``name``: each failure is a storage problem, each success ends it."""
        self._file = (storage, name)

    @property
    def storage(self) -> Storage | None:
        return self._file[0] if self._file is not None else None

    def ok(self, latency: float | None = None, n: int = 1) -> None:
        with self._lock:
            self.count += n
            if latency is not None:
                self._add(latency)
        if self._file is not None:
            self._file[0].written(self._file[1])

    def _add(self, latency: float) -> None:
        if len(self._lat) < _RING:
            self._lat.append(latency)
        else:
            self._lat[self._pos] = latency
            self._pos = (self._pos + 1) % _RING

    def fail(self, message: str) -> None:
        """Count an error.  For a stage that writes a file, one the disk caused (full, read-only, I/O)
        is also a storage problem; others (a busy database, a plugin's error) are the stage's own."""
        with self._lock:
            self.errors += 1
            self.last_error = message
            self.last_error_at = time.time()
        if self._file is not None and storage_cause(message) != UNKNOWN_CAUSE:
            self._file[0].failed(self._file[1], None, message)

    def percentiles(self) -> tuple[float | None, float | None]:
        with self._lock:
            lat = sorted(self._lat)
        if not lat:
            return None, None
        return percentile(lat, 0.5), percentile(lat, 0.99)

    def snapshot(self) -> dict[str, Any]:
        p50, p99 = self.percentiles()
        return {
            "count": self.count,
            "errors": self.errors,
            "last_error": translated(self.last_error),
            "last_error_at": self.last_error_at or None,
            "latency_ms_p50": None if p50 is None else round(p50 * 1000, 3),
            "latency_ms_p99": None if p99 is None else round(p99 * 1000, 3),
        }


STAGES = ("presence", "cards", "customers", "visit_log", "routing", "outbox", "notify")
#: stages that write a file of the data directory, and how the status names that file
STORAGE_STAGES = {"visit_log": "visit log", "outbox": "outbox"}


UNKNOWN_CAUSE = "cannot write"
#: the causes and file names as staff read them (the snapshot's ``cause`` and ``name`` stay English)
CAUSE_LABELS = {
    "disk full": lazy_gettext("disk full"),
    "disk quota exceeded": lazy_gettext("disk quota exceeded"),
    "read-only": lazy_gettext("read-only"),
    "disk I/O error": lazy_gettext("disk I/O error"),
    UNKNOWN_CAUSE: lazy_gettext("cannot write"),
}
FILE_LABELS = {
    "visit log": lazy_gettext("visit log"),
    "outbox": lazy_gettext("outbox"),
    "audit log": lazy_gettext("audit log"),
}


def _label(labels: dict[str, object], word: str) -> str:
    found = labels.get(word)
    return str(found) if found is not None else word


def storage_cause(error: BaseException | str) -> str:
    """What stops a file being written, in two or three words: ``disk full``, ``read-only``..."""
    name = getattr(error, "sqlite_errorname", "") or ""
    number = getattr(error, "errno", None)
    text = str(error).lower()
    if name == "SQLITE_FULL" or number == errno.ENOSPC or "disk is full" in text or "no space left" in text:
        return "disk full"
    if number == errno.EDQUOT or "quota" in text:
        return "disk quota exceeded"
    if (
        name.startswith("SQLITE_READONLY")
        or number == errno.EROFS
        or "readonly" in text
        or "read-only" in text
    ):
        return "read-only"
    if name.startswith("SQLITE_IOERR") or number == errno.EIO or "i/o error" in text:
        return "disk I/O error"
    return UNKNOWN_CAUSE


@attrs.define
class FileTrouble:
    """One file the branch cannot write now."""

    name: str  #: visit log, outbox, audit log
    path: Path | None
    cause: str  #: :func:`storage_cause`
    error: str  #: the last error, in words
    since: float  #: wall time of the first failure in a row
    held: int | None = None  #: records kept in memory until they can be written (None: not known)


class Storage:
    """The branch's files that could not be written: a status problem from the first failure until
    the next successful write.  Writers report here (:meth:`failed`, :meth:`written`); records they
    could not write they keep in memory and write when they can, and say how many (``held``).
    Thread-safe; :meth:`written` costs one dict look-up when nothing is wrong."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trouble: dict[str, FileTrouble] = {}
        self._paths: dict[str, Path] = {}
        self.data_dir: Path | None = None  #: where the branch's files are (named in the problem)

    def locate(self, name: str, path: Path) -> None:
        """Where ``name`` is, before anything goes wrong with it."""
        with self._lock:
            self._paths[name] = path
            if self.data_dir is None:
                self.data_dir = path.parent

    def failed(
        self, name: str, path: Path | None, error: BaseException | str, held: int | None = None
    ) -> None:
        with self._lock:
            if path is not None:
                self._paths[name] = path
                if self.data_dir is None:
                    self.data_dir = path.parent
            old = self._trouble.get(name)
            self._trouble[name] = FileTrouble(
                name,
                path or self._paths.get(name),
                storage_cause(error),
                str(error),
                old.since if old else time.time(),
                held if held is not None else (old.held if old else None),
            )

    def written(self, name: str) -> None:
        if name in self._trouble:
            with self._lock:
                self._trouble.pop(name, None)

    def problem(self) -> str:
        """The storage problem in one line ("" when every file is being written), in the language in
        force, e.g. ``disk full at /var/lib/vipsense/sh-01: visit log, outbox cannot be written; 38
        records held in memory until they can be``."""
        with self._lock:
            trouble = list(self._trouble.values())
            data_dir = self.data_dir
        if not trouble:
            return ""
        held = sum(t.held or 0 for t in trouble)
        parts = []
        for cause in dict.fromkeys(t.cause for t in trouble):
            these = [t for t in trouble if t.cause == cause]
            dirs = {t.path.parent for t in these if t.path is not None} or ({data_dir} if data_dir else set())
            where = os.path.commonpath([str(d) for d in dirs]) if dirs else _("the data directory")
            names = _(", ").join(_label(FILE_LABELS, t.name) for t in these)
            parts.append(
                _("{cause} at {where}: {names} cannot be written").format(
                    cause=_label(CAUSE_LABELS, cause), where=where, names=names
                )
            )
        text = _("; ").join(parts)
        if held:
            kept = ngettext(
                "{held} record held in memory until it can be",
                "{held} records held in memory until they can be",
                held,
            ).format(held=held)
            return _("; ").join([text, kept])
        return text

    def snapshot(self) -> dict[str, Any]:
        """``{"state": "ok" | "degraded", "problem": str, "files": [{name, path, cause, error, since,
        held}]}``"""
        with self._lock:
            files = [
                {
                    "name": t.name,
                    "path": str(t.path) if t.path else None,
                    "cause": t.cause,
                    "error": t.error,
                    "since": t.since,
                    "held": t.held,
                }
                for t in self._trouble.values()
            ]
        return {"state": "degraded" if files else "ok", "problem": self.problem(), "files": files}


@attrs.define
class DeviceStatus:
    """A reader, store or notifier: its state, and its stats."""

    kind: str
    type: str
    state: DeviceState = attrs.field(default=DeviceState.STARTING, converter=DeviceState)
    reason: str = ""
    since: float = attrs.Factory(time.time)
    stats: Stats = attrs.Factory(Stats)
    counters: dict[str, int] = attrs.Factory(dict)  #: driver-specific, e.g. dropped frames
    #: the device's own facts for the status page (:meth:`vipsense.api.Notifier.health`)
    details: Any = None
    reads: int = 0  #: readers: reads handed to the pipeline (written by the reader's thread only)
    last_read_at: float | None = None  #: readers: wall-clock time of the last read

    def set(self, state: DeviceState | str, reason: str = "") -> bool:
        state = DeviceState(state)
        changed = (state, reason) != (self.state, self.reason)
        if changed:
            self.state, self.reason, self.since = state, reason, time.time()
        return changed

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.type,
            "state": self.state.value,
            "reason": translated(self.reason),
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
            return {"error": _("health() raised {error}").format(error=f"{type(exc).__name__}: {exc}")}


class BranchStatus:
    def __init__(self, branch_id: str, branch_name: str) -> None:
        self.branch_id = branch_id
        self.branch_name = branch_name
        self.started_at = time.time()
        self.stages = {name: Stats() for name in STAGES}
        #: files that could not be written (a full disk): a problem of the whole branch
        self.storage = Storage()
        for stage, name in STORAGE_STAGES.items():
            self.stages[stage].writes(self.storage, name)
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
        #: today's response times per member of staff (:mod:`vipsense.pipeline.response_times`), set by
        #: the branch
        self.responses: Any = None
        #: arrivals no identity store has judged yet (:meth:`vipsense.pipeline.arrivals.Pipeline.held`)
        self.held: Any = None
        #: the link to the centre (``centre:``), set by the branch: state ok / unreachable (since,
        #: reason) / refused (error) / failed, position, backlog, last_ok_at, text
        self.centre: Any = None
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
            p.name: {
                "state": p.state.value,
                "error": translated(p.error),
                "version": p.version,
                "hook_errors": {},
            }
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
            "sync": {k: translated(v) if k == "error" else v for k, v in self.sync.items()},
            "responses": self._responses(),
            "held": list(self.held()) if self.held is not None else [],
            "storage": self.storage.snapshot(),
            "centre": self.snapshot_centre(),
        }

    def snapshot_centre(self) -> dict[str, Any]:
        """The ``centre`` entry alone ({} without ``centre:``), for a status line."""
        if self.centre is None:
            return {}
        try:
            return dict(self.centre())
        except Exception as exc:  # the rest of the status stands
            return {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}

    def _responses(self) -> dict[str, Any]:
        if self.responses is None:
            return {}
        try:
            return dict(self.responses())
        except Exception as exc:  # the outbox file is gone or locked: the rest of the status stands
            return {"error": f"{type(exc).__name__}: {exc}"}
