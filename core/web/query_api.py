"""The third-party query API: token-authenticated JSON, a field whitelist and a rate limit per token,
every call audited, and its OpenAPI document at ``/api/v1/openapi.json`` (:mod:`.query_api_spec`).

* ``Authorization: Bearer <token>`` only: no cookies, so no CSRF.  A missing, unknown or revoked token
  gets the same 401, so a caller learns nothing about which token names exist.
* A token reads only the customer fields it was granted (``vipsense tokens add --fields``); ID and
  mobile numbers go out masked even when granted (privacy-security.md §1, §4 item 3).  Searching by ID
  number needs ``id_number`` among the fields and a reason, like ``vipsense customers search``.
* At most ``per_minute`` calls in any 60 seconds per token (a sliding window, in memory, per process);
  more get 429 with ``Retry-After``.
* Every call is one audit entry (``lookup`` for customers, ``view`` for visits) with actor
  ``token:<name>``, written before the answer goes out: if it cannot be written, no data goes out.
  Refusals before any handler runs (401 without a valid token, 429 over the token's rate) are the
  exception: per source, beyond ``privacy.audit_refusals`` in ``privacy.audit_refusal_window`` they
  are answered the same but only counted, into one entry per window (:mod:`.refusals`), so a flood
  of them cannot flood the audit log.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
from flask import Blueprint, Response, jsonify, request

from ..i18n import _
from ..model import Customer, VisitKind
from ..pipeline.lookup import Outcome, ask, supports
from ..privacy import mask_field, mask_id_number
from ..storage.audit import AuditAction, AuditResult
from ..timezone import day_bounds, local
from . import query_api_spec
from .auth import CODES, made_once, source, web
from .refusals import RefusalGuard
from .users import TOKEN_FIELDS, Token

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__)

WINDOW = 60.0  #: seconds of the rate limit's sliding window
ROLE = "api"  #: the audit role of every token call
# each parameter's check is made from its schema in the document, so the two cannot disagree
_CUSTOMER_NO = query_api_spec.allows(query_api_spec.CUSTOMER_NO)
_ID_NUMBER = query_api_spec.allows(query_api_spec.ID_NUMBER)
_CURSOR = query_api_spec.allows(query_api_spec.CURSOR)
_DATE = query_api_spec.allows(query_api_spec.DATE)
_REASON = query_api_spec.allows(query_api_spec.REASON)
_DOCUMENT = query_api_spec.document()


class ApiError(Exception):
    """An answer other than 200: its status, the caller's message, and what the audit log records."""

    def __init__(
        self, status: int, message: str, result: AuditResult = AuditResult.DENIED, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.result = result
        self.reason = message if reason is None else reason


@attrs.define
class Call:
    """One API call as the audit log will see it; the handler refines ``object`` and ``reason``."""

    action: AuditAction
    object: str
    reason: str = ""  #: the caller's stated reason, then what happened
    actor: str = "token:(none)"

    def note(self, text: str) -> None:
        self.reason = "; ".join(part for part in (self.reason, text) if part)


class RateLimiter:
    """A sliding window of call times per token name; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, name: str, per_minute: int) -> float:
        """Count a call and return 0, or return the seconds until one would be allowed (not counted)."""
        now = self.clock()
        with self._lock:
            calls = self._calls.setdefault(name, deque())
            while calls and calls[0] <= now - WINDOW:
                calls.popleft()
            if len(calls) >= per_minute:  # the limit may have been lowered: wait for enough to expire
                return max(calls[len(calls) - per_minute] + WINDOW - now, 0.001)
            calls.append(now)
            return 0.0


def limiter() -> RateLimiter:
    """This process's limiter (``web().extensions["api"]``), made on first use."""
    return web().extensions.setdefault("api", RateLimiter())


def guard() -> RefusalGuard:
    """This web's guard of the audit log against floods of refusals (``web().extensions["refusals"]``),
    made on first use with the profile's ``privacy.audit_refusals`` and ``audit_refusal_window``."""

    def make(ctx: Any) -> RefusalGuard:
        p = ctx.profile.privacy
        return RefusalGuard(
            ctx.audit, int(p.audit_refusals), float(p.audit_refusal_window), int(p.audit_refusals_total)
        )

    return made_once("refusals", make)


# -- answering ---------------------------------------------------------------------------------------


def _error(status: int, message: str) -> Response:
    """``{"error": message, "code": ...}``: the message in the caller's language (Accept-Language, else
    the branch's), the code English and stable for programs to test."""
    response = jsonify({"error": message, "code": CODES.get(status, "error")})
    response.status_code = status
    return response


def _unauthorized(problem: str) -> Response:
    response = _error(401, _("a valid bearer token is needed (Authorization: Bearer <token>)"))
    detail = ', error="invalid_token"' if problem != "no bearer token" else ""
    response.headers["WWW-Authenticate"] = f'Bearer realm="vipsense"{detail}'
    return response


def _authenticate() -> tuple[Token | None, str]:
    """The request's active token, or None and why not (for the audit log only)."""
    scheme, _space, presented = request.headers.get("Authorization", "").strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return None, "no bearer token"
    if len(presented) > 200 or not presented.isascii():
        return None, "unknown or revoked token"
    token = web().users.token(presented)
    return (token, "") if token is not None else (None, "unknown or revoked token")


def _audit(call: Call, result: AuditResult, reason: str) -> None:
    ctx = web()
    ctx.audit.append(
        call.actor, ROLE, ctx.profile.branch.id, call.action, call.object, source(), result, reason=reason
    )


def _serve(call: Call, handler: Callable[[Call, Token], dict[str, Any]]) -> Response:
    """Authenticate, rate-limit, run ``handler``, audit the outcome, answer: never a traceback."""
    token, problem = _authenticate()
    if token is None:
        call.actor = "token:(unknown)" if problem != "no bearer token" else call.actor
        return _refused(call, _unauthorized(problem), problem)
    call.actor = f"token:{token.name}"
    wait = limiter().take(token.name, token.per_minute)
    if wait:
        response = _error(429, _("rate limit: {n} calls a minute; retry later").format(n=token.per_minute))
        response.headers["Retry-After"] = _seconds(wait)
        return _refused(call, response, f"rate limited ({token.per_minute}/min)")
    try:
        body = handler(call, token)
    except ApiError as exc:
        return _finish(call, _error(exc.status, exc.message), exc.result, _joined(call.reason, exc.reason))
    except Exception:
        log.exception("api: %s %s failed", request.method, request.path)
        return _finish(
            call, _error(500, _("internal error; the branch log has the details")), AuditResult.ERROR
        )
    return _finish(call, jsonify(body), AuditResult.SUCCESS, call.reason)


def _seconds(wait: float) -> str:
    return str(min(60, max(1, math.ceil(wait))))


def _refused(call: Call, response: Response, why: str) -> Response:
    """A call refused before any handler ran (401, or 429 over its token's rate): audited one by one
    within its source's budget of refusals; beyond it, counted with nothing written now
    (:mod:`.refusals`).  Checked before the audit log is touched.  The answer is the same either way:
    the costly part of a flood was the synced audit write, and a standard 401 keeps clients right."""
    where, keeper = source(), guard()
    if not keeper.admit(where):
        return _finish(call, response, AuditResult.DENIED, why)
    keeper.count(where, call.actor, ROLE, web().profile.branch.id, call.action, AuditResult.DENIED, why)
    return response


def _finish(call: Call, response: Response, result: AuditResult, reason: str = "") -> Response:
    """Audit first; when that fails, answer 503 instead (no data goes out unrecorded)."""
    try:
        _audit(call, result, reason)
    except Exception:
        log.exception("api: cannot write the audit entry for %s %s", request.method, request.path)
        return _error(503, _("the audit log cannot be written; try again later"))
    return response


def _joined(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


# -- input -------------------------------------------------------------------------------------------


def _shown(value: str, limit: int = 64) -> str:
    """A caller-supplied value as the audit log may hold it: printable and bounded."""
    text = "".join(c if c.isprintable() else "?" for c in value[:limit])
    return text + ("..." if len(value) > limit else "")


def _reason(value: Any, required: bool) -> str:
    """The caller's reason, trimmed; absent is "" where allowed, but an empty one is refused as the
    document says (``minLength: 1``)."""
    if value is None:
        if required:
            raise ApiError(400, _("reason is required: why you look (e.g. phone appointment)"))
        return ""
    if not _REASON(value):
        raise ApiError(
            400,
            _("reason: 1 to {n} characters, not all spaces, no control characters").format(
                n=query_api_spec.REASON_MAX
            ),
        )
    return value.strip()


def _id_number(value: Any) -> str:
    if not _ID_NUMBER(value):
        raise ApiError(400, _("id_number: 18 characters, 17 digits and a digit or X"))
    return value.upper()


# -- customers ---------------------------------------------------------------------------------------


def _fields(token: Token) -> tuple[str, ...]:
    """The token's fields that are customer fields at all (a stray name in the store reads nothing)."""
    return tuple(f for f in TOKEN_FIELDS if f in token.fields)


def project(customer: Customer, fields: tuple[str, ...]) -> dict[str, str | None]:
    """Only ``fields`` of ``customer``, ID and mobile numbers masked."""
    out: dict[str, str | None] = {}
    for name in fields:
        value = getattr(customer, name)
        out[name] = mask_field(name, str(value)) if value not in (None, "") else None
    return out


def _ask(method: str, key: str) -> Any:
    """Ask each store in profile order, like the door does (:func:`vipsense.pipeline.lookup.ask`)."""
    runners = [r for r in web().branch.stores if supports(r.store, method)]
    if not runners:
        raise ApiError(501, _("no identity store of this branch can search by ID number"), AuditResult.ERROR)
    found = ask(runners, method, key)
    if found.outcome is Outcome.FOUND:
        return found.result
    if found.outcome is Outcome.NOT_FOUND:
        return None
    raise ApiError(503, _("no identity store answered; try again later"), AuditResult.ERROR)


def _by_number(customer_no: str) -> Callable[[Call, Token], dict[str, Any]]:
    def handler(call: Call, token: Token) -> dict[str, Any]:
        call.note(_reason(request.args.get("reason"), required=False))
        if not _CUSTOMER_NO(customer_no):
            raise ApiError(400, _("customer_no: 1 to 64 letters, digits, '.', '_' or '-'"))
        customer = _ask("find_customer", customer_no)
        if customer is None:
            raise ApiError(404, _("no such customer"), AuditResult.SUCCESS, "no match")
        return {"customer": project(customer, _fields(token))}

    return handler


def _by_id_number(id_number: Any, reason: Any) -> Callable[[Call, Token], dict[str, Any]]:
    def handler(call: Call, token: Token) -> dict[str, Any]:
        if "id_number" not in token.fields:
            raise ApiError(
                403, _("this token may not search by ID number (id_number is not among its fields)")
            )
        number = _id_number(id_number)
        call.note(_reason(reason, required=True))
        found = _ask("find_customers_by_id_number", number) or []
        if not found:
            raise ApiError(404, _("no customer has this ID number"), AuditResult.SUCCESS, "no match")
        call.object = f"{call.object}: {','.join(c.customer_no for c in found)}"
        return {"customers": [project(c, _fields(token)) for c in found]}

    return handler


def _id_object(value: Any) -> str:
    return (
        f"id_number {mask_id_number(_shown(value.upper(), 20))}" if isinstance(value, str) else "id_number ?"
    )


@bp.route("/api/v1/customers/<customer_no>")
def customer(customer_no: str) -> Response:
    return _serve(Call(AuditAction.LOOKUP, f"customer {_shown(customer_no)}"), _by_number(customer_no))


@bp.route("/api/v1/customers")
def customers_by_query() -> Response:
    """The ID number in the URL: accepted, but POST .../search keeps it out of access logs."""
    number = request.args.get("id_number")
    call = Call(AuditAction.LOOKUP, _id_object(number))
    return _serve(call, _by_id_number(number, request.args.get("reason")))


def _json_object() -> dict[str, Any] | None:
    """The request's body when it is a JSON object, else None: not JSON, not an object, not UTF-8, or
    nested too deep for the parser (a 30,000-deep array recursed past Python's limit: a 500 before
    anything was audited, pen test point 11).  The body is at most ``MAX_CONTENT_LENGTH`` long."""
    if not request.is_json:
        return None
    try:
        body = json.loads(request.get_data(cache=True))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return body if isinstance(body, dict) else None


@bp.route("/api/v1/customers/search", methods=["POST"])
def customers_search() -> Response:
    body = _json_object()
    call = Call(AuditAction.LOOKUP, _id_object(body.get("id_number") if body is not None else None))

    def handler(call: Call, token: Token) -> dict[str, Any]:
        if body is None or set(body) - {"id_number", "reason"}:
            raise ApiError(
                400, _('a JSON object {{"id_number": ..., "reason": ...}} and nothing else').format()
            )
        return _by_id_number(body.get("id_number"), body.get("reason"))(call, token)

    return _serve(call, handler)


# -- visits ------------------------------------------------------------------------------------------


@attrs.frozen
class VisitQuery:
    since: float
    until: float
    kind: str | None
    limit: int
    after: tuple[float, str] | None  #: the cursor: the last (arrived_at, visit_id) already sent


def _date(name: str) -> dt.date:
    value = request.args.get(name, "")
    try:
        if not _DATE(value):
            raise ValueError
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, _("{name}: a date, YYYY-MM-DD, from 1970").format(name=name)) from None


def _bounds(first: dt.date, last: dt.date) -> tuple[float, float]:
    try:
        tz = web().branch.profile.tz  # the branch's days
        return day_bounds(first, tz)[0], day_bounds(last, tz)[1]
    except (ValueError, OverflowError, OSError):  # the day after 9999-12-31, or the platform's limit
        raise ApiError(400, _("from..to: out of range")) from None


def encode_cursor(arrived_at: float, visit_id: str) -> str:
    return base64.urlsafe_b64encode(f"{arrived_at!r} {visit_id}".encode()).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        if not _CURSOR(cursor):
            raise ValueError
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        at, visit_id = text.split(" ", 1)
        value = float(at)
        if not math.isfinite(value) or not visit_id:
            raise ValueError
        return value, visit_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, _("cursor: not one this API gave out")) from None


def _visit_query() -> VisitQuery:
    first, last = _date("from"), _date("to")
    if last < first:
        raise ApiError(400, _("to: on or after from"))
    if (last - first).days >= query_api_spec.MAX_DAYS:
        raise ApiError(400, _("from..to: at most {n} days").format(n=query_api_spec.MAX_DAYS))
    kind = request.args.get("kind")  # present but empty is no kind: 400, as the document's enum says
    if kind is not None and kind not in {k.value for k in VisitKind}:
        raise ApiError(400, _("kind: one of {kinds}").format(kinds=", ".join(k.value for k in VisitKind)))
    raw = request.args.get("limit", str(query_api_spec.DEFAULT_LIMIT))
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= query_api_spec.MAX_LIMIT:
        raise ApiError(400, _("limit: a whole number from 1 to {n}").format(n=query_api_spec.MAX_LIMIT))
    cursor = request.args.get("cursor")
    after = decode_cursor(cursor) if cursor is not None else None
    return VisitQuery(*_bounds(first, last), kind, int(raw), after)


def read_visits(path: Path, q: VisitQuery) -> list[tuple]:
    """One page (and one row more, to know whether there is a next), read-only, oldest first."""
    if not path.exists():
        return []
    where = ["arrived_at >= ?", "arrived_at < ?"]
    args: list[Any] = [q.since, q.until]
    if q.kind is None:
        where.append("kind != 'suppressed'")
    else:
        where.append("kind = ?")
        args.append(q.kind)
    if q.after is not None:
        where.append("(arrived_at > ? OR (arrived_at = ? AND visit_id > ?))")
        args += [q.after[0], q.after[0], q.after[1]]
    sql = (
        "SELECT visit_id, arrived_at, kind, reason, customer_no, tier, acknowledged_at, acknowledged_by"
        f" FROM visits WHERE {' AND '.join(where)} ORDER BY arrived_at, visit_id LIMIT ?"
    )
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as db:
        return db.execute(sql, [*args, q.limit + 1]).fetchall()


def iso(at: float | None) -> str | None:
    """UNIX time as ISO 8601 in the branch's time zone, with its offset."""
    if at is None:
        return None
    return local(at, web().branch.profile.tz).isoformat(timespec="milliseconds")


def visit_json(row: tuple, fields: tuple[str, ...]) -> dict[str, Any]:
    visit_id, arrived_at, kind, reason, customer_no, tier, acked_at, acked_by = row
    out: dict[str, Any] = {
        "visit_id": visit_id,
        "arrived_at": iso(arrived_at),
        "kind": kind,
        "reason": reason,
    }
    if "customer_no" in fields:
        out["customer_no"] = customer_no
    if "tier" in fields:
        out["tier"] = tier
    out.update(acknowledged_at=iso(acked_at), acknowledged_by=acked_by)
    return out


def _visits(call: Call, token: Token) -> dict[str, Any]:
    q = _visit_query()
    call.object = f"visits {request.args['from']}..{request.args['to']}" + (f" {q.kind}" if q.kind else "")
    try:
        rows = read_visits(web().branch.visit_log.path, q)
    except sqlite3.Error as exc:
        message = _("the visit log cannot be read now; try again later")
        raise ApiError(503, message, AuditResult.ERROR, str(exc)) from None
    page, more = rows[: q.limit], len(rows) > q.limit
    call.note(f"{len(page)} visits")
    fields = _fields(token)
    return {
        "visits": [visit_json(r, fields) for r in page],
        "next_cursor": encode_cursor(page[-1][1], page[-1][0]) if more else None,
    }


@bp.route("/api/v1/visits")
def visits() -> Response:
    return _serve(Call(AuditAction.VIEW, "visits"), _visits)


@bp.route("/api/v1/openapi.json")
def openapi() -> Any:
    """Public: integrators and schemathesis read it before they have a token."""
    return jsonify(_DOCUMENT)
