"""The console's live feed: door events from the pipeline, masked once, fanned out to every open
Server-Sent Events stream.

:class:`LiveFeed` is a plugin object on the branch's plugin host.  Its hooks run on the pipeline thread
(arrivals) or on whichever thread took an acknowledgement, so :meth:`LiveFeed.publish` formats the event
once and then only does a ``put_nowait`` per subscriber: a subscriber whose bounded queue is full is
dropped (its browser reconnects and gets a fresh snapshot) instead of slowing the door down.

Every event carries ``visit_id`` and ``arrived_unix`` (the wall-clock time of the arrival), so a
client can measure push latency; ID and mobile numbers are masked before anything is queued.

Each open stream holds a request thread, so one user cannot open more than ``web.streams.per_user``
and all together no more than ``web.max_streams``, below ``web.threads`` (pen test point 13): a
stream past a cap is refused (:class:`StreamRefused`).  A stream ends as soon as its session does
(logout, revocation, lifetime), checked before each event and at each keep-alive.  Security alerts
(:meth:`LiveFeed.alert`) go to the streams of viewers who receive them (the branch manager).
"""

from __future__ import annotations

import collections
import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs

import vipsense

from ..i18n import _
from ..model import Acknowledgement, Customer, Visit
from ..privacy import mask_id_number, mask_mobile, mask_personal_numbers

if TYPE_CHECKING:
    from ..branch import Branch

PLUGIN_NAME = "vipsense-web-live"
QUEUE_SIZE = 100  #: events a subscriber may lag behind before it is dropped
KEEPALIVE = 15.0  #: seconds between keep-alive comments (and session checks); inside a proxy's read timeout
REMEMBER = 2000  #: visits whose client manager is kept, to route their acknowledgements
RETRY_MS = 3000  #: the browser's reconnect delay

_CLOSE = object()  #: queued to wake a stream when the feed closes


def customer_dict(c: Customer | None) -> dict[str, Any] | None:
    """A customer as the console shows it: ID and mobile numbers masked, and so is any number of
    their shape typed into the free text (an ID number in the name field), the photo as a URL."""
    if c is None:
        return None
    return {
        "customer_no": c.customer_no,
        "name": mask_personal_numbers(c.name),
        "tier": c.tier,
        "company": mask_personal_numbers(c.company),
        "usual_business": mask_personal_numbers(c.usual_business),
        "id_number": mask_id_number(c.id_number),
        "mobile": mask_mobile(c.mobile),
        "client_manager": c.client_manager,
        "photo_url": f"/console/photo/{quote(c.customer_no, safe='')}",
    }


def visit_event(visit: Visit, told: list[str]) -> dict[str, Any]:
    """The masked event of one door visit (greeted, rejected, suspect or unresolved)."""
    customer = visit.customer
    return {
        "type": "arrival",
        "visit_id": visit.visit_id,
        "kind": visit.kind.value,
        "arrived_unix": visit.arrived_at,
        "tier": visit.tier,
        "reason": visit.reason.value if visit.reason else None,
        "customer_no": visit.card.customer_no if visit.card else None,
        "client_manager": customer.client_manager if customer else None,
        "customer": customer_dict(customer),
        "told": told,
        "acknowledged_by": [],
    }


def sse(event: str, data: str, event_id: int | None = None) -> str:
    """One SSE message; ``data`` is one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


class StreamRefused(Exception):
    """A stream past a cap: ``status`` 429 (this user's) or 503 (the server's), and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@attrs.define(eq=False)
class Subscriber:
    """One open stream: its queue and whether it may see an event (a client manager: their own)."""

    accept: Callable[[str | None], bool]
    queue: queue.Queue = attrs.Factory(lambda: queue.Queue(maxsize=QUEUE_SIZE))
    closed: bool = False
    dropped: bool = False
    user: str = ""  #: whose stream (the per-user cap)
    alerts: bool = False  #: receives security alerts
    #: whether its session is still on; the stream ends when it is not
    still_valid: Callable[[], bool] = lambda: True


class LiveFeed:
    """Door events of one branch for the console streams; ``close()`` ends every stream promptly."""

    def __init__(
        self, branch: Branch, keepalive: float = KEEPALIVE, per_user: int = 4, max_total: int = 32
    ) -> None:
        self.branch = branch
        self.keepalive = keepalive
        self.per_user = per_user
        self.max_total = max_total
        self.closed = False
        self.last_id = 0
        self.dropped = 0  #: subscribers dropped for lagging, since start
        self._subs: set[Subscriber] = set()
        self._lock = threading.Lock()
        #: visit id -> (client manager, arrived_unix), so acknowledgements reach the right viewers
        self._visits: collections.OrderedDict[str, tuple[str | None, float | None]] = (
            collections.OrderedDict()
        )
        branch.host.pm.register(self, name=PLUGIN_NAME)

    # -- hooks ------------------------------------------------------------------------------------

    @vipsense.hookimpl
    def vipsense_arrival(self, visit: Visit) -> None:
        self._visit(visit)

    @vipsense.hookimpl
    def vipsense_card_rejected(self, visit: Visit) -> None:
        self._visit(visit)

    @vipsense.hookimpl
    def vipsense_card_suspect(self, visit: Visit) -> None:
        self._visit(visit)

    @vipsense.hookimpl
    def vipsense_arrival_unresolved(self, visit: Visit) -> None:
        self._visit(visit)  # when a store answers, the same visit id comes again with its verdict

    @vipsense.hookimpl
    def vipsense_acknowledged(self, ack: Acknowledgement) -> None:
        manager, arrived = self._visits.get(ack.visit_id, (None, None))
        event = {
            "type": "acknowledged",
            "visit_id": ack.visit_id,
            "arrived_unix": arrived,
            "staff_id": ack.staff_id,
            "acknowledged_unix": ack.at,
            "via": ack.via,
            "client_manager": manager,
        }
        self.publish("acknowledged", event, manager)

    def _visit(self, visit: Visit) -> None:
        if not self._subs:
            self.remember(visit.visit_id, _manager(visit), visit.arrived_at)
            return  # nobody is watching: skip routing and JSON
        told = sorted({person.id for person, _, _ in self.branch.pipeline.router.route(visit)})
        event = visit_event(visit, told)
        self.remember(visit.visit_id, event["client_manager"], visit.arrived_at)
        self.publish("arrival", event, event["client_manager"])

    # -- fan-out ----------------------------------------------------------------------------------

    def remember(self, visit_id: str, client_manager: str | None, arrived_unix: float | None) -> None:
        """Note whose customer a visit was (from an arrival, or a snapshot read from the visit log)."""
        with self._lock:
            self._visits[visit_id] = (client_manager, arrived_unix)
            self._visits.move_to_end(visit_id)
            while len(self._visits) > REMEMBER:
                self._visits.popitem(last=False)

    def publish(self, name: str, event: dict[str, Any], client_manager: str | None) -> int:
        """Queue ``event`` for every subscriber allowed to see it, without ever blocking; returns the
        event's id."""
        with self._lock:
            self.last_id += 1
            event_id = self.last_id
            subs = list(self._subs)
        event["id"] = event_id
        event["sent_unix"] = time.time()
        message = sse(name, json.dumps(event, ensure_ascii=False, separators=(",", ":")), event_id)
        for sub in subs:
            if sub.closed or not sub.accept(client_manager):
                continue
            try:
                sub.queue.put_nowait(message)
            except queue.Full:
                self._drop(sub)
        return event_id

    def _drop(self, sub: Subscriber) -> None:
        sub.closed = sub.dropped = True
        with self._lock:
            if sub in self._subs:
                self._subs.discard(sub)
                self.dropped += 1

    def alert(self, event: dict[str, Any]) -> int:
        """Queue a security alert for the streams that receive alerts; returns how many."""
        with self._lock:
            self.last_id += 1
            event_id = self.last_id
            subs = [s for s in self._subs if s.alerts and not s.closed]
        event["id"] = event_id
        event["sent_unix"] = time.time()
        message = sse("alert", json.dumps(event, ensure_ascii=False, separators=(",", ":")), event_id)
        for sub in subs:
            try:
                sub.queue.put_nowait(message)
            except queue.Full:
                self._drop(sub)
        return len(subs)

    def subscribe(
        self,
        accept: Callable[[str | None], bool],
        user: str = "",
        alerts: bool = False,
        still_valid: Callable[[], bool] | None = None,
    ) -> Subscriber:
        """A new stream for ``user``; :class:`StreamRefused` past a cap."""
        sub = Subscriber(accept, user=user, alerts=alerts, still_valid=still_valid or (lambda: True))
        with self._lock:
            if self.closed:
                sub.closed = True
                return sub
            if len(self._subs) >= self.max_total:
                raise StreamRefused(
                    503,
                    _(
                        "the branch web has {n} live streams open, the most it serves; try again in a minute"
                    ).format(n=len(self._subs)),
                )
            mine = sum(1 for s in self._subs if s.user == user)
            if user and mine >= self.per_user:
                raise StreamRefused(
                    429,
                    _(
                        "{user} has {n} live streams open already, the most for one person;"
                        " close a console tab or window"
                    ).format(user=user, n=mine),
                )
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.closed = True
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def stream(self, sub: Subscriber, snapshot: dict[str, Any]) -> Iterator[str]:
        """The body of one SSE response: a comment (headers flush), the snapshot, then events with
        keep-alives, until the feed closes, the subscriber is dropped or the client goes."""
        try:
            yield f": connected\nretry: {RETRY_MS}\n\n"
            data = json.dumps(snapshot, ensure_ascii=False, separators=(",", ":"))
            yield sse("snapshot", data, snapshot.get("last_id"))
            while not sub.closed:
                try:
                    item = sub.queue.get(timeout=self.keepalive)
                except queue.Empty:
                    item = ": keep-alive\n\n"
                if item is _CLOSE:
                    break
                if not sub.still_valid():  # logged out, revoked or too old: nothing more goes out
                    yield sse("ended", '{"reason":"session"}')
                    break
                yield item
        finally:
            self.unsubscribe(sub)

    def close(self) -> None:
        """End every open stream (server stop) and stop listening to the branch."""
        with self._lock:
            self.closed = True
            subs = list(self._subs)
            self._subs.clear()
        for sub in subs:
            sub.closed = True
            with contextlib.suppress(queue.Full):
                sub.queue.put_nowait(_CLOSE)
        with contextlib.suppress(Exception):
            self.branch.host.pm.unregister(self)


def _manager(visit: Visit) -> str | None:
    return visit.customer.client_manager if visit.customer else None
