"""The centre's side of a branch's report (wire format 1): check a batch, then apply it once, in effect.

A batch carries, per stream (visits, deliveries), the rows whose change sequence number is in
``(after, upto]``, each the current state of its visit or delivery, and the branch's heartbeat.
:func:`parse_batch` checks every field before anything is written (a :class:`BatchRefused` names the
field and the row); :func:`apply_batch` applies the whole batch in ONE transaction with the branch's
row locked (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so two batches of
one branch never interleave:

* a stream whose ``upto`` is at or below the centre's position for that branch was applied already
  and is skipped (a replayed or duplicated batch changes nothing);
* a stream whose ``after`` is above the position is a gap: the whole batch is refused (409) with the
  centre's position, from which the branch resends;
* otherwise its rows are upserted by ``(branch_id, visit_id)`` / ``(branch_id, delivery_key)``, a row
  replacing the held one only with a state at least as new (``change_seq``), with the sightings and
  acknowledgements they imply, and the position moves to ``upto``.

The heartbeat (devices, audit chain head, clock offset) is taken only from a batch sent after the last
one taken, so a replay does not move it back.  A database that drops the connection (a PostgreSQL
restart) is retried a few times with backoff, then :func:`apply_batch` refuses with ``unavailable``
(503): the transaction either committed whole or left nothing, and a retry of a batch that did commit
is skipped by the positions.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from ..i18n import lazy_gettext
from ..texts import Text
from . import anchors, days, schema
from .database import Database

log = logging.getLogger("vipsense.centre.ingest")

FORMAT = 1  #: the wire format this centre speaks
MAX_BODY = 4 * 1024 * 1024  #: bytes of a batch at most (the ingest answers 413 beyond)
MAX_ROWS = 5_000  #: rows of one stream in one batch at most
MAX_ID = 64  #: characters of an id (branch, visit, reader, staff, customer) at most
MAX_KEY = 200  #: characters of a delivery key at most (notifier id, visit id and recipient id)
MAX_TEXT = 500  #: characters of a reason at most
MAX_DEVICES = 1_000  #: devices in one heartbeat at most
EARLIEST = 946_684_800.0  #: 2000-01-01 UTC: no vipsense time is older
LATEST = 4_102_444_800.0  #: 2100-01-01 UTC
STREAMS = ("visits", "deliveries")
DEVICE_KINDS = frozenset({"reader", "store", "notifier", "pda", "sync"})
RETRIES = (0.2, 0.5, 1.0, 2.0, 3.0)  #: seconds between tries while the database is unreachable
#: seconds of tries at most before a 503 (each try may wait for the pool's timeout too): the branch
#: is waiting for the answer, and will send the batch again
RETRY_BUDGET = 15.0

#: HTTP status of each refusal's code (the codes of :data:`vipsense.web.auth.CODES`)
STATUS = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "conflict": 409,
    "too_large": 413,
    "unavailable": 503,
    "internal_error": 500,  # the web's own fault: logged whole
}


class BatchRefused(Exception):
    """A batch the centre will not apply: ``code`` (English, for programs), one sentence for people,
    and for a gap (``conflict``) the centre's position, from which the branch resends."""

    def __init__(self, code: str, text: Text, position: Mapping[str, int] | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.position = dict(position) if position is not None else None

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def answer(self) -> dict[str, Any]:
        """The JSON body of the refusal (``error`` in English unless translated by the caller)."""
        body: dict[str, Any] = {"error": str(self.text), "code": self.code}
        if self.position is not None:
            body["position"] = self.position
        return body


class KeyChanged(BatchRefused):
    """The branch's key changed (``vipsense centre branches``) since the one the signature was
    checked with was read: the caller reads the key again and checks once more."""


@attrs.frozen
class Stream:
    after: int
    upto: int
    rows: tuple[dict[str, Any], ...]


@attrs.frozen
class Batch:
    """A parsed, checked batch.  Rows keep the wire's names; times are unix floats until applied."""

    branch_id: str
    sent_at: float
    streams: Mapping[str, Stream]
    heartbeat: dict[str, Any] | None

    def rows(self) -> int:
        return sum(len(s.rows) for s in self.streams.values())


@attrs.frozen
class Answer:
    """What the centre answers a batch it took (200): its position per stream, and how many of the
    batch's rows were new to it, those beyond its position before (a branch's change sequence numbers
    are unique and increasing: a row at or below the position is a state held already, or an older
    one the upsert keeps out); a replay answers 0."""

    position: Mapping[str, int]
    applied: Mapping[str, int]
    audit_finding: anchors.Finding | None = None  #: a rewritten branch audit log (the ingest audits it)

    def json(self) -> dict[str, Any]:
        return {"position": dict(self.position), "applied": dict(self.applied)}


# -- checking ----------------------------------------------------------------------------------------


def _bad(message: Any, **fields: object) -> BatchRefused:
    return BatchRefused("bad_request", Text(message, **fields))


class _Checker:
    """Reads one object's fields, refusing the first wrong one by name."""

    def __init__(self, value: object, prefix: str, whole: str, row: int | None = None) -> None:
        """``row``: the object is that row of stream ``whole`` (its names are made only for a refusal:
        a batch checks some 50 rows)."""
        self.prefix, self.row = prefix, row
        if not isinstance(value, dict):
            raise _bad(
                lazy_gettext("{field} must be a JSON object"),
                field=whole if row is None else f"{prefix} row {row}",
            )
        self.value: dict[str, Any] = value

    def where(self, field: str) -> str:
        """How a refusal names the field: ``visits row 3: arrived_at``, ``heartbeat.devices[0].kind``."""
        if self.row is not None:
            return f"{self.prefix} row {self.row}: {field}"
        return f"{self.prefix}{field}"

    def only(self, names: frozenset[str]) -> None:
        if self.value.keys() == names:
            return  # every field there, none other: the rest is for naming what is wrong
        for name in self.value:
            if name not in names:
                raise _bad(
                    lazy_gettext("{field} is not a field of wire format 1"), field=self.where(str(name)[:40])
                )
        for name in sorted(names):
            if name not in self.value:
                raise _bad(lazy_gettext("{field} is missing"), field=self.where(name))

    def integer(self, name: str, minimum: int = 0) -> int:
        value = self.value[name]
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 2**63:
            raise _bad(
                lazy_gettext("{field} must be a whole number from {minimum}"),
                field=self.where(name),
                minimum=minimum,
            )
        return value

    def time(self, name: str, null: bool = False) -> float | None:
        value = self.value[name]
        if value is None and null:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(lazy_gettext("{field} must be a time in unix seconds"), field=self.where(name))
        if not math.isfinite(value) or not EARLIEST <= value < LATEST:
            raise _bad(lazy_gettext("{field} must be a time between 2000 and 2100"), field=self.where(name))
        return float(value)

    def number(self, name: str) -> float | None:
        value = self.value[name]
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _bad(lazy_gettext("{field} must be a finite number or null"), field=self.where(name))
        return float(value)

    def text(self, name: str, limit: int = MAX_ID, null: bool = False) -> str | None:
        value = self.value[name]
        if value is None and null:
            return None
        if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
            raise _bad(
                lazy_gettext("{field} must be text of 1 to {limit} characters"),
                field=self.where(name),
                limit=limit,
            )
        return value


_BATCH = frozenset({"format", "branch_id", "sent_at", "streams", "heartbeat"})
_STREAM = frozenset({"after", "upto", "rows"})
_VISIT = frozenset(
    {"visit_id", "seq", "arrived_at", "kind", "epc", "customer_no", "tier", "reason", "reader_id",
     "read_count", "peak_rssi", "departed_at", "acknowledged_at", "acknowledged_by"}
)  # fmt: skip
_DELIVERY = frozenset(
    {"delivery_key", "seq", "created_at", "visit_id", "notifier_id", "recipient_id", "state", "attempts",
     "delivered_at", "acknowledged_at", "finished_at", "escalated_from"}
)  # fmt: skip
_HEARTBEAT = frozenset({"at", "devices", "audit_head", "backlog", "version"})
_DEVICE = frozenset({"kind", "id", "state", "reason"})


def _visit(c: _Checker) -> dict[str, Any]:
    c.only(_VISIT)
    return {
        "visit_id": c.text("visit_id"),
        "seq": c.integer("seq", 1),
        "arrived_at": c.time("arrived_at"),
        "kind": c.text("kind"),
        "epc": c.text("epc", 128),
        "customer_no": c.text("customer_no", null=True),
        "tier": c.text("tier", null=True),
        "reason": c.text("reason", MAX_TEXT, null=True),
        "reader_id": c.text("reader_id"),
        "read_count": c.integer("read_count"),
        "peak_rssi": c.number("peak_rssi"),
        "departed_at": c.time("departed_at", null=True),
        "acknowledged_at": c.time("acknowledged_at", null=True),
        "acknowledged_by": c.text("acknowledged_by", null=True),
    }


def _delivery(c: _Checker) -> dict[str, Any]:
    c.only(_DELIVERY)
    return {
        "delivery_key": c.text("delivery_key", MAX_KEY),
        "seq": c.integer("seq", 1),
        "created_at": c.time("created_at"),
        "visit_id": c.text("visit_id"),
        "notifier_id": c.text("notifier_id"),
        "recipient_id": c.text("recipient_id"),
        "state": c.text("state"),
        "attempts": c.integer("attempts"),
        "delivered_at": c.time("delivered_at", null=True),
        "acknowledged_at": c.time("acknowledged_at", null=True),
        "finished_at": c.time("finished_at", null=True),
        "escalated_from": c.text("escalated_from", MAX_KEY, null=True),
    }


_ROW = {"visits": (_visit, "visit_id"), "deliveries": (_delivery, "delivery_key")}


def _stream(name: str, value: object) -> Stream:
    c = _Checker(value, f"{name}: ", f"streams.{name}")
    c.only(_STREAM)
    after, upto = c.integer("after"), c.integer("upto")
    if upto < after:
        raise _bad(lazy_gettext("{field} must not be below after"), field=f"{name}: upto")
    rows = c.value["rows"]
    if not isinstance(rows, list):
        raise _bad(lazy_gettext("{field} must be a JSON array"), field=f"{name}: rows")
    if len(rows) > MAX_ROWS:
        raise BatchRefused(
            "too_large",
            Text(lazy_gettext("{stream} has {count} rows; a batch carries {limit} at most"),
                 stream=name, count=len(rows), limit=MAX_ROWS),
        )  # fmt: skip
    parse, key = _ROW[name]
    checked, seen, last = [], set(), after
    for index, raw in enumerate(rows):
        row = parse(_Checker(raw, name, name, index))
        if not last < row["seq"] <= upto:
            raise _bad(
                lazy_gettext("{field} must be above the row before and within (after, upto]"),
                field=f"{name} row {index}: seq",
            )
        if row[key] in seen:
            raise _bad(lazy_gettext("{field} appears twice in the batch"), field=f"{name} row {index}: {key}")
        seen.add(row[key])
        last = row["seq"]
        checked.append(row)
    return Stream(after, upto, tuple(checked))


def _heartbeat(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    c = _Checker(value, "heartbeat.", "heartbeat")
    c.only(_HEARTBEAT)
    beat: dict[str, Any] = {"at": c.time("at"), "version": c.text("version")}
    devices = c.value["devices"]
    if not isinstance(devices, list) or len(devices) > MAX_DEVICES:
        raise _bad(
            lazy_gettext("{field} must be a JSON array of {limit} devices at most"),
            field="heartbeat.devices",
            limit=MAX_DEVICES,
        )
    beat["devices"] = []
    for index, raw in enumerate(devices):
        d = _Checker(raw, f"heartbeat.devices[{index}].", f"heartbeat.devices[{index}]")
        d.only(_DEVICE)
        kind = d.text("kind")
        if kind not in DEVICE_KINDS:
            raise _bad(
                lazy_gettext("{field} must be one of {kinds}"),
                field=f"heartbeat.devices[{index}].kind",
                kinds=", ".join(sorted(DEVICE_KINDS)),
            )
        beat["devices"].append(
            {
                "kind": kind,
                "id": d.text("id"),
                "state": d.text("state"),
                "reason": d.text("reason", MAX_TEXT, null=True),
            }
        )
    head = c.value["audit_head"]
    if head is not None:
        h = _Checker(head, "heartbeat.audit_head.", "heartbeat.audit_head")
        h.only(frozenset({"seq", "hash"}))
        head = {"seq": h.integer("seq"), "hash": h.text("hash", 128)}
    beat["audit_head"] = head
    b = _Checker(c.value["backlog"], "heartbeat.backlog.", "heartbeat.backlog")
    b.only(frozenset(STREAMS))
    beat["backlog"] = {name: b.integer(name) for name in STREAMS}
    return beat


def parse_batch(body: bytes) -> Batch:
    """The batch in ``body``, every field checked; raises :class:`BatchRefused` (``bad_request``, or
    ``too_large`` for a body or stream over the limits) naming the first wrong field and its row."""
    if len(body) > MAX_BODY:
        raise BatchRefused(
            "too_large", Text(lazy_gettext("a batch is {limit} bytes at most"), limit=MAX_BODY)
        )

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not a number")

    try:
        value = json.loads(body.decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad(lazy_gettext("the batch is not JSON in UTF-8")) from None
    c = _Checker(value, "", "the batch")
    c.only(_BATCH)
    if c.value["format"] != FORMAT or isinstance(c.value["format"], bool):
        raise _bad(
            lazy_gettext("format must be {format}: this centre speaks wire format {format}"), format=FORMAT
        )
    branch_id = c.text("branch_id")
    sent_at = c.time("sent_at")
    streams = c.value["streams"]
    s = _Checker(streams, "streams.", "streams")
    s.only(frozenset(STREAMS))
    assert branch_id is not None and sent_at is not None
    return Batch(
        branch_id,
        sent_at,
        {name: _stream(name, streams[name]) for name in STREAMS},
        _heartbeat(c.value["heartbeat"]),
    )


# -- applying ----------------------------------------------------------------------------------------


def _at(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)


def _as_datetime(value: float | datetime) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("received_at must be an aware datetime")
        return value
    return datetime.fromtimestamp(value, timezone.utc)


_VISIT_TIMES = ("arrived_at", "departed_at", "acknowledged_at")
_DELIVERY_TIMES = ("created_at", "delivered_at", "acknowledged_at", "finished_at")
#: what a newer state of a held row may change (the keys and first times stay)
VISIT_UPDATES = ("kind", "customer_no", "tier", "reason", "reader_id", "departed_at", "acknowledged_at",
                 "acknowledged_by", "change_seq")  # fmt: skip
DELIVERY_UPDATES = ("state", "attempts", "delivered_at", "acknowledged_at", "finished_at", "escalated_from",
                    "change_seq")  # fmt: skip


def _visit_rows(branch_id: str, rows: tuple[dict[str, Any], ...], received: datetime) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        row = {k: v for k, v in r.items() if k not in ("seq", "read_count", "peak_rssi")}
        row.update({name: _at(r[name]) for name in _VISIT_TIMES})
        out.append({**row, "branch_id": branch_id, "change_seq": r["seq"], "received_at": received})
    return out


def _delivery_rows(branch_id: str, rows: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        row = {k: v for k, v in r.items() if k != "seq"}
        row.update({name: _at(r[name]) for name in _DELIVERY_TIMES})
        out.append({**row, "branch_id": branch_id, "change_seq": r["seq"]})
    return out


def _sightings(branch_id: str, rows: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """Each visit is its card's sighting; two visits of one card at one reader and instant are one."""
    found: dict[tuple[str, str, float], dict[str, Any]] = {}
    for r in rows:
        key = (r["epc"], r["reader_id"], r["arrived_at"])
        held = found.get(key)
        if held is None or r["read_count"] > held["read_count"]:
            found[key] = {
                "branch_id": branch_id,
                "epc": r["epc"],
                "reader_id": r["reader_id"],
                "seen_at": _at(r["arrived_at"]),
                "read_count": r["read_count"],
                "peak_rssi": r["peak_rssi"],
            }
    return list(found.values())


def _acknowledgements(branch_id: str, batch: Batch) -> list[dict[str, Any]]:
    """Who acknowledged what: a visit's ``acknowledged_by`` (at the branch: its console or a PDA), and
    each acknowledged delivery's recipient (through that notifier); one per staff member and visit,
    the earliest."""
    found: dict[tuple[str, str], dict[str, Any]] = {}

    def add(visit_id: str, staff: str, at: float, via: str, key: str | None) -> None:
        held = found.get((visit_id, staff))
        if held is None or at < held["at"]:
            found[(visit_id, staff)] = {"at": at, "via": via, "key": key}

    for r in batch.streams["visits"].rows:
        if r["acknowledged_by"] and r["acknowledged_at"] is not None:
            add(r["visit_id"], r["acknowledged_by"], r["acknowledged_at"], "branch", None)
    for r in batch.streams["deliveries"].rows:
        if r["acknowledged_at"] is not None:
            add(r["visit_id"], r["recipient_id"], r["acknowledged_at"], r["notifier_id"], r["delivery_key"])
    return [
        {"branch_id": branch_id, "visit_id": visit, "staff_id": staff, "acknowledged_at": _at(a["at"]),
         "via": a["via"][:MAX_ID], "delivery_key": a["key"]}
        for (visit, staff), a in found.items()
    ]  # fmt: skip


def _lock_branch(conn: Connection, database: Database, branch_id: str) -> Any:
    return database.lock_row(
        conn,
        schema.branches,
        {"branch_id": branch_id},
        ("revoked_at", "key_enc", "visits_position", "deliveries_position", "reported_at", "timezone"),
    )


def _apply(
    database: Database, branch_id: str, batch: Batch, received: datetime, sealed: bytes | None, first: bool
) -> Answer:
    """One try, one transaction: SQLite's write lock at once, PostgreSQL's lock on the branch's row.
    ``first``: the first try, on a pooled connection lent without a check (a failure is tried
    again, on checked ones)."""
    with database.begin(immediate=True, retried=first) as conn:
        branch = _lock_branch(conn, database, branch_id)
        moved = branch is not None and sealed is not None and bytes(branch.key_enc or b"") != sealed
        if moved and branch.revoked_at is None:
            raise KeyChanged(
                "unauthorized",
                Text(lazy_gettext("branch {branch} has a new key: sign with it"), branch=branch_id),
            )
        if branch is None or branch.revoked_at is not None:
            raise BatchRefused(
                "forbidden",
                Text(
                    lazy_gettext("branch {branch} is revoked: the centre refuses its reports")
                    if branch is not None
                    else lazy_gettext("no branch {branch} at this centre"),
                    branch=branch_id,
                ),
            )
        held = {"visits": int(branch.visits_position), "deliveries": int(branch.deliveries_position)}
        finding: anchors.Finding | None = None
        position, applied = dict(held), dict.fromkeys(STREAMS, 0)
        todo = []
        for name in STREAMS:
            stream = batch.streams[name]
            if stream.upto <= held[name]:
                continue  # applied already
            if stream.after > held[name]:
                raise BatchRefused(
                    "conflict",
                    Text(
                        lazy_gettext(
                            "{stream} after {after} leaves a gap: the centre holds up to {position}"
                        ),
                        stream=name,
                        after=stream.after,
                        position=held[name],
                    ),
                    held,
                )
            todo.append(name)
        writes: list[tuple[Any, list[dict[str, Any]], tuple[str, ...], str | None]] = []
        if "visits" in todo:
            rows = batch.streams["visits"].rows
            visit_rows = _visit_rows(branch_id, rows, received)
            writes.append((schema.visits, visit_rows, VISIT_UPDATES, "change_seq"))
            writes.append((schema.sightings, _sightings(branch_id, rows), ("read_count", "peak_rssi"), None))
            applied["visits"] = sum(r["seq"] > held["visits"] for r in rows)
            position["visits"] = batch.streams["visits"].upto
        if "deliveries" in todo:
            rows = batch.streams["deliveries"].rows
            delivery_rows = _delivery_rows(branch_id, rows)
            writes.append((schema.deliveries, delivery_rows, DELIVERY_UPDATES, "change_seq"))
            applied["deliveries"] = sum(r["seq"] > held["deliveries"] for r in rows)
            position["deliveries"] = batch.streams["deliveries"].upto
        if todo:
            writes.append((schema.acknowledgements, _acknowledgements(branch_id, batch), (), None))
        values: dict[str, Any] = {}
        if position != held:
            values.update(visits_position=position["visits"], deliveries_position=position["deliveries"])
        reported = branch.reported_at
        sent = _as_datetime(batch.sent_at)  # microseconds, as stored: a replay compares equal
        if reported is None or sent > reported:
            values.update(reported_at=sent, clock_offset_s=batch.sent_at - received.timestamp())
            beat = batch.heartbeat
            if beat is not None:
                values["last_heartbeat_at"] = received
                values["backlog_visits"] = beat["backlog"]["visits"]
                values["backlog_deliveries"] = beat["backlog"]["deliveries"]
                values["version"] = beat["version"]
                if beat["audit_head"] is not None:
                    values["audit_head"] = json.dumps(
                        beat["audit_head"], sort_keys=True, separators=(",", ":")
                    )
                    finding = anchors.record(conn, branch_id, beat["audit_head"], received)
                devices = {
                    (d["kind"], d["id"]): {
                        "branch_id": branch_id, "kind": d["kind"], "device_id": d["id"], "state": d["state"],
                        "reason": d["reason"], "updated_at": received,
                    }
                    for d in beat["devices"]
                }  # fmt: skip
                kept = ("state", "reason", "updated_at")
                writes.append((schema.device_status, list(devices.values()), kept, None))
        also = []
        if "visits" in todo:  # the board's counts of the days these visits fall on, recounted
            arrived = days.days_of((r["arrived_at"] for r in visit_rows), days.zone(branch.timezone))
            found = days.recount_statement(database.is_postgresql, branch_id, branch.timezone, arrived)
            also += [found] if found is not None else []
        # every table's rows, the branch's row and the recount in one go (PostgreSQL: one pipeline,
        # one round trip)
        database.upserts(conn, writes, then=(schema.branches, {"branch_id": branch_id}, values), also=also)
        return Answer(position, applied, finding)


def unavailable() -> Text:
    """The refusal's sentence while the database does not answer (503: the branch retries)."""
    return Text(lazy_gettext("the centre's database does not answer now: send the batch again later"))


def _transient(exc: BaseException) -> bool:
    """A database that is restarting, unreachable, or (SQLite) busy: worth another try."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    kind = type(exc)
    return kind.__module__.startswith(("psycopg", "psycopg_pool")) and any(
        base.__name__ in ("OperationalError", "InterfaceError", "PoolTimeout") for base in kind.__mro__
    )


def apply_batch(
    database: Database,
    branch_id: str,
    batch: Batch,
    received_at: float | datetime | None = None,
    retries: tuple[float, ...] = RETRIES,
    sealed: bytes | None = None,
) -> Answer:
    """Apply ``batch`` from ``branch_id`` (whose signature the caller checked) in one transaction;
    returns the centre's :class:`Answer`.  ``sealed``: the branch's key as its row held it when the
    signature was checked with it (:class:`~vipsense.centre.keys.BranchKey`), checked again under
    the row's lock.  Raises :class:`BatchRefused`: ``forbidden`` (unknown or revoked branch, a batch
    naming another branch), ``conflict`` (a gap), ``unavailable`` (the database did not answer after
    :data:`RETRIES`), :class:`KeyChanged` (the branch's key is not the one the signature was checked
    with any more)."""
    if batch.branch_id != branch_id:
        raise BatchRefused(
            "forbidden",
            Text(
                lazy_gettext("the batch says branch {claimed} but is signed by branch {branch}"),
                claimed=batch.branch_id,
                branch=branch_id,
            ),
        )
    received = _as_datetime(time.time() if received_at is None else received_at)
    began = time.monotonic()
    for attempt in range(len(retries) + 1):
        try:
            answer = _apply(database, branch_id, batch, received, sealed, first=attempt == 0)
        except IntegrityError as exc:
            # another process dropped a partition this one thought it had: check again, once
            if getattr(exc.orig, "sqlstate", None) != "23514" or attempt:
                raise
            database.forget_partitions()
            continue
        except BatchRefused:
            raise
        except Exception as exc:
            if not _transient(exc):
                raise
            if attempt == len(retries) or time.monotonic() - began + retries[attempt] > RETRY_BUDGET:
                log.error("ingest: branch %s: the database did not answer after %d tries: %s",
                          branch_id, attempt + 1, exc)  # fmt: skip
                raise BatchRefused("unavailable", unavailable()) from None
            log.warning("ingest: branch %s: database error, trying again in %.1f s: %s",
                        branch_id, retries[attempt], type(exc).__name__)  # fmt: skip
            database.check_pool()  # the server restarted: its other idle connections are gone too
            time.sleep(retries[attempt])
            continue
        log.debug(
            "ingest: branch %s: applied %s in %.3f s", branch_id, answer.applied, time.monotonic() - began
        )
        return answer
    raise AssertionError("unreachable")


__all__ = [
    "FORMAT",
    "MAX_BODY",
    "MAX_ROWS",
    "Answer",
    "Batch",
    "BatchRefused",
    "KeyChanged",
    "Stream",
    "apply_batch",
    "parse_batch",
]
