"""Writes the door's customer look-ups to the audit log on a thread of its own, in batches.

Every time the door looks a customer up for staff to see, the audit log records it (who: the door's
reader; what: the customer number; why: the card that arrived).  The pipeline must not wait for an
fsync, so it hands over the visits and this thread chains them, one transaction per batch.  Stopping
writes everything still queued.

When the log cannot be written (a full disk), the look-ups stay in memory, at most
:data:`PENDING_LIMIT`, and are tried again every :data:`RETRY_EVERY` seconds and with every batch, so
they are written as soon as space returns even if no one else arrives.  The trouble is logged once
when it starts and once when it ends, and shown in the branch status (:class:`vipsense.status.Storage`).
The same idle rounds publish the audit chain's anchors when one is due by time.
"""

from __future__ import annotations

import logging
import queue
import threading

from ..errors import describe
from ..model import Visit
from ..status import Storage
from .audit import AuditAction, AuditLog, AuditRecord, AuditResult

log = logging.getLogger(__name__)

BATCH = 1000
PENDING_LIMIT = 100_000  #: look-ups kept in memory while the audit log cannot write
RETRY_EVERY = 1.0  #: seconds between tries while look-ups wait, and between anchor checks
NAME = "audit log"  #: how the status names this file


def door_record(visit: Visit) -> AuditRecord:
    """The audit record of one look-up made at the door."""
    reader = visit.arrival.reader_id
    return AuditRecord(
        actor=f"system:door:{reader}",
        role="system",
        branch=visit.branch_id,
        action=AuditAction.LOOKUP,
        object=visit.customer.customer_no if visit.customer else "",
        source=f"reader:{reader}",
        result=AuditResult.SUCCESS,
        reason=f"card {visit.arrival.epc} arrived ({visit.kind.value}); visit {visit.visit_id}",
        at=visit.arrived_at,
    )


class AuditWriter:
    def __init__(self, audit: AuditLog, storage: Storage | None = None) -> None:
        self.audit = audit
        self.storage = storage  #: the branch status's storage problems (the status page shows them)
        self.written = 0
        self.errors = 0
        self.last_error = ""
        self._pending: list[Visit] = []  # could not be written yet: retried with the next batch
        self._queue: queue.SimpleQueue[list[Visit] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="audit-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Look-ups held in memory because the log could not take them yet."""
        return len(self._pending)

    def put(self, visits: list[Visit]) -> None:
        """From the pipeline thread: never blocks."""
        self._queue.put(visits)

    def _main(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=RETRY_EVERY)
            except queue.Empty:
                self._write([])  # retries what waits, if anything does
                self._anchor()
                continue
            done = first is None
            batch = [] if first is None else list(first)
            while len(batch) < BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    done = True
                    break
                batch.extend(more)
            self._write(batch)
            if done:
                if self._pending:
                    log.error("audit log: %d door look-ups could not be recorded", len(self._pending))
                return

    def _anchor(self) -> None:
        try:
            self.audit.anchor_if_due()
        except Exception as exc:  # the log is closing, or its file is gone: the next round tries again
            log.debug("audit log: no anchor this round: %s", exc)

    def _write(self, visits: list[Visit]) -> None:
        visits = self._pending + visits if self._pending else visits
        if not visits:
            return
        try:
            self.audit.append_many([door_record(v) for v in visits])
        except Exception as exc:  # a full disk: keep them for the next try, say so once, run on
            self.errors += 1
            first = not self.last_error
            self.last_error = describe(exc)
            if len(visits) > PENDING_LIMIT:
                log.error("audit log: dropping %d oldest door look-ups", len(visits) - PENDING_LIMIT)
            self._pending = visits[-PENDING_LIMIT:]
            if self.storage is not None:
                self.storage.failed(NAME, self.audit.path, exc, held=len(self._pending))
            if first:
                log.error(
                    "audit log: cannot record %d door look-ups yet: %s; keeping them in memory and trying"
                    " again every %g s",
                    len(self._pending),
                    self.last_error,
                    RETRY_EVERY,
                )
            return
        if self.last_error:
            log.warning("audit log: writing again; %d door look-ups that waited are recorded", len(visits))
            self.last_error = ""
        if self.storage is not None:
            self.storage.written(NAME)
        self._pending = []
        self.written += len(visits)

    def close(self, timeout: float) -> None:
        """Write what is queued (waiting up to ``timeout`` seconds), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("audit log: door look-ups still being written at stop")
