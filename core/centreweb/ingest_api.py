"""``POST /api/v1/ingest``: where branches report (wire format 1, :mod:`vipsense.centre.ingest`).

A batch is signed with its branch's own key (``X-Vipsense-Branch``, ``X-Vipsense-Timestamp``,
``X-Vipsense-Signature``): no login, no session, no CSRF.  In order, cheapest first, so a stranger
costs the centre as little as possible: the size (``Content-Length`` over 4 MiB is refused before a
byte of the body is read; a chunked body is read up to the limit only), the branch (known, keyed, not
revoked), the signature over the raw body (:func:`vipsense.signing.verify`, freshness included), and
only then the JSON, the branch it names, and the one transaction that applies it.

Every refusal is written to the centre's audit log, and a flood cannot fill it: per source address
the first few refusals in a window are audited one by one, the rest counted into one entry per
window (:class:`vipsense.web.refusals.RefusalGuard`).  Answers are JSON ``{"error", "code"}`` with the
codes of :data:`vipsense.web.auth.CODES`; the error is English, one sentence, for the branch's log
and status.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import attrs
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from ..centre.database import Database
from ..centre.ingest import MAX_BODY, BatchRefused, KeyChanged, apply_batch, parse_batch, unavailable
from ..centre.keys import BranchKeys
from ..i18n import lazy_gettext
from ..privacy import mask_personal_numbers
from ..signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, BadSignature, verify
from ..storage.audit import AuditAction, AuditLog, AuditResult
from ..texts import Text
from ..web import auth
from ..web.refusals import RefusalGuard

log = logging.getLogger("vipsense.centreweb.ingest")

BRANCH_HEADER = "X-Vipsense-Branch"
REFUSAL_BUDGET = 20  #: refusals from one address audited one by one per window; the rest are counted
REFUSAL_TOTAL = 200  #: and from all addresses together
REFUSAL_WINDOW = 60.0  #: seconds
#: seconds a batch's signature may be old (or early) and still be accepted.  Wider than the PDAs'
#: 5 minutes (``signing.MAX_SKEW``): a branch whose clock is 5 minutes off must still report, so the
#: board can show its skew (issue 14, part 6); a replay inside the window changes nothing anyway,
#: since batches apply by position and key (privacy-security.md: authenticate every push).
FRESHNESS = 15 * 60.0
ACTOR = "ingest"  #: the audit actor of a refusal: the branch is unproven until its signature is checked

bp = Blueprint("ingest_api", __name__)

_MADE = threading.Lock()


@attrs.define
class IngestContext:
    """What the ingest needs: the centre's database, audit log and branch keys (the centre's full
    :class:`~vipsense.centreweb.app.CentreContext` answers the same)."""

    database: Database
    audit: AuditLog
    keys: BranchKeys
    extensions: dict[str, Any] = attrs.Factory(dict)


def _context() -> Any:
    found = current_app.extensions.get("vipsense_centre") or current_app.extensions["vipsense"]
    return found


def _guard(ctx: Any) -> RefusalGuard:
    guard = ctx.extensions.get("ingest_refusals")
    if guard is None:
        with _MADE:
            guard = ctx.extensions.get("ingest_refusals")
            if guard is None:
                guard = ctx.extensions["ingest_refusals"] = RefusalGuard(
                    ctx.audit, REFUSAL_BUDGET, REFUSAL_WINDOW, REFUSAL_TOTAL
                )
    return guard


def _answer(status: int, body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _refuse(ctx: Any, refusal: BatchRefused, claimed: str) -> Response:
    """Answer the refusal, and audit it (or count it, beyond the source's budget)."""
    source = _source(ctx)
    branch = claimed[:64] or "?"
    result = AuditResult.ERROR if refusal.status >= 500 else AuditResult.DENIED
    log.warning(
        "ingest: refused a batch from %s for branch %s (%s): %s",
        source,
        mask_personal_numbers(branch),
        refusal.code,
        mask_personal_numbers(refusal.text),
    )
    guard = _guard(ctx)
    try:
        if guard.admit(source) == 0.0:
            ctx.audit.append(
                ACTOR,
                "",
                branch,
                AuditAction.INGEST,
                f"branch {branch}",
                source,
                result,
                reason=f"{refusal.status} {refusal.code}: {refusal.text}",
            )
        else:
            guard.count(source, ACTOR, "", branch, AuditAction.INGEST, result, refusal.code)
    except Exception as exc:  # the audit log cannot take it (a full disk): still answer the branch
        log.error("ingest: cannot audit a refusal: %s", exc)
    return _answer(refusal.status, refusal.answer())


def _too_large() -> BatchRefused:
    return BatchRefused("too_large", Text(lazy_gettext("a batch is {limit} bytes at most"), limit=MAX_BODY))


def _bad_signature() -> Text:
    return Text(lazy_gettext("bad signature (wrong branch key, or the message was altered)"))


def _source(ctx: Any) -> str:
    """The refusal's audit source: the address, or behind a trusted proxy the one it forwarded."""
    address = auth.address() if getattr(ctx, "settings", None) is not None else request.remote_addr
    return f"ingest:{address or '?'}"


def _branch_key(ctx: Any, claimed: str) -> Any:
    """The claimed branch's key (kept a while: :data:`vipsense.centre.keys.CACHE_SECONDS`), or the
    refusal: unknown, keyless or revoked branch, or a database that does not answer."""
    try:
        found = ctx.keys.lookup(claimed) if len(claimed) <= 64 else None
    except Exception as exc:  # the database does not answer, or the key does not open (logged)
        log.error("ingest: cannot look up the key of branch %s: %s", mask_personal_numbers(claimed[:64]), exc)
        raise BatchRefused("unavailable", unavailable()) from None
    if found is None or found.key is None:
        raise BatchRefused(
            "forbidden", Text(lazy_gettext("no branch {branch} at this centre"), branch=claimed[:64])
        )
    if found.revoked:
        raise BatchRefused(
            "forbidden",
            Text(lazy_gettext("branch {branch} is revoked: the centre refuses its reports"), branch=claimed),
        )
    return found


def _read_body() -> bytes | None:
    """The raw body, or None if it is over :data:`MAX_BODY` (read no further than one byte past it)."""
    stream = request.stream
    chunks, size = [], 0
    while size <= MAX_BODY:
        chunk = stream.read(min(65536, MAX_BODY + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > MAX_BODY else b"".join(chunks)


@bp.post("/api/v1/ingest")
def ingest() -> Response:
    """Take one batch from a branch (see the module's docstring for the order of the checks)."""
    ctx = _context()
    claimed = request.headers.get(BRANCH_HEADER, "")
    try:
        if (request.content_length or 0) > MAX_BODY:
            raise _too_large()  # before a byte of the body is read
        if not claimed:
            raise BatchRefused(
                "unauthorized", Text(lazy_gettext("no X-Vipsense-Branch header: say which branch reports"))
            )
        found = _branch_key(ctx, claimed)
        try:
            body = _read_body()
        except RequestEntityTooLarge:
            body = None
        if body is None:
            raise _too_large()
        signed = {h: request.headers.get(h, "") for h in (TIMESTAMP_HEADER, SIGNATURE_HEADER)}
        for fresh in (False, True):
            # a key kept from an earlier batch first; read again once when it no longer opens the
            # signature, or the database holds another key by the time the batch is applied
            if fresh:
                ctx.keys.forget(claimed)
                found = _branch_key(ctx, claimed)
            try:
                verify(found.key, signed, body, max_skew=FRESHNESS)
            except BadSignature as exc:
                if not fresh:
                    continue
                reason = exc.args[0] if exc.args and isinstance(exc.args[0], Text) else None
                raise BatchRefused("unauthorized", reason or _bad_signature()) from None
            batch = parse_batch(body)
            try:
                answer = apply_batch(ctx.database, claimed, batch, time.time(), sealed=found.sealed)
            except KeyChanged:
                if fresh:
                    raise
                continue
            break
    except BatchRefused as refusal:
        return _refuse(ctx, refusal, claimed)
    except ClientDisconnected:
        cut = BatchRefused(
            "bad_request", Text(lazy_gettext("the connection closed before the whole batch came"))
        )
        return _refuse(ctx, cut, claimed)
    except Exception:  # a bug or a database fault that is not transient: logged whole, audited
        log.exception("ingest: branch %s: cannot apply a batch", mask_personal_numbers(claimed[:64]))
        broken = BatchRefused(
            "internal_error",
            Text(lazy_gettext("the centre could not apply the batch; its log has the details")),
        )
        return _refuse(ctx, broken, claimed)
    if answer.audit_finding is not None:  # the branch's audit log was rewritten (vipsense.centre.anchors)
        _audit_finding(ctx, claimed, str(answer.audit_finding.text))
    return _answer(200, answer.json())


def _audit_finding(ctx: Any, branch: str, sentence: str) -> None:
    """Record a rewritten branch audit log in the centre's own (once per finding: see anchors.record)."""
    try:
        ctx.audit.append(
            ACTOR, "", branch, AuditAction.INGEST, f"branch {branch}", _source(ctx), AuditResult.ERROR,
            reason=f"audit anchors: {sentence}",
        )  # fmt: skip
    except Exception as exc:  # the branch row keeps the alarm anyway
        log.error("ingest: cannot audit branch %s's audit alarm: %s", branch, exc)


def create_ingest_app(database: Database, audit: AuditLog, keys: BranchKeys) -> Flask:
    """A Flask app that serves the ingest alone (tests, the bench, a centre without pages)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["vipsense_centre"] = IngestContext(database, audit, keys)
    app.register_blueprint(bp)
    return app


__all__ = ["BRANCH_HEADER", "IngestContext", "bp", "create_ingest_app"]
