"""The client-manager console: the current customer, the last six of the day, today's visits, manual
look-up, acknowledging, and a live stream (Server-Sent Events).

Who sees what: a client manager sees their own customers only (``Customer.client_manager`` is their
account name) in every route here -- the stream, the strip, the history, look-ups, details and
photos; another manager's customer answers as not found (a look-up of one is audited as denied).
The lobby and branch managers see the whole branch.  ID and mobile numbers are masked everywhere;
only ``customers.unmask`` with a reason shows them, audited as ``unmask``.  Every view of personal
data is audited (``view`` / ``lookup``).

Routes (all guarded by ``console.view`` unless noted):

* ``GET /console`` -- the page (plain JS in ``static/console.js``, data from the JSON routes below);
* ``GET /console/events`` -- the SSE stream: a snapshot, then ``arrival`` / ``acknowledged`` events;
* ``GET /console/visits?date=YYYY-MM-DD&from=HH:MM&to=HH:MM`` -- a day's visits (JSON or a table);
* ``GET /console/visit/<visit_id>``, ``GET /console/customer/<customer_no>`` -- details;
* ``POST /console/customer/<customer_no>/unmask`` -- ``customers.unmask`` and a ``reason``;
* ``GET|POST /console/lookup`` -- ``q``: a customer number, or (POST only, with
  ``customers.search_id`` and a ``reason``) a whole, valid ID number, limited per user and address;
* ``GET /console/photo/<customer_no>`` -- the store's photo, else a drawn portrait;
* ``POST /console/ack/<visit_id>`` -- ``visits.acknowledge``: the notification sent to oneself.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request

from .. import i18n
from ..api import Customer
from ..avatar import avatar_svg
from ..devices import Reply
from ..i18n import _
from ..identity.idnumber import valid_id_number
from ..model import Role, notification_key
from ..permissions import Permission
from ..pipeline.lookup import Outcome, ask, supports
from ..pipeline.response_times import VisitRow, load, told_by_visit
from ..privacy import mask_id_number
from ..storage.audit import AuditAction, AuditResult
from ..timezone import day_bounds, day_of, local, moment
from .auth import (
    CODES,
    Viewer,
    address,
    audit,
    made_once,
    refuse,
    require,
    source,
    still_valid,
    viewer,
    wants_json,
    web,
)
from .live import LiveFeed, StreamRefused, customer_dict
from .settings import IdLookup
from .words import with_tier_name

bp = Blueprint("console", __name__)

STRIP = 6  #: earlier customers shown beside the current one
HISTORY_LIMIT = 500  #: rows of one history answer
#: visits the console lists: those staff were told of (an unresolved one has no customer yet, so only
#: viewers who see every customer see it)
SHOWN_KINDS = frozenset({"greeted", "rejected", "suspect", "unresolved"})
PHOTO_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})  #: never a store's SVG
ID_NUMBER = re.compile(r"\d{17}[\dXx]")
CUSTOMER_NO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
VISIT_ID = re.compile(r"[0-9a-f]{8,64}")


# -- the live feed, made on first use ---------------------------------------------------------------


def feed() -> LiveFeed:
    """This app's live feed; server.stop() closes it (``extensions["live"]``)."""
    return made_once(
        "live",
        lambda ctx: LiveFeed(
            ctx.branch, per_user=ctx.settings.streams.per_user, max_total=ctx.settings.max_streams
        ),
    )


# -- how often one may look up by ID number --------------------------------------------------------------

DAY = 86400.0


class IdLookupLimits:
    """Look-ups by ID number per user and per source address, in this process's memory: at most
    ``per_minute`` in any 60 s and ``per_day`` in any 24 h under each (pen test point 1: a masked
    number's hidden digits must not be guessable faster than the audit log is read).  Refusals are
    counted too; the ``alert_after``-th in 24 h under one key raises an alert, once a day."""

    def __init__(self, settings: IdLookup) -> None:
        self.settings = settings
        self._calls: dict[str, collections.deque[float]] = {}
        self._refusals: dict[str, collections.deque[float]] = {}
        self._alerted: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, keys: list[str], now: float) -> tuple[float, str]:
        """``(0, "")`` when a look-up may go ahead (counted under every key); else how many seconds
        until it may, and which limit."""
        per_minute, per_day = self.settings.per_minute, self.settings.per_day
        with self._lock:
            for key in keys:
                calls = self._calls.setdefault(key, collections.deque())
                while calls and calls[0] <= now - DAY:
                    calls.popleft()
                if len(calls) >= per_day:
                    return calls[0] + DAY - now, f"{per_day} a day"
                recent = [t for t in calls if t > now - 60]
                if len(recent) >= per_minute:
                    return recent[0] + 60 - now, f"{per_minute} a minute"
            for key in keys:
                self._calls[key].append(now)
        return 0.0, ""

    def refused(self, keys: list[str], now: float) -> list[tuple[str, int]]:
        """Count a refusal under each key; the keys that have just reached the alert threshold, each
        with its count of refusals in the last 24 h."""
        due = []
        with self._lock:
            for key in keys:
                refusals = self._refusals.setdefault(key, collections.deque())
                while refusals and refusals[0] <= now - DAY:
                    refusals.popleft()
                refusals.append(now)
                alerted = self._alerted.get(key)
                if len(refusals) >= self.settings.alert_after and (alerted is None or alerted <= now - DAY):
                    self._alerted[key] = now
                    due.append((key, len(refusals)))
        return due


def id_limits() -> IdLookupLimits:
    """This app's look-up counts (``extensions["id_lookup"]``), made on first use."""
    return made_once("id_lookup", lambda ctx: IdLookupLimits(ctx.settings.id_lookup))


def security_alert(who: Viewer, kind: str, detail: str) -> None:
    """Tell the branch: an audit entry, the ``vipsense_security_alert`` hook (for routing to the
    branch manager) and the consoles that receive alerts.  ``detail`` holds no ID or mobile number."""
    audit(AuditAction.LOOKUP, f"security alert: {kind}", AuditResult.DENIED, detail, viewer=who)
    web().branch.host.hook.vipsense_security_alert(
        kind=kind, actor=who.username, source=source(), detail=detail
    )
    feed().alert({"type": "alert", "kind": kind, "actor": who.username, "message": detail})


# -- who may see which customer -----------------------------------------------------------------------


def own_only(who: Viewer) -> str | None:
    """The client manager whose customers alone ``who`` may see, or None for the whole branch."""
    return who.username if who.role is Role.CLIENT_MANAGER else None


def may_see(who: Viewer, customer: Customer | None) -> bool:
    scope = own_only(who)
    return scope is None or (customer is not None and customer.client_manager == scope)


def accepts(who: Viewer) -> Callable[[str | None], bool]:
    """The stream filter for ``who``: by the event's client manager."""
    scope = own_only(who)
    if scope is None:
        return lambda manager: True
    return lambda manager: manager == scope


def me() -> Viewer:
    who = viewer()
    assert who is not None  # the route is guarded
    return who


# -- customers from the identity stores -----------------------------------------------------------------


def find_customer(customer_no: str) -> Customer | None:
    """The stores' answer in profile order, as the door asks (:func:`vipsense.pipeline.lookup.ask`); None
    when no store knows the customer or none could answer."""
    found = ask(web().branch.stores, "find_customer", customer_no)
    return found.result if found.outcome is Outcome.FOUND else None


def find_by_id_number(id_number: str) -> list[Customer]:
    """Every customer with this ID number, from the stores that can search by it."""
    found: dict[str, Customer] = {}
    for store in web().branch.stores:
        if not supports(store.store, "find_customers_by_id_number"):
            continue  # would raise StoreUnsupported and mark the store unavailable
        reply, customers = store.lookup("find_customers_by_id_number", id_number)
        if reply is not Reply.ANSWERED:
            continue
        for c in customers or []:
            found.setdefault(c.customer_no, c)
    return list(found.values())


class Customers:
    """Customers of one request, each looked up once."""

    def __init__(self) -> None:
        self._seen: dict[str, Customer | None] = {}

    def get(self, customer_no: str | None) -> Customer | None:
        if not customer_no:
            return None
        if customer_no not in self._seen:
            self._seen[customer_no] = find_customer(customer_no)
        return self._seen[customer_no]


# -- visits from the visit log and the outbox (read-only) -----------------------------------------------


def visits_between(since: float, until: float, who: Viewer, limit: int) -> list[dict[str, Any]]:
    """The visits ``who`` may see in ``[since, until)``, newest first, at most ``limit``."""
    rows, records = load(web().branch.data_dir, since, until)
    told = told_by_visit(records)
    customers = Customers()
    out: list[dict[str, Any]] = []
    for row in reversed(rows):
        if row.kind not in SHOWN_KINDS:
            continue
        customer = customers.get(row.customer_no)
        if not may_see(who, customer):
            continue
        out.append(visit_dict(row, customer, told.get(row.visit_id, [])))
        if len(out) >= limit:
            break
    return out


def visit_dict(row: VisitRow, customer: Customer | None, told: Iterable[Any]) -> dict[str, Any]:
    """A recorded visit in the shape of a live ``arrival`` event (masked), plus who was told."""
    told = list(told)
    made = {
        "type": "arrival",
        "visit_id": row.visit_id,
        "kind": row.kind,
        "arrived_unix": row.arrived_at,
        "tier": row.tier,
        "reason": row.reason,
        "customer_no": row.customer_no,
        "client_manager": customer.client_manager if customer else None,
        "customer": customer_dict(customer),
        "told": [t.staff_id for t in told],
        "acknowledged_by": [t.staff_id for t in told if t.acknowledged_after is not None],
        "responses": [
            {"staff_id": t.staff_id, "state": t.state, "acknowledged_after": t.acknowledged_after}
            for t in told
        ],
    }
    return with_tier_name(made) or made


def one_visit(visit_id: str) -> VisitRow | None:
    path = web().branch.data_dir / "visits.sqlite3"
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        row = db.execute(
            "SELECT visit_id, arrived_at, kind, customer_no, tier, reason, acknowledged_at, acknowledged_by"
            " FROM visits WHERE visit_id = ?",
            (visit_id,),
        ).fetchone()
    return VisitRow(*row) if row else None


def told_of(row: VisitRow) -> list[Any]:
    """Who was told of this visit (outbox rows carry the visit's arrival time)."""
    _, records = load(web().branch.data_dir, row.arrived_at - 0.001, row.arrived_at + 0.001)
    return told_by_visit(r for r in records if r.visit_id == row.visit_id).get(row.visit_id, [])


def today() -> dt.date:
    """The branch's day now, in its own time zone."""
    return day_of(web().branch.clock.wall(), web().branch.profile.tz)


def snapshot(who: Viewer, live: LiveFeed) -> dict[str, Any]:
    """What a new stream starts from: the current customer and the strip, newest first."""
    since, until = day_bounds(today(), web().branch.profile.tz)
    last_id = live.last_id  # read before the visit log: an event after it is in the queue
    visits = visits_between(since, until, who, STRIP + 1)
    for v in visits:
        live.remember(v["visit_id"], v["client_manager"], v["arrived_unix"])
    return {"type": "snapshot", "viewer": who.username, "last_id": last_id, "visits": visits}


# -- answers ----------------------------------------------------------------------------------------------


def answer(template: str, status: int = 200, **data: Any) -> Any:
    """JSON for scripts (``Accept: application/json`` or ``?format=json``), else a rendered page."""
    if wants_json() or request.args.get("format") == "json":
        response = jsonify(data)
        response.status_code = status
        return response
    return render_template(template, **data), status


def clock_time(unix: float | None) -> str:
    """A time of day on the branch's clock."""
    return local(unix, web().branch.profile.tz).strftime("%H:%M:%S") if unix else ""


@bp.app_template_filter("hms")
def _hms(unix: float | None) -> str:
    return clock_time(unix)


def bad(message: str) -> Response:
    return refuse(400, message)


# -- routes -----------------------------------------------------------------------------------------------


@bp.route("/console")
@require(Permission.CONSOLE_VIEW)
def page() -> Any:
    who = me()
    return render_template(
        "console.html",
        who=who,
        may_ack=who.may(Permission.VISITS_ACK),
        may_unmask=who.may(Permission.CUSTOMER_UNMASK),
        may_search_id=who.may(Permission.CUSTOMER_SEARCH_ID),
        today=today().isoformat(),
    )


def receives_alerts(who: Viewer) -> bool:
    """Security alerts go to the branch manager's consoles (the role answerable for the branch)."""
    return who.role is Role.BRANCH_MANAGER


@bp.route("/console/events")
@require(Permission.CONSOLE_VIEW)
def events() -> Any:
    who = me()
    live = feed()
    try:  # before the snapshot, so nothing falls in the gap
        sub = live.subscribe(accepts(who), who.username, receives_alerts(who), still_valid(who))
    except StreamRefused as exc:
        response = refuse(exc.status, exc.message)
        response.headers["Retry-After"] = "30"
        return response
    try:
        first = snapshot(who, live)
    except Exception:
        live.unsubscribe(sub)
        raise
    audit(AuditAction.VIEW, "console live feed", AuditResult.SUCCESS, reason=f"{len(first['visits'])} visits")
    return Response(
        live.stream(sub, first),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def parse_day(value: str | None) -> dt.date | None:
    if not value:
        return today()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def parse_clock(value: str | None, default: dt.time) -> dt.time | None:
    if not value:
        return default
    if not re.fullmatch(r"\d{2}:\d{2}", value):
        return None
    try:
        return dt.time.fromisoformat(value)
    except ValueError:
        return None


@bp.route("/console/visits")
@require(Permission.CONSOLE_VIEW)
def visits() -> Any:
    """A day's visits between two clock times (both minutes included)."""
    day = parse_day(request.args.get("date"))
    if day is None:
        return bad(_("date must be a calendar date written YYYY-MM-DD, e.g. 2025-06-01"))
    start = parse_clock(request.args.get("from"), dt.time(0, 0))
    end = parse_clock(request.args.get("to"), dt.time(23, 59))
    if start is None or end is None:
        return bad(_("from and to must be clock times written HH:MM (00:00 to 23:59)"))
    if end < start:
        return bad(_("the time range ends before it starts: 'to' must not be earlier than 'from'"))
    tz = web().branch.profile.tz
    since = moment(day, start, tz)
    last_minute = dt.datetime.combine(day, end) + dt.timedelta(minutes=1)  # the 'to' minute is included
    until = moment(last_minute.date(), last_minute.time(), tz)
    who = me()
    rows = visits_between(since, until, who, HISTORY_LIMIT + 1)
    truncated = len(rows) > HISTORY_LIMIT
    rows = rows[:HISTORY_LIMIT]
    what = f"visits {day.isoformat()} {start:%H:%M}-{end:%H:%M}"
    audit(AuditAction.VIEW, what, AuditResult.SUCCESS, reason=f"console history: {len(rows)} visits")
    return answer(
        "console_visits.html",
        date=day.isoformat(),
        date_shown=i18n.format_date(since, tz),
        range_from=f"{start:%H:%M}",
        range_to=f"{end:%H:%M}",
        visits=rows,
        truncated=truncated,
    )


@bp.route("/console/visit/<visit_id>")
@require(Permission.CONSOLE_VIEW)
def visit(visit_id: str) -> Any:
    who = me()
    row = one_visit(visit_id) if VISIT_ID.fullmatch(visit_id) else None
    customer = find_customer(row.customer_no) if row and row.customer_no else None
    if row is None or row.kind not in SHOWN_KINDS or not may_see(who, customer):
        return refuse(404, _("no such visit"))
    audit(AuditAction.VIEW, row.customer_no or "(no customer)", AuditResult.SUCCESS, f"visit {visit_id}")
    return answer("console_detail.html", visit=visit_dict(row, customer, told_of(row)), unmasked=None)


@bp.route("/console/customer/<customer_no>")
@require(Permission.CONSOLE_VIEW)
def customer(customer_no: str) -> Any:
    who = me()
    found = find_customer(customer_no) if CUSTOMER_NO.fullmatch(customer_no) else None
    if found is None or not may_see(who, found):
        return refuse(404, _("no such customer"))
    audit(AuditAction.VIEW, found.customer_no, AuditResult.SUCCESS, "console details")
    return answer("console_detail.html", customer=with_tier_name(customer_dict(found)), unmasked=None)


@bp.route("/console/customer/<customer_no>/unmask", methods=["POST"])
@require(Permission.CUSTOMER_UNMASK, denied=AuditAction.UNMASK)
def unmask(customer_no: str) -> Any:
    """ID and mobile numbers in clear: ``customers.unmask`` and a reason, audited either way."""
    who = me()
    reason = (request.form.get("reason") or (request.get_json(silent=True) or {}).get("reason") or "").strip()
    if not reason:
        audit(AuditAction.UNMASK, customer_no[:40], AuditResult.DENIED, "denied: no reason given")
        return bad(_("say why the numbers must be seen in clear (a reason is required and audited)"))
    found = find_customer(customer_no) if CUSTOMER_NO.fullmatch(customer_no) else None
    if found is None or not may_see(who, found):
        return refuse(404, _("no such customer"))
    audit(AuditAction.UNMASK, found.customer_no, AuditResult.SUCCESS, reason[:200])
    clear = {"id_number": found.id_number or "", "mobile": found.mobile or ""}
    return answer("console_detail.html", customer=with_tier_name(customer_dict(found)), unmasked=clear)


@bp.route("/console/lookup", methods=["GET", "POST"])
@require(Permission.CONSOLE_VIEW)
def lookup() -> Any:
    """Manual look-up by customer number or ID number; the query is audited masked, never echoed.

    By ID number (pen test point 1) only with ``customers.search_id``, by POST (an address ends up in
    logs), for a whole number with the right check character, with a reason, and within the limits
    per user and per address.  A number nobody has answers exactly like the number of a customer this
    viewer may not see."""
    who = me()
    q = (request.values.get("q") or "").strip()
    reason = (request.values.get("reason") or "").strip()[:200]
    if request.method == "GET" and not q:
        return answer("console_lookup.html", query="", customers=[], searched=False)
    by_id = bool(ID_NUMBER.fullmatch(q))
    if not by_id and not CUSTOMER_NO.fullmatch(q):
        return bad(_("enter a customer number (letters and digits) or an 18-character ID number"))
    shown_query = f"id_number {mask_id_number(q)}" if by_id else q
    if by_id:
        q = q.upper()
        refused = id_lookup_refused(who, q, reason, shown_query)
        if refused is not None:
            return refused
        found = find_by_id_number(q)
    else:
        found = [c for c in (find_customer(q),) if c is not None]
    visible = [c for c in found if may_see(who, c)]
    hidden = [c.customer_no for c in found if not may_see(who, c)]
    if hidden:
        audit(AuditAction.LOOKUP, ",".join(hidden), AuditResult.DENIED,
              f"denied: not {who.username}'s customer ({shown_query})")  # fmt: skip
    if visible or not hidden:
        note = reason or "console look-up"
        obj = ",".join(c.customer_no for c in visible) or shown_query
        audit(AuditAction.LOOKUP, obj, AuditResult.SUCCESS, note if visible else f"{note}; no match")
    customers = [with_tier_name(customer_dict(c)) for c in visible]
    status = 200 if customers else 404
    return answer("console_lookup.html", status, query=shown_query, customers=customers, searched=True)


def id_lookup_refused(who: Viewer, id_number: str, reason: str, shown_query: str) -> Response | None:
    """Why this look-up by ID number may not go ahead (an answer to send), or None when it may."""
    keys = [f"user {who.username}", f"address {address()}"]
    if not who.may(Permission.CUSTOMER_SEARCH_ID):
        audit(AuditAction.LOOKUP, shown_query, AuditResult.DENIED, "denied: no right to search by ID number")
        # the pen test's own attack (a lobby manager guessing): refused, and repeated, alerted
        for key, count in id_limits().refused(keys, time.time()):
            security_alert(
                who,
                "id_lookup_forbidden",
                f"{count} look-ups by ID number in 24 h for {key} without the right to search by ID"
                " number: guessing a masked number's digits? The audit log has each one.",
            )
        return refuse(
            403,
            _(
                "{user} ({role}) may not search customers by ID number; look them up by customer number"
            ).format(user=who.username, role=who.role.value),
        )
    if request.method != "POST":
        return bad(
            _("send an ID number with the look-up form (POST), never in the address: addresses are logged")
        )
    if not valid_id_number(id_number):
        return bad(
            _("this is not a valid ID number: check every digit (the last character is a check digit)")
        )
    if not reason:
        audit(AuditAction.LOOKUP, shown_query, AuditResult.DENIED, "denied: no reason given")
        return bad(_("say why you search by ID number (a reason is required and audited)"))
    now = time.time()
    wait, limit = id_limits().take(keys, now)
    if not wait:
        return None
    audit(
        AuditAction.LOOKUP, shown_query, AuditResult.DENIED, f"denied: over the limit of {limit} ({reason})"
    )
    for key, count in id_limits().refused(keys, now):
        security_alert(
            who,
            "id_lookup_limit",
            f"{count} look-ups by ID number refused in 24 h for {key} (limit {limit}): guessing a masked"
            " number's digits? The audit log has each one.",
        )
    most, _sep, per = limit.partition(" ")  # "10 a minute": the audit log's words, English
    limit_text = (_("{n} a day") if per == "a day" else _("{n} a minute")).format(n=most)
    shown = _("too many look-ups by ID number ({limit} at most); try again later").format(limit=limit_text)
    response = refuse(429, shown)
    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


@bp.route("/console/photo/<customer_no>")
@require(Permission.CONSOLE_VIEW)
def photo(customer_no: str) -> Any:
    """The customer's photo from the store, else the drawn portrait; audited as a view."""
    who = me()
    found = find_customer(customer_no) if CUSTOMER_NO.fullmatch(customer_no) else None
    if found is None or not may_see(who, found):
        return refuse(404, _("no such customer"))
    audit(AuditAction.VIEW, found.customer_no, AuditResult.SUCCESS, "photo")
    picture = found.photo if found.photo and found.photo.mime in PHOTO_TYPES else avatar_svg(found.name)
    response = Response(picture.data, mimetype=picture.mime)
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    return response


@bp.route("/console/ack/<visit_id>", methods=["POST"])
@require(Permission.VISITS_ACK)
def acknowledge(visit_id: str) -> Any:
    """Acknowledge the notification of ``visit_id`` sent to oneself (``<visit_id>:<username>``)."""
    who = me()
    if not VISIT_ID.fullmatch(visit_id):
        return ack_error(404, _("no such visit"))
    row = one_visit(visit_id)
    mine = [t for t in told_of(row) if t.staff_id == who.username] if row else []
    if not mine:
        return ack_error(404, not_yours(who))
    if mine[0].acknowledged_after is not None:
        return ack_error(409, _("{user} has already acknowledged this arrival").format(user=who.username))
    key = notification_key(visit_id, who.username, unresolved=row is not None and row.kind == "unresolved")
    if not web().branch.acknowledge(key, who.username, at=None, via="web"):
        return ack_error(404, not_yours(who))
    return jsonify({"acknowledged": True, "key": key, "visit_id": visit_id, "staff_id": who.username})


def not_yours(who: Viewer) -> str:
    return _("this arrival was not sent to {user}: nothing to acknowledge").format(user=who.username)


def ack_error(status: int, message: str) -> Response:
    response = jsonify({"error": message, "code": CODES.get(status, "error")})
    response.status_code = status
    return response
