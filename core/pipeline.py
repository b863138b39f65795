"""The arrival pipeline: reads -> presence -> card -> policy -> customer -> visit log -> routing ->
notifiers.  See docs/pipeline.md for the diagram.

Everything here runs on one pipeline thread, fed by a queue that reader threads put reads into.  Each
batch taken from the queue is judged together and its visits are written in one transaction before
anyone is told.  If the visit log cannot write (a full disk), staff are still told, and the visits
are kept and written with the next batch that succeeds.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from .api import ReaderStatus
from .clock import Clock
from .config.profile import Profile
from .devices import NotifierRunner, StoreRunner
from .model import (
    SUSPECT_REASONS,
    Acknowledgement,
    Arrival,
    Fallback,
    Notification,
    TagRead,
    Visit,
    VisitKind,
)
from .outbox import OutboxWriter
from .pluginhost import PluginHost
from .policy import judge
from .presence import Presence
from .routing import Router
from .status import BranchStatus
from .visitlog import VisitLog

log = logging.getLogger(__name__)

BATCH = 1024
UNRECORDED_LIMIT = 100_000  #: visits kept in memory while the visit log cannot write
TICK_SECONDS = 0.1  #: real seconds between presence ticks (departures, expiry)

_BROADCAST = {
    VisitKind.GREETED: "vipsense_arrival",
    VisitKind.REJECTED: "vipsense_card_rejected",
    VisitKind.UNKNOWN: "vipsense_unknown_tag",
    VisitKind.SUSPECT: "vipsense_card_suspect",
}

#: Visits whose customer data was looked up for staff to see: these leave an audit entry.
_SHOWN = frozenset({VisitKind.GREETED, VisitKind.REJECTED, VisitKind.SUSPECT})


class Pipeline:
    def __init__(
        self,
        profile: Profile,
        host: PluginHost,
        clock: Clock,
        status: BranchStatus,
        stores: list[StoreRunner],
        notifiers: dict[str, NotifierRunner],
        visit_log: VisitLog,
        audit: Callable[[list[Visit]], None] | None = None,
        outbox: OutboxWriter | None = None,
    ) -> None:
        self.profile = profile
        self.branch_id = profile.branch.id
        self.host = host
        self.clock = clock
        self.status = status
        self.stores = stores
        self.notifiers = notifiers
        self.visit_log = visit_log
        self.presence = Presence(profile.presence)
        self.router = Router(profile.routing, profile.staff)
        self.ttl = float(profile.notification_ttl)
        self.min_travel = float(profile.security.min_travel)
        #: takes the recorded visits whose customer was looked up, for the audit trail
        self.audit = audit
        #: stores each batch's notifications, then hands them to the notifiers (None: hand them at once)
        self.outbox = outbox
        self._store_by_id = {runner.store_id: runner for runner in stores}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._present: dict[str, str] = {}  # epc -> visit_id while the card is in the door zone
        self._unrecorded: list[Visit] = []  # visits the visit log could not take yet
        self._stages = status.stages
        self._counters = status.counters
        self._last_tick = time.monotonic()

    # -- input, from any thread -----------------------------------------------------------------

    def submit(self, read: TagRead) -> None:
        self._queue.put(read)

    def reader_state(self, reader_id: str, status: ReaderStatus) -> None:
        self._queue.put((reader_id, status))

    def acknowledged(self, ack: Acknowledgement) -> None:
        """Record an acknowledgement on its visit (the visit log is the pipeline thread's)."""
        self._queue.put(ack)

    # -- the pipeline thread --------------------------------------------------------------------

    def restore(self) -> int:
        """Seed re-entry suppression from the visit log, so a restart does not re-alert anyone.
        Returns how many cards are still inside their suppression window."""
        now = self.clock.wall()
        rows = self.visit_log.last_notified(now - self.profile.presence.reentry_suppress, now)
        self.presence.restore((epc, self.clock.to_mono(at)) for epc, at in rows)
        return len(rows)

    def run(self, stop: threading.Event) -> None:
        get = self._queue.get
        while True:
            try:
                first = get(timeout=TICK_SECONDS)
            except queue.Empty:
                if stop.is_set():
                    self.flush()
                    break
                self.tick()
                continue
            self.process(self._drain(first))
            if time.monotonic() - self._last_tick >= TICK_SECONDS:
                self.tick()

    def _drain(self, first: Any) -> list[Any]:
        items = [first]
        get = self._queue.get_nowait
        try:
            while len(items) < BATCH:
                items.append(get())
        except queue.Empty:
            pass
        return items

    def process(self, items: list[Any]) -> None:
        """Feed a batch of reads (and reader status changes) through the pipeline."""
        t0 = time.perf_counter()
        feed = self.presence.feed
        arrivals: list[tuple[Arrival, bool]] = []
        acks: list[tuple[str, str, float]] = []
        reads = 0
        for item in items:
            if type(item) is TagRead:
                reads += 1
                result = feed(item)
                if result is not None:
                    arrivals.append(result)
            elif type(item) is Acknowledgement:
                acks.append((item.visit_id, item.staff_id, item.at))
            else:
                self.host.broadcast("vipsense_reader_status_changed", reader_id=item[0], status=item[1])
        if reads:
            self._counters["reads"] += reads
            self._stages["presence"].ok(time.perf_counter() - t0, n=reads)
        if arrivals:
            self._handle(arrivals)
        if acks:
            try:
                self.visit_log.acknowledged(acks)
            except Exception as exc:  # the outbox has it too: response times are not lost
                self._stages["visit_log"].fail(f"{type(exc).__name__}: {exc}")
                log.error("visit log: cannot record %d acknowledgements: %s", len(acks), exc)

    def tick(self) -> None:
        self._last_tick = time.monotonic()
        departed = self.presence.tick(self.clock.mono())
        if not departed:
            return
        at = self.clock.wall()
        marks = []
        for arrival in departed:
            visit_id = self._present.pop(arrival.epc, None)
            if visit_id:
                marks.append((visit_id, at))
            self.host.broadcast("vipsense_departure", arrival=arrival, departed_at=at)
        self._counters["departures"] += len(departed)
        try:
            self.visit_log.departed(marks)
        except Exception as exc:
            self._stages["visit_log"].fail(f"{type(exc).__name__}: {exc}")
            log.error("visit log: cannot record departures: %s", exc)

    # -- judging --------------------------------------------------------------------------------

    def _lookup(self, stage: str, method: str, key: str) -> tuple[Any, str | None, bool]:
        """Ask each store in profile order; the first fresh hit wins.  Failing stores are skipped.

        A *stale* hit (a cached copy the store could not refresh) is kept only as a fallback while
        later stores are asked: a branch replica that has a revocation must beat a central store's
        cache from before it.  Returns ``(result, store_id, answered)``; ``answered`` is False when no
        store could answer at all, so "not found" and "could not ask" are never confused."""
        t0 = time.perf_counter()
        answered_any = False
        fallback: tuple[Any, str] | None = None
        for runner in self.stores:
            answered, result = runner.lookup(method, key)
            answered_any = answered_any or answered
            if answered and result is not None:
                if not getattr(result, "stale", False):
                    self._stages[stage].ok(time.perf_counter() - t0)
                    return result, runner.store_id, True
                fallback = fallback or (result, runner.store_id)
        if fallback is not None:
            self._stages[stage].ok(time.perf_counter() - t0)
            return fallback[0], fallback[1], True
        if answered_any:
            self._stages[stage].ok(time.perf_counter() - t0)
        else:
            self._stages[stage].fail("no identity store could answer")
        return None, None, answered_any

    def _judge(self, arrival: Arrival, reentry: bool, today: dt.date, now: float) -> tuple[Visit, str | None]:
        """The visit, and the id of the store that knew the card."""
        card, store_id, answered = self._lookup("cards", "find_card", arrival.epc)
        card_store = store_id
        customer = reason = None
        if card is None:
            # With no store answering, the card cannot be judged: it might be a lost one, so it is
            # recorded as unresolved and nobody is greeted.
            kind = VisitKind.SUPPRESSED if reentry else VisitKind.UNKNOWN
        else:
            reason = judge(
                card, self.branch_id, today, read_tid=arrival.tid, now=now, min_travel=self.min_travel
            )
            customer, cstore, _ = self._lookup("customers", "find_customer", card.customer_no)
            store_id = cstore or store_id
            if reason in SUSPECT_REASONS:
                kind = VisitKind.SUSPECT  # security alerts are never suppressed
            elif reason is not None:
                kind = VisitKind.REJECTED
            else:
                kind = VisitKind.SUPPRESSED if reentry else VisitKind.GREETED
        tier = (customer.tier if customer else None) or (card.tier if card else None)
        visit = Visit(
            visit_id=uuid.uuid4().hex,
            branch_id=self.branch_id,
            kind=kind,
            arrival=arrival,
            arrived_at=self.clock.to_wall(arrival.arrived_mono),
            card=card,
            customer=customer,
            reason=reason,
            tier=tier,
            store_id=store_id,
            stale=bool((card and card.stale) or (customer and customer.stale)),
            unresolved=not answered,
        )
        return visit, card_store

    def _handle(self, arrivals: list[tuple[Arrival, bool]]) -> None:
        now = self.clock.wall()
        today = dt.date.fromtimestamp(now)
        judged = [self._judge(a, reentry, today, now) for a, reentry in arrivals]
        visits = [v for v, _ in judged]
        self._record(visits)
        counters = self._counters
        counters["arrivals"] += len(visits)
        routed: list[Notification] = []
        for visit in visits:
            counters[visit.kind.value] += 1
            counters["unresolved"] += visit.unresolved
            counters["stale"] += visit.stale
            self._present[visit.arrival.epc] = visit.visit_id
            hook = _BROADCAST.get(visit.kind)
            if hook:
                self.host.broadcast(hook, visit=visit)
            routed += self._route(visit)
        if routed:
            self._dispatch(routed)
        self._sightings(judged)
        if self.audit is not None:
            shown = [v for v in visits if v.kind in _SHOWN and v.customer is not None]
            if shown:
                self.audit(shown)

    def _sightings(self, judged: list[tuple[Visit, str | None]]) -> None:
        """Tell the store that knew each card where it was seen, so other branches sharing that
        store can tell a card that travelled implausibly fast.  Fire and forget."""
        by_store: dict[str, list[tuple[str, str, float]]] = {}
        for visit, card_store in judged:
            if visit.card is not None and not visit.card.stale and card_store is not None:
                by_store.setdefault(card_store, []).append(
                    (visit.arrival.epc, self.branch_id, visit.arrived_at)
                )
        for store_id, sightings in by_store.items():
            self._store_by_id[store_id].cards_seen(sightings)

    def _record(self, visits: list[Visit]) -> None:
        pending = self._unrecorded + visits if self._unrecorded else visits
        t0 = time.perf_counter()
        try:
            self.visit_log.record(pending)
        except Exception as exc:
            # Staff are still told; the visits wait for the next batch, and status shows the failure.
            self._stages["visit_log"].fail(f"{type(exc).__name__}: {exc}")
            if len(pending) > UNRECORDED_LIMIT:
                log.error("visit log: dropping %d oldest unrecorded visits", len(pending) - UNRECORDED_LIMIT)
            self._unrecorded = pending[-UNRECORDED_LIMIT:]
            log.error("visit log: cannot record %d visits yet: %s", len(self._unrecorded), exc)
            return
        self._unrecorded = []
        self._stages["visit_log"].ok(time.perf_counter() - t0, n=len(pending))

    def flush(self) -> None:
        """Write any visits still waiting for the visit log (called once the pipeline stops)."""
        if self._unrecorded:
            self._record([])
            if self._unrecorded:
                log.error("visit log: %d visits could not be recorded before stopping", len(self._unrecorded))

    def _route(self, visit: Visit) -> list[Notification]:
        t0 = time.perf_counter()
        now = self.clock.wall()
        out = []
        for person, via, escalation in self.router.route(visit):
            if via not in self.notifiers:  # its factory failed; status already shows why
                self._stages["routing"].fail(f"notifier {via} is not running")
                continue
            fallback = None
            if escalation is not None:
                fallback = Fallback(now + float(escalation.after), escalation.to, escalation.via)
            out.append(
                Notification(
                    key=f"{visit.visit_id}:{person.id}",
                    visit=visit,
                    recipient=person,
                    notifier_id=via,
                    created_at=now,
                    expires_at=visit.arrived_at + self.ttl,
                    fallback=fallback,
                )
            )
        if out:
            self._stages["routing"].ok(time.perf_counter() - t0, n=len(out))
        return out

    def _dispatch(self, routed: list[Notification]) -> None:
        """The batch's notifications go to the outbox, which stores them in one transaction before
        it hands them to their notifiers."""
        if self.outbox is not None:
            self.outbox.put(routed)
            return
        notifiers = self.notifiers
        for n in routed:
            notifiers[n.notifier_id].put(n)
