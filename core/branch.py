"""A running branch: builds every device a profile names, wires them to the pipeline, and stops them
all within two seconds with every recorded visit flushed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from . import i18n
from .api import ReaderStatus
from .clock import Clock
from .config.profile import DEFAULT_START_GRACE, DEFAULT_STORE_TIMEOUT, ItemConfig, Profile
from .devices import NotifierRunner, ReaderRunner, StoreRunner
from .errors import describe
from .files import secure_tree
from .i18n import lazy_gettext
from .model import Acknowledgement, DeliveryResult, DeliveryState, Notification, parse_notification_key
from .output import Output
from .pipeline.arrivals import Pipeline
from .pipeline.escalation import Escalator
from .pluginhost import Kind, PluginHost
from .states import DeviceState
from .status import BranchStatus
from .storage.audit import open_audit_log
from .storage.auditwriter import AuditWriter
from .storage.outbox import Outbox, OutboxWriter
from .storage.visitlog import VisitLog
from .texts import Text

log = logging.getLogger(__name__)

STOP_BUDGET = 2.0  #: seconds from stop() to everything closed
PURGE_EVERY = 86400.0  #: seconds between retention purges while running
RETENTION_ACTOR = "system:retention"
RESPONSES_EVERY = 1.0  #: seconds the status object's response times are reused
SHIP_LAST = 0.5  #: seconds of the stop budget the last report to the centre may take at most


class Branch:
    """The devices of one profile, wired to the pipeline.  Starting one makes its ``branch.locale`` the
    process's language (what it sends its staff is in theirs); a profile without one leaves the
    process's language as it was."""

    def __init__(
        self,
        profile: Profile,
        host: PluginHost,
        clock: Clock | None = None,
        output: Output | None = None,
    ) -> None:
        self.profile = profile
        self.host = host
        self.clock = clock or Clock()
        self.output = output or Output()
        self.status = BranchStatus(profile.branch.id, profile.branch.name)
        self.status.host = host
        self.data_dir = profile.data_dir
        secure_tree(self.data_dir)  # personal data: owner-only, whatever an earlier run or copy left
        self.visit_log = VisitLog(self.data_dir / "visits.sqlite3")
        # the profile's audit key and anchors (docs/audit.md); every anchor goes to the observers
        self.audit = open_audit_log(
            profile, on_anchor=lambda anchor: host.hook.vipsense_audit_anchor(anchor=anchor)
        )
        self.audit_writer = AuditWriter(self.audit, self.status.storage)
        self.outbox = Outbox(self.data_dir / "outbox.sqlite3")
        self.status.responses = self._responses
        self._responses_cache: tuple[float, dict[str, Any]] = (0.0, {})
        self._stop = threading.Event()
        #: keys acknowledged in this run: a notifier still holding one skips it
        self.acknowledged: set[str] = set()
        self._started = False

        self.stores = [
            StoreRunner(
                cfg.id,
                obj,
                float(cfg.timeout or DEFAULT_STORE_TIMEOUT),
                self.status.devices[cfg.id],
                grace=float(cfg.start_grace or DEFAULT_START_GRACE),
            )
            for cfg, obj in self._build(Kind.STORE, profile.stores)
        ]
        self.notifiers = {
            cfg.id: NotifierRunner(
                cfg.id,
                obj,
                self.clock,
                self.status.devices[cfg.id],
                self._delivered,
                self.status.stages["notify"],
                retry_first=float(cfg.retry.first),
                retry_max=float(cfg.retry.max),
                skip=self.acknowledged.__contains__,
            )
            for cfg, obj in self._build(Kind.NOTIFIER, profile.notifiers)
        }
        self.outbox_writer = OutboxWriter(self.outbox, self._dispatch, self.status.stages["outbox"])
        self.pipeline = Pipeline(
            profile,
            host,
            self.clock,
            self.status,
            self.stores,
            self.notifiers,
            self.visit_log,
            audit=self.audit_writer.put,
            outbox=self.outbox_writer,
        )
        self.status.held = self.pipeline.held
        self.outbox_writer.escalate = Escalator(
            self.outbox, self.pipeline.router, self.clock, self.notifiers.keys()
        ).run
        self.readers = [
            ReaderRunner(
                cfg.id, obj, self.clock, self.pipeline.submit, self.status.devices[cfg.id], self._reader_state
            )
            for cfg, obj in self._build(Kind.READER, profile.readers)
        ]
        self._pipeline_thread = threading.Thread(
            target=self.pipeline.run, args=(self._stop,), name="pipeline", daemon=True
        )
        self._chores = threading.Thread(target=self._chores_loop, name="chores", daemon=True)
        #: reports to the centre (``centre:``): a :class:`vipsense.uplink.shipper.Shipper`, or None
        self.shipper: Any = None
        self._audit_head: Any = None
        self._build_shipper()

    def _build(self, kind: Kind, items: tuple[ItemConfig, ...]) -> list[tuple[ItemConfig, Any]]:
        """Call each item's factory.  One that fails leaves its device failed; the rest go on."""
        built = []
        for cfg in items:
            dev = self.status.device(cfg.id, kind.value, cfg.type)
            ptype = self.host.types[kind][cfg.type]
            try:
                built.append(
                    (
                        cfg,
                        ptype.factory(
                            cfg.settings,
                            self.profile.plugin_context(
                                cfg,
                                self.clock,
                                self.output,
                                self._delivered,
                                self._acknowledger(cfg.id),
                            ),
                        ),
                    )
                )
            except Exception as exc:
                reason = describe(exc)
                dev.set(DeviceState.FAILED, reason)
                dev.stats.fail(reason)
                log.error("%s %s (plugin %s) failed to start: %s", kind.value, cfg.id, ptype.plugin, reason)
        return built

    def _build_shipper(self) -> None:
        """The shipper of ``centre:`` (an optional section); a transport that fails to build leaves the
        centre's status ``failed`` with the reason, and the branch greets as ever."""
        link = getattr(self.profile, "centre", None)
        if link is None:
            return
        from .uplink.build import build_shipper
        from .uplink.shipper import centre_line

        try:
            self.shipper, self._audit_head = build_shipper(
                link,
                self.host,
                self.status,
                self.profile.branch.id,
                self.data_dir,
                self.profile.source.parent,
                self.audit.path,
                self.profile.tz,
            )
        except Exception as exc:
            reason = describe(exc)
            log.error("uplink %s failed to start: %s", link.transport, reason)
            failed = {"state": "failed", "url": link.url, "error": reason, "reason": reason}
            self.status.centre = lambda: {**failed, "text": centre_line(failed)}
            return
        self.shipper.wall = self.clock.wall  # batches carry the clock the visits were recorded by
        self.status.centre = self.shipper.snapshot

    # -- callbacks from device threads ------------------------------------------------------------

    def _reader_state(self, reader_id: str, status: ReaderStatus) -> None:
        self.pipeline.reader_state(reader_id, status)

    def _delivered(self, notification: Notification, result: DeliveryResult) -> None:
        """Every attempt's result, and results notifiers report later."""
        if result.state is DeliveryState.ACKNOWLEDGED:
            self.acknowledge(notification.key, notification.recipient.id, result.at, result.notifier_id)
        else:
            if result.state is DeliveryState.EXPIRED:
                self.status.devices[result.notifier_id].stats.fail(
                    Text(lazy_gettext("expired before delivery: {detail}"), detail=result.detail)
                )
                log.warning(
                    "notifier %s: a notification for %s expired undelivered: %s",
                    result.notifier_id,
                    notification.recipient.id,
                    result.detail,
                )
            self.outbox.result(notification, result)
        self.host.hook.vipsense_delivery_result(notification=notification, result=result)

    def _acknowledger(self, via: str) -> Callable[..., bool]:
        def acknowledge(key: str, staff_id: str, at: float | None = None) -> bool:
            return self.acknowledge(key, staff_id, at, via)

        return acknowledge

    def acknowledge(self, key: str, staff_id: str, at: float | None = None, via: str = "") -> bool:
        """``staff_id`` saw the notification ``key`` (:func:`~vipsense.model.notification_key`):
        recorded in the outbox (response times; no more retries, pager texts or escalation for it)
        and on the visit, unless it was the alert for an unresolved arrival (the greeting that follows
        is what the visit's acknowledgement means).  Any thread.  False when the key is not that
        member of staff's, or unknown here.  A repeated acknowledgement is True and changes nothing."""
        visit_id, recipient, unresolved_alert = parse_notification_key(key)
        if not visit_id or recipient != staff_id:
            return False
        when = self.clock.wall() if at is None else float(at)
        try:
            known, first = self.outbox.acknowledge(key, when)
        except Exception as exc:
            log.error("outbox: cannot record an acknowledgement of %s: %s", key, exc)
            return False
        if not known:
            return False
        self.acknowledged.add(key)
        if first:
            ack = Acknowledgement(key, visit_id, staff_id, when, via)
            if not unresolved_alert:
                self.pipeline.acknowledged(ack)
            self.status.counters["acknowledged"] += 1
            self.host.hook.vipsense_acknowledged(ack=ack)
        return True

    def _dispatch(self, notification: Notification) -> None:
        """From the outbox writer, once the notification is stored."""
        self.notifiers[notification.notifier_id].put(notification)

    def _restore_outbox(self) -> int:
        """Queue again what an earlier run left undelivered (expired ones are recorded as such by
        their notifier, never sent).  Returns how many were queued."""
        pending, broken = self.outbox.pending(self.clock, {s.id: s for s in self.profile.staff})
        configured = {n.id for n in self.profile.notifiers}
        queued = 0
        for p in pending:
            runner = self.notifiers.get(p.notification.notifier_id)
            if runner is not None:
                runner.put(p.notification, p.attempts)
                queued += 1
            elif p.notification.notifier_id not in configured:
                why = Text(
                    lazy_gettext("notifier {notifier} is no longer in the profile"),
                    notifier=repr(p.notification.notifier_id),
                )
                broken.append((p.notification.notifier_id, p.notification.key, why))
            # else: its factory failed this time; the row stays open for a later start
        if broken:
            log.error("outbox: %d notifications cannot be sent any more: %s", len(broken), broken[0][2])
            self.outbox.close_rows(broken, DeliveryState.FAILED, self.clock.wall())
        if queued:
            log.warning("outbox: %d notifications left by the last run are queued again", queued)
        return queued

    def _responses(self) -> dict[str, Any]:
        """Today's response times per member of staff, for the status object (at most one outbox
        query per second, however often the status page is read)."""
        from .pipeline.response_times import per_staff
        from .timezone import day_bounds, day_of

        at, cached = self._responses_cache
        if time.monotonic() - at < RESPONSES_EVERY:
            return cached
        since, _ = day_bounds(day_of(self.clock.wall(), self.profile.tz), self.profile.tz)
        staff = per_staff(self.outbox.response_times(since, self.clock.wall()))
        result = {k: r.as_dict() for k, r in staff.items()}
        self._responses_cache = (time.monotonic(), result)
        return result

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self.profile.branch.locale:
            # from here on what the branch sends (PDA, SMS, console texts) is in its staff's language;
            # unset, the process keeps its own (LANG for vipsense run).  Not while building: a profile
            # that cannot start is the command line's error, in the language of whoever ran it.
            i18n.set_default(self.profile.branch.locale)
        #: cards at the door when the last run stopped, and greetings whose window still runs
        self.restored = self.pipeline.restore()
        #: notifications an earlier run left undelivered, queued again
        self.resent = self._restore_outbox()
        for store in self.stores:
            store.open()
        for notifier in self.notifiers.values():
            notifier.start()
        self.outbox_writer.start()
        self._pipeline_thread.start()
        for reader in self.readers:
            reader.start()
        self._chores.start()
        if self.shipper is not None:
            self.shipper.start()
        self._started = True
        self.host.hook.vipsense_branch_started(branch=self)

    def wait_stores_open(self, timeout: float) -> bool:
        """Block until every store that was built has opened (True), or ``timeout`` passes (False).
        Arrivals do not need this (they wait for a starting store by themselves); tests and
        benchmarks that want a steady state do."""
        deadline = time.monotonic() + timeout
        return all(s.wait_open(max(0.0, deadline - time.monotonic())) for s in self.stores)

    # -- periodic chores: replica refresh, retention ----------------------------------------------

    def _chores_loop(self) -> None:
        """Off the pipeline: refresh the replica every ``sync.interval`` and purge visits past their
        retention once a day, each first right after start."""
        plan = self.profile.sync
        next_sync = next_purge = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if plan is not None and now >= next_sync:
                self.sync_now()
                next_sync = time.monotonic() + float(plan.interval)
            if now >= next_purge:
                self.purge_now()
                next_purge = time.monotonic() + PURGE_EVERY
            wait = min(next_purge, next_sync if plan is not None else next_purge) - time.monotonic()
            if self._stop.wait(max(0.05, wait)):
                return

    def purge_now(self) -> int:
        """Delete visits older than ``privacy.visit_retention`` (audited); returns how many."""
        from .storage.retention import purge_visits

        keep = float(self.profile.privacy.visit_retention)
        if keep <= 0:
            return 0
        try:
            n = purge_visits(
                self.visit_log.path,
                keep,
                self.audit,
                RETENTION_ACTOR,
                self.clock.wall(),
                branch=self.profile.branch.id,
                source="vipsense run",
                reason="retention schedule",
            )
        except Exception as exc:
            log.error("retention: purging old visits failed (retried tomorrow): %s", exc)
            return 0
        try:  # delivery records say who was told of whose visit: the same retention
            self.outbox.purge(self.clock.wall() - keep)
        except Exception as exc:
            log.error("retention: purging old delivery records failed (retried tomorrow): %s", exc)
        if n:
            log.warning("retention: purged %d visits older than %g days", n, keep / 86400)
        return n

    def sync_now(self) -> None:
        """One replica refresh; the outcome goes to ``status.sync``, a failure is logged once."""
        from .identity.sync import SyncError, sync_once

        state = self.status.sync
        try:
            result = sync_once(self.profile, self.host, audit=self.audit)
        except SyncError as exc:
            if state.get("error") != str(exc):
                log.error("sync: %s (the replica keeps its last copy)", exc)
            state.update(state="failed", error=str(exc), failed_at=time.time())
            return
        if state.get("state") == "failed":
            log.warning("sync: the replica is fresh again")
        state.update(
            state="ok",
            error="",
            last_ok_at=result.finished_at,
            cards=result.cards,
            customers=result.customers,
            seconds=round(result.seconds, 3),
        )

    @property
    def readers_finished(self) -> bool:
        """True when no reader can produce more reads (only replays finish by themselves)."""
        return all(r.finished for r in self.readers)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Stop readers, drain the pipeline, flush the visit log, close everything: within 2 s."""
        deadline = time.monotonic() + STOP_BUDGET
        for reader in self.readers:
            reader.stop()
        for reader in self.readers:
            if reader.thread.is_alive():
                reader.thread.join(max(0.0, deadline - time.monotonic() - 1.0))
            if reader.thread.is_alive():
                log.warning("reader %s did not stop in time; abandoning its thread", reader.reader_id)
            reader.close()
        self._stop.set()
        if self._started:
            self._pipeline_thread.join(max(0.1, deadline - time.monotonic() - 0.7))
        self.outbox_writer.stop(max(0.05, deadline - time.monotonic() - 0.65))
        self.audit_writer.close(max(0.05, deadline - time.monotonic() - 0.6))
        for notifier in self.notifiers.values():
            notifier.close(max(0.05, (deadline - time.monotonic() - 0.3) / max(1, len(self.notifiers))))
        if self.shipper is not None:  # a last report of the last visits, bounded
            self.shipper.stop(min(SHIP_LAST, max(0.05, deadline - time.monotonic() - 0.45)))
        if self._audit_head is not None:
            self._audit_head.close()
        self.outbox.close()  # the last results; whatever is still open is sent at the next start
        for store in self.stores:
            store.timeout = min(store.timeout, max(0.05, deadline - time.monotonic() - 0.1))
            store.close()
        self.visit_log.close()
        if not self._chores.is_alive():  # a refresh still running finishes or dies with the process
            self.audit.close()
        self.host.hook.vipsense_branch_stopped(branch=self)
