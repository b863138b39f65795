"""Retention: visits older than the profile's ``privacy.visit_retention`` are deleted.

A VIP visit log is a whereabouts record (PIPL Art. 28), so it is kept no longer than the bank needs it
(``privacy-security.md`` §4 item 1: retention per field, with automatic purge).  ``vipsense visits
purge`` runs :func:`purge_visits` by hand; a running branch calls the same function on a schedule.

Deleting runs in small transactions, so a branch writing visits into the same file at the same time
waits at most one short batch for the write lock.  Every purge is one ``purge`` entry in the audit
log, with the number of visits deleted.  Freed pages are reused by SQLite; the file does not shrink.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from .audit import AuditAction, AuditLog, AuditResult

PURGE_BATCH = 5_000  #: visits deleted per transaction
BUSY_TIMEOUT = 10.0  #: seconds to wait for the branch's own write to finish


def cutoff(older_than: float, now: float) -> float:
    """Visits that arrived before this wall-clock time are purged."""
    return now - older_than


def describe_cutoff(older_than: float, now: float) -> str:
    when = dt.datetime.fromtimestamp(cutoff(older_than, now), dt.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def count_visits(visit_log_path: Path, older_than: float, now: float) -> int:
    """How many visits a purge would delete (``--dry-run``); 0 when retention is off (0)."""
    if older_than <= 0 or not visit_log_path.exists():
        return 0
    with contextlib.closing(_connect(visit_log_path)) as db:
        row = db.execute("SELECT count(*) FROM visits WHERE arrived_at < ?", (cutoff(older_than, now),))
        return row.fetchone()[0]


def purge_visits(
    visit_log_path: Path,
    older_than: float,
    audit: AuditLog,
    actor: str,
    now: float,
    *,
    role: str = "system",
    branch: str = "",
    source: str = "vipsense",
    reason: str = "",
) -> int:
    """Delete the visits that arrived before ``now - older_than`` seconds; returns how many.

    ``older_than`` of 0 keeps visits for ever: nothing is deleted (and the purge is still audited,
    so the record shows the purge ran).  A missing visit log means nothing to purge.  A failure is
    audited as an error and raised.
    """
    what = f"visits before {describe_cutoff(older_than, now)}" if older_than > 0 else "visits (kept for ever)"
    deleted, result, note = 0, AuditResult.SUCCESS, ""
    try:
        if older_than > 0 and visit_log_path.exists():
            with contextlib.closing(_connect(visit_log_path)) as db:
                for n in _delete_batches(db, cutoff(older_than, now)):
                    deleted += n  # counted per batch, so a failure halfway reports what went
    except BaseException as exc:
        result, note = AuditResult.ERROR, f"error: {exc}"
        raise
    finally:
        object_ = f"{what}: {deleted} deleted"
        audit.append(
            actor, role, branch, AuditAction.PURGE, object_, source, result, reason=_join(reason, note)
        )
    return deleted


def _connect(path: Path) -> sqlite3.Connection:
    # mode=rw: never create an empty visit log just to find nothing in it
    db = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT, isolation_level=None
    )
    db.execute("PRAGMA journal_mode=WAL")
    return db


def _delete_batches(db: sqlite3.Connection, before: float) -> Iterator[int]:
    """Delete in transactions of :data:`PURGE_BATCH` visits; yields each batch's count."""
    while True:
        cursor = db.execute(
            "DELETE FROM visits WHERE rowid IN (SELECT rowid FROM visits WHERE arrived_at < ? LIMIT ?)",
            (before, PURGE_BATCH),
        )
        yield cursor.rowcount
        if cursor.rowcount < PURGE_BATCH:
            return


def _join(reason: str, note: str) -> str:
    return f"{reason} ({note})" if reason and note else reason or note
