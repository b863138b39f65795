"""Runners that keep each reader, store and notifier in its own thread, so one failing or slow device
degrades itself and never the branch."""

from __future__ import annotations

import concurrent.futures as cf
import enum
import heapq
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from .api import DeliveryFailed, IdentityStore, Notifier, Reader, ReaderContext, ReaderStatus
from .backoff import Backoff, doubled
from .clock import Clock
from .errors import describe
from .i18n import lazy_gettext
from .model import CANONICAL_EPC, DeliveryResult, DeliveryState, Notification, TagRead, normalise_epc
from .states import DeviceState
from .status import DeviceStatus, Stats
from .texts import Text

log = logging.getLogger(__name__)

BACKOFF_START = 0.1
BACKOFF_CAP = 1.6  #: seconds (0.1 doubled four times); a device that comes back is read again within 2 s
#: a notifier's status counters: gauges (pending, retrying) and totals since start
NOTIFIER_COUNTERS = ("pending", "retrying", "retries", "delivered", "failed", "expired")
#: a store's last error when a look-up skips it (made once: every arrival may say it)
SKIPPED_NOT_OPEN = Text(lazy_gettext("skipped: the store is not open"))
SKIPPED_BUSY = Text(lazy_gettext("skipped: an earlier call is still running"))


class ReaderRunner:
    """Runs ``reader.run`` on a thread; when it raises, reports the reason and retries with a capped
    exponential backoff."""

    def __init__(
        self,
        reader_id: str,
        reader: Reader,
        clock: Clock,
        emit: Callable[[TagRead], None],
        status: DeviceStatus,
        on_state: Callable[[str, ReaderStatus], None],
    ) -> None:
        self.reader_id = reader_id
        self.reader = reader
        self.status = status
        self.stop_event = threading.Event()
        self._on_state = on_state
        self._backoff = Backoff(BACKOFF_START, BACKOFF_CAP)
        self.ctx = ReaderContext(
            reader_id,
            clock,
            self._counted(emit),
            self._set_state,
            self.stop_event,
            logging.getLogger(f"vipsense.reader.{reader_id}"),
            status.counters,
        )
        self.thread = threading.Thread(target=self._main, name=f"reader:{reader_id}", daemon=True)

    def _counted(self, emit: Callable[[TagRead], None]) -> Callable[[TagRead], None]:
        """``emit``, with the EPC normalised once for every driver (:func:`normalise_epc`), counting
        this reader's reads and the time of the last for its status.  A read whose EPC cannot be one
        is counted as ``bad_epc`` and never reaches presence, so it never becomes a visit."""
        status, now, canonical = self.status, time.time, CANONICAL_EPC.fullmatch

        def counted(read: TagRead) -> None:
            if not (type(read.epc) is str and canonical(read.epc)):
                epc = normalise_epc(read.epc)
                if epc is None:
                    self._bad_epc(read.epc)
                    return
                read = attrs.evolve(read, epc=epc)
            status.reads += 1
            status.last_read_at = now()
            emit(read)

        return counted

    def _bad_epc(self, epc: object) -> None:
        counters = self.status.counters
        counters["bad_epc"] = counters.get("bad_epc", 0) + 1
        if counters["bad_epc"] == 1:  # once: a reader spewing garbage must not flood the log
            shown = repr(epc)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            log.warning(
                "reader %s reported an EPC that is not one (%s): counted as bad_epc, never a visit",
                self.reader_id,
                shown,
            )

    def _set_state(self, state: DeviceState, reason: str = "") -> None:
        if state is DeviceState.CONNECTED:
            self._backoff.succeeded()
            if self.status.state == DeviceState.DISCONNECTED:
                log.warning("reader %s connected again: %s", self.reader_id, reason)
        if self.status.set(state, reason):
            self._on_state(self.reader_id, ReaderStatus(state, reason, self.status.since))

    @property
    def finished(self) -> bool:
        return self.status.state in (DeviceState.FINISHED, DeviceState.FAILED)

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.reader.run(self.ctx)
            except Exception as exc:
                if self.stop_event.is_set():
                    break
                reason = describe(exc)
                self.status.stats.fail(reason)
                if (self.status.state, self.status.reason) != (DeviceState.DISCONNECTED, reason):
                    # log changes only: a reader that stays away would otherwise log every retry
                    log.warning("reader %s disconnected: %s (retrying)", self.reader_id, reason)
                self._set_state(DeviceState.DISCONNECTED, reason)
                if self.stop_event.wait(self._backoff.failed()):
                    break
                continue
            if not self.stop_event.is_set():
                self._set_state(DeviceState.FINISHED, Text(lazy_gettext("replay complete")))
                return
        self._set_state(DeviceState.STOPPED)

    def stop(self) -> None:
        self.stop_event.set()
        try:
            self.reader.interrupt()
        except Exception as exc:
            log.warning("reader %s: interrupt failed: %s", self.reader_id, describe(exc))

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception as exc:
            log.warning("reader %s: close failed: %s", self.reader_id, describe(exc))


class Reply(enum.Enum):
    """How one store met one look-up."""

    ANSWERED = "answered"  #: the result is the store's answer (``None``: it does not know the key)
    STARTING = "starting"  #: still opening, inside its start-up grace period: ask again soon
    NO_ANSWER = "no_answer"  #: failed, timed out, stuck behind an earlier call, or not open


class StoreRunner:
    """Calls one identity store on its own worker thread and never waits longer than ``timeout``.

    Opening happens on that thread too, retried with a capped backoff until it succeeds.  Until it
    does, look-ups never queue behind it: they get :attr:`Reply.STARTING` at once while the start-up
    ``grace`` lasts (the pipeline holds arrivals for the store), :attr:`Reply.NO_ANSWER` after.

    A call that outlives ``timeout`` leaves the store ``stuck``: later look-ups skip it at once
    (not answered, never "not found") until that call returns, when its late answer is discarded
    and the store is used again.
    """

    def __init__(
        self, store_id: str, store: IdentityStore, timeout: float, status: DeviceStatus, grace: float = 10.0
    ) -> None:
        self.store_id = store_id
        self.store = store
        self.timeout = timeout
        self.grace = grace  #: seconds after open() during which arrivals wait for this store
        self.status = status
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store:{store_id}")
        self._lock = threading.Lock()  #: the door and the web both look up
        self._opened = threading.Event()
        self._opening = False
        self._closing = threading.Event()
        self._grace_until = 0.0  #: time.monotonic(); 0 until open() is called
        self._grace_timer: threading.Timer | None = None
        self._stuck: cf.Future | None = None
        self._stuck_since = 0.0
        self.records_sightings = bool(store.records_sightings)  #: else sightings are not even queued

    # -- opening ----------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    @property
    def in_grace(self) -> bool:
        """Still inside the start-up grace period and not open yet: arrivals wait for this store."""
        return not self._opened.is_set() and time.monotonic() < self._grace_until

    def open(self) -> None:
        """Start opening in the background, so the first arrival does not pay for it; arrivals that
        need this store meanwhile wait up to ``grace`` seconds."""
        self._grace_until = time.monotonic() + self.grace
        self.status.set(
            DeviceState.STARTING,
            Text(lazy_gettext("opening; arrivals wait for it up to {seconds} s"), seconds=f"{self.grace:g}"),
        )
        self._grace_timer = threading.Timer(self.grace, self._grace_over)
        self._grace_timer.daemon = True
        self._grace_timer.start()
        with self._lock:
            if self._opening or self._opened.is_set():
                return
            self._opening = True
        self._pool.submit(self._open_until_done)

    def wait_open(self, timeout: float) -> bool:
        """Block until the store is open (True) or ``timeout`` seconds pass (False)."""
        return self._opened.wait(timeout)

    def _open_until_done(self) -> None:
        backoff = Backoff(BACKOFF_START, BACKOFF_CAP)
        while not self._closing.is_set():
            try:
                self.store.open()
            except Exception as exc:
                reason = describe(exc)
                self.status.stats.fail(Text(lazy_gettext("open: {reason}"), reason=reason))
                if self.in_grace:
                    self.status.set(
                        DeviceState.STARTING,
                        Text(
                            lazy_gettext("opening (last attempt: {reason}); arrivals wait for it"),
                            reason=reason,
                        ),
                    )
                elif self.status.set(
                    DeviceState.UNAVAILABLE, Text(lazy_gettext("cannot open: {reason}"), reason=reason)
                ):
                    log.error("store %s cannot open (retrying): %s", self.store_id, reason)
                if self._closing.wait(backoff.failed()):
                    break
                continue
            if self._closing.is_set():  # the branch stopped while the store was opening
                self.store.close()
                break
            self._opened.set()
            self._health()
            break
        with self._lock:
            self._opening = False

    def _grace_over(self) -> None:
        """The grace period ended with the store still not open: arrivals stop waiting for it."""
        if self._opened.is_set() or self._closing.is_set():
            return
        if self.status.state is DeviceState.STARTING:
            self.status.set(
                DeviceState.STARTING,
                Text(
                    lazy_gettext(
                        "still opening after {seconds} s: arrivals are judged without it until it opens"
                    ),
                    seconds=f"{self.grace:g}",
                ),
            )
            log.warning("store %s is still opening after its %g s grace period", self.store_id, self.grace)

    # -- look-ups ---------------------------------------------------------------------------------

    def lookup(self, method: str, arg: str) -> tuple[Reply, Any]:
        """Ask the store, waiting at most ``timeout``.  ``(Reply.ANSWERED, result)`` or a reply that
        says why there is no answer (the result is then ``None``)."""
        if not self._opened.is_set():
            if self.in_grace:
                return Reply.STARTING, None
            self.status.stats.fail(SKIPPED_NOT_OPEN)
            return Reply.NO_ANSWER, None
        with self._lock:
            if self._stuck is not None:
                self.status.stats.fail(SKIPPED_BUSY)
                return Reply.NO_ANSWER, None
        t0 = time.perf_counter()
        fut = self._pool.submit(getattr(self.store, method), arg)
        try:
            result = fut.result(self.timeout)
        except Exception as exc:
            if not fut.done():  # our wait timed out; the call itself is still running
                self._stuck_call(fut)
                return Reply.NO_ANSWER, None
            self.status.stats.fail(describe(exc))
            if self.status.set(DeviceState.UNAVAILABLE, describe(exc)):  # log changes, not every lookup
                log.warning("store %s unavailable: %s", self.store_id, describe(exc))
            return Reply.NO_ANSWER, None
        self.status.stats.ok(time.perf_counter() - t0)
        self._health()
        return Reply.ANSWERED, result

    def _stuck_call(self, fut: cf.Future) -> None:
        ms = f"{self.timeout * 1000:.0f} ms"
        with self._lock:
            self._stuck, self._stuck_since = fut, time.monotonic()
        self.status.stats.fail(Text(lazy_gettext("timed out after {ms}"), ms=ms))
        if self.status.set(
            DeviceState.STUCK,
            Text(
                lazy_gettext("a call has not returned after {ms}; look-ups skip this store until it does"),
                ms=ms,
            ),
        ):
            log.warning("store %s is stuck: a call has not returned after %s", self.store_id, ms)
        fut.add_done_callback(self._unstuck)  # runs at once if the call finished meanwhile

    def _unstuck(self, fut: cf.Future) -> None:
        """The stuck call returned (on the worker thread): its answer is abandoned, the store used again."""
        with self._lock:
            if self._stuck is not fut:
                return
            self._stuck = None
            took = time.monotonic() - self._stuck_since
        if self._closing.is_set():
            return
        log.warning(
            "store %s: a call that timed out returned after %.1f s more; its answer was discarded",
            self.store_id,
            took,
        )
        self._health()

    def _health(self) -> None:
        """After an answer: ``ready``, or ``degraded`` with the store's own reason (e.g. serving a
        stale cache).  Changes are logged, not every lookup."""
        try:
            reason = self.store.degraded()
        except Exception as exc:
            reason = Text(lazy_gettext("degraded() raised {error}"), error=describe(exc))
        previous = self.status.state
        if not self.status.set(DeviceState.DEGRADED if reason else DeviceState.READY, reason):
            return
        if reason:
            log.warning("store %s degraded: %s", self.store_id, reason)
        elif previous is not DeviceState.STARTING:
            log.warning("store %s is available again", self.store_id)

    def cards_seen(self, sightings: list[tuple[str, str, float]]) -> None:
        """Record ``(epc, branch_id, at)`` sightings on the store's own thread without waiting.
        Skipped for stores that do not record them, and while the store is unavailable or stuck, so
        a dead store costs nothing."""
        if not self.records_sightings or self.status.state not in (DeviceState.READY, DeviceState.DEGRADED):
            return
        if self._stuck is not None or not self._opened.is_set():
            return
        self._pool.submit(self._seen, sightings)

    def _seen(self, sightings: list[tuple[str, str, float]]) -> None:
        try:
            self.store.cards_seen(sightings)
        except Exception as exc:
            self.status.stats.fail(Text(lazy_gettext("recording a sighting: {error}"), error=describe(exc)))

    def close(self) -> None:
        self._closing.set()
        if self._grace_timer is not None:
            self._grace_timer.cancel()

        def _close() -> None:
            if self._opened.is_set():
                self.store.close()

        fut = self._pool.submit(_close)
        try:
            fut.result(self.timeout)
        except Exception as exc:
            log.warning("store %s: close failed: %s", self.store_id, describe(exc))
        self._pool.shutdown(wait=False, cancel_futures=True)


class NotifierRunner:
    """Delivers notifications on the notifier's own thread, so a slow channel delays only itself.

    A failed attempt is retried after a capped exponential backoff (``retry.first`` doubling up to
    ``retry.max``) without blocking the queue: while one recipient's notification waits for its
    retry, the thread goes on with everyone else's.  ``DeliveryFailed(retry=False)`` fails a
    notification at once; a notification past its ``expires_at`` is expired, never sent late.
    """

    def __init__(
        self,
        notifier_id: str,
        notifier: Notifier,
        clock: Clock,
        status: DeviceStatus,
        on_result: Callable[[Notification, DeliveryResult], None],
        stage: Stats,
        retry_first: float = 1.0,
        retry_max: float = 15.0,
        skip: Callable[[str], bool] = lambda key: False,
    ) -> None:
        #: true for a key its recipient acknowledged already (through another notifier): not sent
        self.skip = skip
        self.stage = stage  #: the branch-wide "notify" stage, shared by every notifier
        self.notifier_id = notifier_id
        self.notifier = notifier
        self.clock = clock
        self.status = status
        self.retry_first = retry_first
        self.retry_max = retry_max
        self._on_result = on_result
        status.details = notifier.health
        #: pending = queued + waiting for a retry; written by this runner's thread only
        status.counters.update(dict.fromkeys(NOTIFIER_COUNTERS, 0))
        self._queue: queue.SimpleQueue[tuple[Notification, int] | None] = queue.SimpleQueue()
        #: (due on time.monotonic, seq, notification, attempts made, last error): a heap, next due first
        self._retries: list[tuple[float, int, Notification, int, str]] = []
        self._seq = 0
        self._closing = threading.Event()
        self.thread = threading.Thread(target=self._main, name=f"notifier:{notifier_id}", daemon=True)

    def start(self) -> None:
        self.status.set(DeviceState.READY)
        self.thread.start()

    def put(self, notification: Notification, attempts: int = 0) -> None:
        """Queue a notification; ``attempts`` already made (by an earlier run) count for the backoff."""
        self._queue.put((notification, attempts))

    def _main(self) -> None:
        get = self._queue.get
        while not self._closing.is_set():
            timeout = None
            if self._retries:
                timeout = max(0.0, self._retries[0][0] - time.monotonic())
            try:
                item = get(timeout=timeout)
            except queue.Empty:
                pass  # a retry is due
            else:
                if item is None:
                    return
                self._deliver(*item)
            self._due()
            self._gauge()

    def _due(self) -> None:
        """Retry every notification whose backoff is over."""
        now = time.monotonic()
        while self._retries and self._retries[0][0] <= now and not self._closing.is_set():
            _, _, n, attempts, error = heapq.heappop(self._retries)
            self._deliver(n, attempts, error)

    def _gauge(self) -> None:
        c = self.status.counters
        c["retrying"] = len(self._retries)
        c["pending"] = self._queue.qsize() + len(self._retries)

    def _deliver(self, n: Notification, attempts: int, error: str = "") -> None:
        now = self.clock.wall()
        attempt = attempts + 1
        if self.skip(n.key):  # seen on another device already; the outbox row says acknowledged
            self.status.counters["skipped"] = self.status.counters.get("skipped", 0) + 1
            return
        if now >= n.expires_at:
            self.status.counters["expired"] += 1
            self._on_result(
                n,
                DeliveryResult(
                    n.key,
                    self.notifier_id,
                    DeliveryState.EXPIRED,
                    now,
                    Text(lazy_gettext("customer has probably left; last error: {error}"), error=error)
                    if error
                    else Text(lazy_gettext("customer has probably left")),
                    attempts,
                ),
            )
            return
        latency = self.clock.real(self.clock.mono() - n.visit.arrival.arrived_mono)
        try:
            result = self.notifier.send(n)
        except Exception as exc:
            reason = describe(exc)
            self.status.stats.fail(reason)
            self.stage.fail(f"{self.notifier_id}: {reason}")
            if isinstance(exc, DeliveryFailed) and not exc.retry:
                log.warning("notifier %s failed for good: %s", self.notifier_id, reason)
                self._fail(n, reason, attempt)
            else:
                if attempt == 1:  # once per notification, not once per retry
                    log.warning("notifier %s failed (retrying): %s", self.notifier_id, reason)
                # a failure a retry may mend is the channel's (modem, network, device away):
                # the device shows it until the next delivery goes through
                self.status.set(DeviceState.DEGRADED, reason)
                self._retry(n, reason, attempt)
            return
        if result is not None and result.state is DeliveryState.RETRYING:
            self._retry(n, result.detail, attempt)
            return
        if result is not None and result.state is DeliveryState.FAILED:
            self._fail(n, result.detail, attempt)
            return
        self.status.stats.ok(latency)
        self.stage.ok(latency)
        self.status.counters["delivered"] += 1
        if self.status.state is not DeviceState.READY:
            self.status.set(DeviceState.READY)
        if result is None:
            result = DeliveryResult(
                n.key, self.notifier_id, DeliveryState.DELIVERED, self.clock.wall(), attempt=attempt
            )
        elif result.attempt != attempt:
            result = attrs.evolve(result, attempt=attempt)
        self._on_result(n, result)

    def _fail(self, n: Notification, reason: str, attempt: int) -> None:
        self.status.counters["failed"] += 1
        self._on_result(
            n,
            DeliveryResult(n.key, self.notifier_id, DeliveryState.FAILED, self.clock.wall(), reason, attempt),
        )

    def _retry(self, n: Notification, reason: str, attempt: int) -> None:
        # Backoff in real seconds (the channel's time), but never past the TTL (the branch's time).
        delay = doubled(self.retry_first, self.retry_max, attempt)
        until_expiry = max(0.0, n.expires_at - self.clock.wall())
        due = time.monotonic() + min(delay, until_expiry + 0.001)  # just past it: then it expires
        self._seq += 1
        heapq.heappush(self._retries, (due, self._seq, n, attempt, reason))
        self.status.counters["retries"] += 1
        self._on_result(
            n,
            DeliveryResult(
                n.key, self.notifier_id, DeliveryState.RETRYING, self.clock.wall(), reason, attempt
            ),
        )

    def close(self, timeout: float) -> None:
        """Deliver what is queued (up to ``timeout`` seconds), then close the notifier.  Retries still
        waiting, and anything not reached in time, stay open in the outbox for the next start."""
        self._queue.put(None)
        if self.thread.ident is not None:  # a branch stopped before it started never ran it
            self.thread.join(timeout)
        self._closing.set()
        try:
            self.notifier.close()
        except Exception as exc:
            log.warning("notifier %s: close failed: %s", self.notifier_id, describe(exc))
