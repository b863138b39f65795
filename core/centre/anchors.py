"""Each branch's audit anchors: every audit chain head a branch reported, kept by the centre.

A branch signs its audit log's entries with its own key and anchors the chain locally; someone who
holds the branch's machine can still rewrite the log and its anchors together.  The heads its
reports carried (``heartbeat.audit_head``, ``{"seq", "hash"}``) are out of the branch's reach once
the centre has them, so the centre keeps every one (``audit_heads``) and checks each new one against
them, inside the ingest's transaction (:func:`record`):

* the same entry reported again with another hash: the log was rewritten after it was reported;
* an entry lower than one already held: the log was shortened (entries removed, or an old copy put
  back).

A finding is kept on the branch's row (``audit_alarm``, ``audit_alarm_at``: the board shows it) until
someone clears it; the ingest audits it in the centre's own log once per distinct finding, so a
branch reporting the same broken head every few seconds does not fill that log.  ``vipsense centre
anchors`` writes the heads held, and ``vipsense audit verify --centre-heads`` checks a branch's log
against them, naming the first entry that no longer matches.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

import attrs
from sqlalchemy import Connection, Integer, String, select, text, update

from ..i18n import lazy_gettext
from ..texts import Text
from . import schema
from .database import Database

log = logging.getLogger("vipsense.centre.anchors")

REWRITTEN = "rewritten"  #: the same entry with another hash
SHORTENED = "shortened"  #: an entry lower than one held
#: a new head is kept when the branch's last kept one is this old: at most 144 a day a branch (a
#: heartbeat every few seconds would otherwise keep 20,000), still enough to catch a log rewritten
#: or cut back past any of them
KEEP_EVERY = dt.timedelta(minutes=10)


def when(at: dt.datetime) -> str:
    """A recorded time as findings and the CLI say it (UTC, to the minute)."""
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@attrs.frozen
class Finding:
    """What :func:`record` found wrong: ``kind`` (:data:`REWRITTEN` or :data:`SHORTENED`), the held
    entry it contradicts (``seq``, ``hash``, when the centre recorded it) and the head reported now."""

    branch_id: str
    kind: str
    seq: int
    held_hash: str
    held_at: dt.datetime
    reported_seq: int
    reported_hash: str

    @property
    def text(self) -> Text:
        """One sentence naming the held entry (not the head reported now, so that a branch repeating
        the same broken head gives the same sentence, audited once)."""
        if self.kind == REWRITTEN:
            message = lazy_gettext(
                "audit entry {seq} differs from what the centre recorded on {when}"
                " (the branch's log was rewritten after it was reported)"
            )
        else:
            message = lazy_gettext(
                "the branch's audit log is shorter than entry {seq}, which the centre recorded on {when}"
                " (entries were removed after they were reported)"
            )
        return Text(message, seq=self.seq, when=when(self.held_at))


#: in one round trip (the ingest's hot path: two cost 13 % of its interpreter time): the highest head
#: held at or above the reported one (above it is a shortened log, at it must match), and when the
#: branch's last head was kept (``latest`` 1)
_HELD = text(
    "SELECT seq, hash, reported_at, 0 AS latest FROM (SELECT seq, hash, reported_at FROM audit_heads"
    " WHERE branch_id = :branch AND seq >= :seq ORDER BY seq DESC LIMIT 1) AS held"
    " UNION ALL SELECT NULL, NULL, max(reported_at), 1 FROM audit_heads WHERE branch_id = :branch"
).columns(seq=Integer, hash=String, reported_at=schema.UtcDateTime, latest=Integer)


def record(
    conn: Connection, branch_id: str, head: Mapping[str, Any], reported_at: dt.datetime
) -> Finding | None:
    """Keep ``head`` (``{"seq", "hash"}``) for ``branch_id``, in the caller's transaction (the ingest's,
    with the branch's row locked): inserted once, an unchanged head is a no-op.  A head that
    contradicts the ones held is not kept; it is returned as a :class:`Finding` and put on the
    branch's row, and None is returned when that row already shows the same finding."""
    seq, digest = int(head["seq"]), str(head["hash"])
    held, latest = None, None
    for row in conn.execute(_HELD, {"branch": branch_id, "seq": seq}):
        if row.latest:
            latest = row.reported_at
        else:
            held = row
    if held is None:
        if latest is None or reported_at - latest >= KEEP_EVERY:
            conn.execute(
                schema.audit_heads.insert().values(
                    branch_id=branch_id, seq=seq, hash=digest, reported_at=reported_at
                )
            )
        return None
    if held.seq == seq and held.hash == digest:
        return None  # the same head again: nothing new
    kind = SHORTENED if held.seq > seq else REWRITTEN
    finding = Finding(branch_id, kind, int(held.seq), held.hash, held.reported_at, seq, digest)
    log.warning(
        "anchors: branch %s: audit log %s: holds entry %d (%s), now reports entry %d (%s)",
        branch_id, kind, held.seq, held.hash[:16], seq, digest[:16],
    )  # fmt: skip
    b = schema.branches
    sentence = str(finding.text)
    was = conn.execute(select(b.c.audit_alarm).where(b.c.branch_id == branch_id)).scalar_one_or_none()
    if was == sentence:
        return None
    conn.execute(
        update(b).where(b.c.branch_id == branch_id).values(audit_alarm=sentence, audit_alarm_at=reported_at)
    )
    return finding


def heads(database: Database, branch_id: str) -> Iterator[dict[str, Any]]:
    """The heads held for ``branch_id``, oldest entry first: ``{"seq", "hash", "reported_at"}`` with
    ``reported_at`` in unix seconds (what ``vipsense centre anchors`` writes, one JSON line each)."""
    h = schema.audit_heads.c
    with database.begin() as conn:
        rows = conn.execute(
            select(h.seq, h.hash, h.reported_at).where(h.branch_id == branch_id).order_by(h.seq)
        ).all()
    for seq, digest, at in rows:
        yield {"seq": int(seq), "hash": digest, "reported_at": at.timestamp()}


def write(out: TextIO, found: Iterator[dict[str, Any]]) -> int:
    """Write the heads as JSON lines; returns how many."""
    n = 0
    for head in found:
        out.write(json.dumps(head, sort_keys=True, separators=(",", ":")) + "\n")
        n += 1
    return n


__all__ = ["REWRITTEN", "SHORTENED", "Finding", "heads", "record", "when", "write"]
