"""The arrival pipeline: reads -> presence -> card -> policy -> customer -> visit log -> routing ->
notifiers.  See docs/pipeline.md for the diagram.

Everything here runs on one pipeline thread, fed by a queue that reader threads put reads into.  Each
batch taken from the queue is judged together and its visits are written in one transaction before
anyone is told.  If the visit log cannot write (a full disk), staff are still told, and the visits
are kept and written with the next batch that succeeds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs

from .. import hookspecs
from ..api import ReaderStatus
from ..backoff import Backoff
from ..clock import Clock
from ..config.profile import Profile
from ..devices import NotifierRunner, StoreRunner
from ..i18n import lazy_gettext
from ..model import (
    SUSPECT_REASONS,
    Acknowledgement,
    Arrival,
    Fallback,
    Notification,
    TagRead,
    Visit,
    VisitKind,
)
from ..pluginhost import PluginHost
from ..status import BranchStatus
from ..storage.outbox import OutboxWriter
from ..storage.visitlog import QUIET_KINDS, OpenVisit, VisitLog
from ..texts import Text
from ..timezone import day_of
from .lookup import Answer, Outcome, ask
from .policy import judge
from .presence import Presence
from .routing import Router

log = logging.getLogger(__name__)
#: a look-up stage's last error when every store failed it (made once: it is on the door's path)
NO_STORE_ANSWERED = Text(lazy_gettext("no identity store could answer"))

BATCH = 1024
UNRECORDED_LIMIT = 100_000  #: visits kept in memory while the visit log cannot write
TICK_SECONDS = 0.1  #: real seconds between presence ticks (departures, expiry, held arrivals)
RETRY_FIRST = 0.25  #: real seconds before an unresolved arrival is first judged again ...
RETRY_MAX = 2.0  #: ... doubling up to this while its card is in the door zone
SIGHTINGS_EVERY = 2.0  #: real seconds between writes of the last sighting of cards in the door zone
#: visits whose departure starts a re-entry window: the holder was greeted (or it was a re-entry)
_QUIET = frozenset({VisitKind.GREETED, VisitKind.SUPPRESSED})

_BROADCAST = {
    VisitKind.GREETED: hookspecs.vipsense_arrival,
    VisitKind.REJECTED: hookspecs.vipsense_card_rejected,
    VisitKind.UNKNOWN: hookspecs.vipsense_unknown_tag,
    VisitKind.SUSPECT: hookspecs.vipsense_card_suspect,
    VisitKind.UNRESOLVED: hookspecs.vipsense_arrival_unresolved,
}

#: Visits whose customer data was looked up for staff to see: these leave an audit entry.
_SHOWN = frozenset({VisitKind.GREETED, VisitKind.REJECTED, VisitKind.SUSPECT})


@attrs.frozen
class Restored:
    """What :meth:`Pipeline.restore` found in the visit log."""

    present: int  #: cards that were in the door zone at the stop: their visits continue
    closed: int  #: open visits of cards gone too long: closed at their last sighting
    quiet: int  #: cards greeted so recently that a return is still a re-entry


@attrs.define
class Held:
    """An arrival no identity store could judge yet.  It is recorded at once (kind ``unresolved``)
    and judged again: while a store is starting (``waiting``, in arrival order), then, once nobody is
    told it is unresolved, with a backoff while its card is in the door zone."""

    visit: Visit
    reentry: bool
    waiting: bool  #: held for a store inside its start-up grace period; no alert yet
    next_try: float = 0.0  #: time.monotonic()
    retry: Backoff = attrs.Factory(lambda: Backoff(RETRY_FIRST, RETRY_MAX))
    present: bool = True  #: the card is still in the door zone
    departed: float | None = None  #: its last sighting (branch mono), once it left the door zone


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
        self.ttl = clock.real(float(profile.notification_ttl))  #: real seconds
        self.tz = profile.tz
        self.min_travel = float(profile.security.min_travel)
        #: takes the recorded visits whose customer was looked up, for the audit trail
        self.audit = audit
        #: stores each batch's notifications, then hands them to the notifiers (None: hand them at once)
        self.outbox = outbox
        self._store_by_id = {runner.store_id: runner for runner in stores}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._present: dict[str, str] = {}  # epc -> visit_id while the card is in the door zone
        #: arrivals not judged yet, by visit id, in arrival order (:class:`Held`)
        self._held: dict[str, Held] = {}
        self._sighted: dict[str, float] = {}  #: epc -> the last sighting written to the visit log
        self._unwritten_departures: list[tuple[str, float]] = []
        self._next_sighting = 0.0
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

    def restore(self) -> Restored:
        """Pick up where the last run stopped, so a restart does not re-alert anyone:

        * cards that were in the door zone continue their visits (an unresolved one is judged
          again); a visit whose card was last seen longer ago than the re-entry window is closed
          at its last sighting, as after a crash;
        * greetings whose re-entry window is still running keep silencing a return."""
        now, real = self.clock.wall(), self.clock.real
        p = self.profile.presence
        horizon = now - real(max(float(p.depart_after), float(p.reentry_suppress)))  # wall time
        to_mono = self.clock.to_mono
        present, closed = [], []
        newest: dict[str, OpenVisit] = {}
        for v in self.visit_log.open_visits():  # oldest first: a card's newest open visit wins
            if v.last_seen_at < horizon:
                closed.append((v.visit_id, v.last_seen_at))
                continue
            older = newest.pop(v.epc, None)
            if older is not None:
                closed.append((older.visit_id, older.last_seen_at))
            newest[v.epc] = v
        for v in newest.values():
            arrival = Arrival(
                v.epc, v.reader_id, v.antenna, to_mono(v.arrived_at), to_mono(v.arrived_at),
                v.read_count, v.peak_rssi, v.tid,
            )  # fmt: skip
            present.append((arrival, to_mono(v.last_seen_at), v.kind in QUIET_KINDS))
            self._present[v.epc] = v.visit_id
            if v.kind == VisitKind.UNRESOLVED.value:  # told already; judged again while present
                visit = Visit(
                    v.visit_id, self.branch_id, VisitKind.UNRESOLVED, arrival, v.arrived_at, unresolved=True
                )
                self._held[v.visit_id] = Held(visit, reentry=False, waiting=False)
        self.presence.restore_present(present, self.clock.mono())
        if closed:
            self.visit_log.departed(closed)
        quiet = self.visit_log.last_quiet(now - real(float(p.reentry_suppress)))
        self.presence.restore((epc, to_mono(at)) for epc, at in quiet)
        self._sighted = {arrival.epc: last for arrival, last, _ in present}
        return Restored(present=len(present), closed=len(closed), quiet=len(quiet))

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
                self.host.hook.vipsense_reader_status_changed(reader_id=item[0], status=item[1])
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
        self._last_tick = real = time.monotonic()
        departed = self.presence.tick(self.clock.mono())
        if departed:
            self._departed(departed)
        elif self._unwritten_departures:
            self._write_departures()
        if self._held:
            self._judge_held()
        if real >= self._next_sighting:
            self._next_sighting = real + SIGHTINGS_EVERY
            self.record_sightings()

    def record_sightings(self) -> None:
        """Write the last sighting of each card in the door zone that was read since the last time,
        so a crash loses at most :data:`SIGHTINGS_EVERY` of them (and a stop none)."""
        to_wall, written = self.clock.to_wall, self._sighted
        rows = []
        for epc, last in self.presence.sightings():
            visit_id = self._present.get(epc)
            if visit_id is not None and written.get(epc) != last:
                rows.append((visit_id, to_wall(last)))
                written[epc] = last
        try:
            self.visit_log.seen(rows)
        except Exception as exc:  # the next round writes them (a stop flushes them)
            self._stages["visit_log"].fail(f"{type(exc).__name__}: {exc}")
            self._sighted = {}

    def _departed(self, departed: list[tuple[Arrival, float]]) -> None:
        """Close the visits of cards that left (at their last sighting), then tell observers."""
        to_wall = self.clock.to_wall
        marks = self._unwritten_departures
        for arrival, last in departed:
            self._sighted.pop(arrival.epc, None)
            visit_id = self._present.pop(arrival.epc, None)
            if visit_id:
                marks.append((visit_id, to_wall(last)))
                held = self._held.get(visit_id)
                if held is not None:
                    held.present = False
                    held.departed = last
                    if not held.waiting:  # unresolved, and gone: it stays unresolved
                        del self._held[visit_id]
        self._write_departures()
        for arrival, last in departed:
            self.host.hook.vipsense_departure(arrival=arrival, departed_at=to_wall(last))
        self._counters["departures"] += len(departed)

    def _write_departures(self) -> None:
        """Departures the visit log could not take wait for the next tick, like visits do."""
        if not self._unwritten_departures:
            return
        try:
            self.visit_log.departed(self._unwritten_departures)
        except Exception as exc:
            self._stages["visit_log"].fail(f"{type(exc).__name__}: {exc}")
            log.error("visit log: cannot record %d departures yet: %s", len(self._unwritten_departures), exc)
            del self._unwritten_departures[:-UNRECORDED_LIMIT]
            return
        self._unwritten_departures = []

    # -- judging --------------------------------------------------------------------------------

    def _ask(self, stage: str, method: str, key: str) -> Answer:
        """The stores' answer (:func:`vipsense.pipeline.lookup.ask`), timed as ``stage``."""
        t0 = time.perf_counter()
        answer = ask(self.stores, method, key)
        if answer.answered:
            self._stages[stage].ok(time.perf_counter() - t0)
        elif answer.outcome is Outcome.NO_ANSWER:
            self._stages[stage].fail(NO_STORE_ANSWERED)
        return answer

    def _judge(
        self, arrival: Arrival, reentry: bool, now: float, visit_id: str | None = None
    ) -> tuple[Visit, str | None] | Outcome:
        """The judged visit and the id of the store that knew the card; or, when the stores could not
        say, :attr:`Outcome.WAIT` (a store is starting) or :attr:`Outcome.NO_ANSWER`."""
        found = self._ask("cards", "find_card", arrival.epc)
        if not found.answered:
            return found.outcome
        card, card_store = found.result, found.store_id
        store_id = card_store
        customer = reason = None
        if card is None:
            kind = VisitKind.SUPPRESSED if reentry else VisitKind.UNKNOWN
        else:
            today = day_of(now, self.tz)  # a card's validity dates are the branch's calendar days
            reason = judge(
                card, self.branch_id, today, read_tid=arrival.tid, now=now, min_travel=self.min_travel
            )
            who = self._ask("customers", "find_customer", card.customer_no)
            if who.outcome is Outcome.WAIT:
                return Outcome.WAIT
            customer = who.result  # none answered: the visit goes out with the card
            store_id = who.store_id or store_id
            if reason in SUSPECT_REASONS:
                kind = VisitKind.SUSPECT  # security alerts are never suppressed
            elif reason is not None:
                kind = VisitKind.REJECTED
            else:
                kind = VisitKind.SUPPRESSED if reentry else VisitKind.GREETED
        tier = (customer.tier if customer else None) or (card.tier if card else None)
        visit = Visit(
            visit_id=visit_id or uuid.uuid4().hex,
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
            unresolved=visit_id is not None,
            resolved_at=now,
        )
        return visit, card_store

    def _unresolved(self, arrival: Arrival) -> Visit:
        return Visit(
            visit_id=uuid.uuid4().hex,
            branch_id=self.branch_id,
            kind=VisitKind.UNRESOLVED,
            arrival=arrival,
            arrived_at=self.clock.to_wall(arrival.arrived_mono),
            unresolved=True,
        )

    def _handle(self, arrivals: list[tuple[Arrival, bool]]) -> None:
        now = self.clock.wall()
        judged: list[tuple[Visit, str | None]] = []
        held: list[Held] = []
        queue_behind = any(h.waiting for h in self._held.values())
        for arrival, reentry in arrivals:
            # While an earlier arrival waits for a starting store, later ones wait behind it, so
            # staff are told in the order customers came in.
            outcome = Outcome.WAIT if queue_behind else self._judge(arrival, reentry, now)
            if isinstance(outcome, Outcome):
                queue_behind = queue_behind or outcome is Outcome.WAIT
                held.append(Held(self._unresolved(arrival), reentry, waiting=outcome is Outcome.WAIT))
            else:
                judged.append(outcome)
        self._counters["arrivals"] += len(arrivals)
        self._record([v for v, _ in judged] + [h.visit for h in held])
        for h in held:
            self._present[h.visit.arrival.epc] = h.visit.visit_id
            self._held[h.visit.visit_id] = h
        for visit, _ in judged:
            self._present[visit.arrival.epc] = visit.visit_id
        self._announce(judged)
        alerts = [h for h in held if not h.waiting]
        if alerts:
            self._alert_unresolved(alerts)

    def _judge_held(self) -> None:
        """Judge held arrivals again: those waiting for a starting store in arrival order (the first
        still waiting keeps the rest waiting), the unresolved ones when their backoff is over."""
        now, real = self.clock.wall(), time.monotonic()
        judged: list[tuple[Visit, str | None]] = []
        alerts: list[Held] = []
        gone: dict[str, float] = {}
        blocked = False
        for visit_id, h in list(self._held.items()):
            if h.waiting and blocked:
                continue
            if not h.waiting and real < h.next_try:
                continue
            reentry = self.presence.is_reentry(h.visit.arrival.epc, h.visit.arrival.arrived_mono)
            outcome = self._judge(h.visit.arrival, reentry, now, visit_id)
            if outcome is Outcome.WAIT:
                blocked = h.waiting
                continue
            if outcome is Outcome.NO_ANSWER:
                if h.waiting:  # the grace period is over: staff are told the card is unresolved
                    h.waiting = False
                    alerts.append(h)
                    if not h.present:
                        del self._held[visit_id]
                h.next_try = real + h.retry.failed()
                continue
            assert not isinstance(outcome, Outcome)
            del self._held[visit_id]
            judged.append(outcome)
            if h.departed is not None:
                gone[visit_id] = h.departed
        if alerts:
            self._alert_unresolved(alerts)
        if judged:
            self._counters["resolved_late"] += len(judged)
            self._record([v for v, _ in judged])
            self._announce(judged, gone)

    def _alert_unresolved(self, held: list[Held]) -> None:
        """Tell staff a card was seen that no identity store could judge (routing event
        ``unresolved``), once per arrival."""
        self._counters["unresolved"] += len(held)
        routed: list[Notification] = []
        for h in held:
            self.host.hook.vipsense_arrival_unresolved(visit=h.visit)
            routed += self._route(h.visit)
        if routed:
            self._dispatch(routed)

    def _announce(
        self, judged: list[tuple[Visit, str | None]], departed: dict[str, float] | None = None
    ) -> None:
        """After the visits are recorded: counters, broadcasts, routing, sightings, the audit trail.
        ``departed``: the last sighting of held visits whose card left before they were judged."""
        if not judged:
            return
        departed = departed or {}
        counters = self._counters
        routed: list[Notification] = []
        for visit, _ in judged:
            counters[visit.kind.value] += 1
            counters["stale"] += visit.stale
            if visit.kind in _QUIET:  # its departure starts the card's re-entry window
                self.presence.quiet(visit.arrival.epc, departed.get(visit.visit_id))
            spec = _BROADCAST.get(visit.kind)
            if spec:
                getattr(self.host.hook, spec.__name__)(visit=visit)
            routed += self._route(visit)
        if routed:
            self._dispatch(routed)
        self._sightings(judged)
        if self.audit is not None:
            shown = [v for v, _ in judged if v.kind in _SHOWN and v.customer is not None]
            if shown:
                self.audit(shown)

    def held(self) -> list[dict[str, Any]]:
        """Arrivals not judged yet, oldest first, for the status (any thread; a copy)."""
        return [
            {
                "visit_id": h.visit.visit_id,
                "epc": h.visit.arrival.epc,
                "reader_id": h.visit.arrival.reader_id,
                "arrived_at": h.visit.arrived_at,
                "state": "waiting" if h.waiting else "unresolved",
                "present": h.present,
            }
            for h in list(self._held.values())
        ]

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
        """Write any visits still waiting for the visit log, and the last sighting of every card still
        in the door zone, whose visit the next start continues (called once the pipeline stops)."""
        self.record_sightings()
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
                self._stages["routing"].fail(
                    Text(lazy_gettext("notifier {notifier} is not running"), notifier=via)
                )
                continue
            fallback = None
            if escalation is not None:
                fallback = Fallback(
                    now + self.clock.real(float(escalation.after)), escalation.to, escalation.via
                )
            out.append(
                Notification.of_visit(visit, person, via, now, visit.arrived_at + self.ttl, fallback=fallback)
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
