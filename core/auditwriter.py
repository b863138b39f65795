"""Writes the door's customer look-ups to the audit log on a thread of its own, in batches.

Every time the door looks a customer up for staff to see, the audit log records it (who: the door's
reader; what: the customer number; why: the card that arrived).  The pipeline must not wait for an
fsync, so it hands over the visits and this thread chains them, one transaction per batch.  Stopping
writes everything still queued.
"""

from __future__ import annotations

import logging
import queue
import threading

from .audit import AuditAction, AuditLog, AuditRecord, AuditResult
from .devices import describe
from .model import Visit

log = logging.getLogger(__name__)

BATCH = 1000
PENDING_LIMIT = 100_000  #: look-ups kept in memory while the audit log cannot write


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
    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self.written = 0
        self.errors = 0
        self.last_error = ""
        self._pending: list[Visit] = []  # could not be written yet: retried with the next batch
        self._queue: queue.SimpleQueue[list[Visit] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="audit-writer", daemon=True)
        self._thread.start()

    def put(self, visits: list[Visit]) -> None:
        """From the pipeline thread: never blocks."""
        self._queue.put(visits)

    def _main(self) -> None:
        while True:
            first = self._queue.get()
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

    def _write(self, visits: list[Visit]) -> None:
        visits = self._pending + visits if self._pending else visits
        if not visits:
            return
        try:
            self.audit.append_many([door_record(v) for v in visits])
        except Exception as exc:  # a full disk: keep them for the next batch, say so, run on
            self.errors += 1
            self.last_error = describe(exc)
            if len(visits) > PENDING_LIMIT:
                log.error("audit log: dropping %d oldest door look-ups", len(visits) - PENDING_LIMIT)
            self._pending = visits[-PENDING_LIMIT:]
            log.error(
                "audit log: cannot record %d door look-ups yet: %s", len(self._pending), self.last_error
            )
            return
        self._pending = []
        self.written += len(visits)

    def close(self, timeout: float) -> None:
        """Write what is queued (waiting up to ``timeout`` seconds), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("audit log: door look-ups still being written at stop")
