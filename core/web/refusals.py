"""Refused calls cannot flood the audit log: per source, the first few in a window are audited one by
one, the rest are counted into one entry per window.

A penetration test wrote 5,000 synced audit rows (1.4 MB) with 5,000 unauthenticated calls in 10 s.
Every refusal still leaves a trace (``privacy-security.md`` §3: failed accesses are audit events, and
"monitor for anomalies"), but a flood leaves one entry with a count instead of one per call:

* per source address, at most ``budget`` refusals within any ``window`` seconds are audited one by
  one, as before, and at most ``total`` from all sources together (so many addresses, e.g. an IPv6
  prefix, cannot multiply the budget);
* beyond that nothing is written for the call: it is answered as it would have been (401, or 429
  over its token's rate) and counted under (source, actor, action, result).  The flood's cost was the
  synced audit write, not the answer, and a standard 401 keeps well-behaved clients right (RFC 6750);
  the web's connection limits bound the rest;
* when the window that began with the first counted call closes, each count becomes one entry,
  ``N calls refused and counted`` with how many of each kind; and at the latest when the audit log
  closes (:meth:`vipsense.storage.audit.AuditLog.before_close`).

The profile sets ``budget``, ``total`` and ``window`` (``privacy.audit_refusals``,
``privacy.audit_refusals_total``, ``privacy.audit_refusal_window``).
A source is an address, so callers behind one NAT share a budget; calls with a valid token within its
rate are never refused here, so a bad neighbour behind the same NAT cannot lock a real caller out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

import attrs

from ..storage.audit import AuditAction, AuditLog, AuditRecord, AuditResult

log = logging.getLogger(__name__)

MAX_SOURCES = 10_000  #: sources tracked at once; beyond that the quietest are forgotten
FLUSH_EVERY = 1.0  #: seconds between looks for windows that closed


@attrs.define
class _Count:
    """Refusals counted (not audited one by one) from one source, of one kind, in one window."""

    actor: str
    role: str
    branch: str
    action: AuditAction
    result: AuditResult
    first: float  #: wall time of the first counted call
    closes: float  #: monotonic time the window closes
    n: int = 0
    why: Counter = attrs.Factory(Counter)


class RefusalGuard:
    """One per branch web; thread-safe.  ``audit`` receives the counted entries."""

    def __init__(
        self,
        audit: AuditLog,
        budget: int,
        window: float,
        total: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.audit = audit
        self.budget = budget
        self.total = total if total is not None else budget * 10
        self._all: deque[float] = deque()  #: times of refusals audited one by one, from every source
        self.window = window
        self.clock = clock
        self.wall = wall
        self._audited: dict[str, deque[float]] = {}  #: source -> times of refusals audited one by one
        self._counts: dict[tuple[str, str, str, str], _Count] = {}
        self._held: list[AuditRecord] = []  #: counted entries the log could not take yet
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        audit.before_close(self.close)

    def admit(self, source: str) -> float:
        """May this refusal from ``source`` be audited one by one?  0 if so (and it is counted against
        the budget); else the seconds until one may be, and the caller counts it (:meth:`count`) instead."""
        now = self.clock()
        with self._lock:
            times = self._audited.get(source)
            if times is None:
                if len(self._audited) >= MAX_SOURCES:
                    self._forget(now)
                times = self._audited[source] = deque()
            while times and times[0] <= now - self.window:
                times.popleft()
            every = self._all
            while every and every[0] <= now - self.window:
                every.popleft()
            if len(times) < self.budget and len(every) < self.total:
                times.append(now)
                every.append(now)
                return 0.0
            waits = [
                t[0] + self.window - now
                for t, cap in ((times, self.budget), (every, self.total))
                if len(t) >= cap
            ]
            return max(max(waits), 0.001)

    def _forget(self, now: float) -> None:
        """Drop sources with nothing in their window, then the quietest, to stay within MAX_SOURCES."""
        for source in [s for s, t in self._audited.items() if not t or t[-1] <= now - self.window]:
            del self._audited[source]
        if len(self._audited) >= MAX_SOURCES:
            quietest = sorted(self._audited, key=lambda s: self._audited[s][-1])
            for source in quietest[: len(quietest) // 10 + 1]:
                del self._audited[source]

    def count(
        self,
        source: str,
        actor: str,
        role: str,
        branch: str,
        action: AuditAction,
        result: AuditResult,
        why: str,
    ) -> None:
        """Count one refusal that was not audited one by one."""
        key = (source, actor, action.value, result.value)
        with self._lock:
            entry = self._counts.get(key)
            if entry is None:
                entry = self._counts[key] = _Count(
                    actor, role, branch, action, result, self.wall(), self.clock() + self.window
                )
            entry.n += 1
            entry.why[why] += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="api-refusals", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self.flush()

    def flush(self, everything: bool = False) -> int:
        """Write one entry per count whose window closed (every count when ``everything``); returns
        how many entries were written.  What the log cannot take is kept for the next round."""
        now = self.clock()
        with self._lock:
            due = [k for k, c in self._counts.items() if everything or c.closes <= now]
            records = self._held + [self._record(k[0], self._counts.pop(k)) for k in due]
            self._held = []
        if not records:
            return 0
        try:
            self.audit.append_many(records)
        except Exception as exc:  # a full disk: keep them, the next round tries again
            with self._lock:
                self._held = records + self._held
            log.error("api: cannot write %d counted refusals to the audit log yet: %s", len(records), exc)
            return 0
        return len(records)

    def _record(self, source: str, c: _Count) -> AuditRecord:
        kinds = ", ".join(f"{why} x{n}" for why, n in c.why.most_common())
        return AuditRecord(
            actor=c.actor,
            role=c.role,
            branch=c.branch,
            action=c.action,
            object=f"{c.n} calls refused and counted",
            source=source,
            result=c.result,
            reason=(
                f"{c.n} refused calls within {self.window:g} s of the first, beyond the {self.budget} a"
                f" source (and {self.total} all sources) may make in that time that are audited one by one:"
                f" {kinds}"
            ),
            at=c.first,
        )

    def close(self) -> None:
        """Write every count now (the branch is stopping), then stop the thread."""
        self._stop.set()
        self.flush(everything=True)
        with self._lock:
            lost = len(self._held)
        if lost:
            log.error("api: %d counted refusal entries could not be written before stopping", lost)
