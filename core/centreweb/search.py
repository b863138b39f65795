"""Search across branches: one customer's visits at every branch, masked and audited as the branch
console's look-ups are.

``GET|POST /search`` (``visits.view``: head office, branch managers): ``q`` is a customer number
(exact) or a whole ID number, and ``reason`` says why; nothing is shown without a reason, and each
search is audited (``lookup``: who, the customer numbers found or the masked query, the reason).  By
ID number, as at the branch console (pen test point 1): only with ``customers.search_id``, only by
POST (an address ends up in logs), only a valid number, within the per-user and per-address limits
(``web.id_lookup``), through the blind index ``customers.id_index`` under the centre's data key.  A
branch manager sees the customer's visits at their own branch only.  ID and mobile numbers never
appear: customers are shown by number, masked name and tier.
"""

from __future__ import annotations

import math
import time
from typing import Any

import attrs
from flask import Blueprint, Response, jsonify, render_template, request

from ..centre import queries
from ..crypto import CipherError, FieldCipher, profile_cipher
from ..i18n import _
from ..identity.idnumber import valid_id_number
from ..permissions import Permission
from ..privacy import mask_id_number
from ..storage.audit import AuditAction, AuditResult
from ..web.auth import Viewer, address, audit, made_once, refuse, require, wants_json
from ..web.console import CUSTOMER_NO, ID_NUMBER, IdLookupLimits
from .board import database, me, scope, tier_word, visit_view

bp = Blueprint("search", __name__, template_folder="templates")


def cipher() -> FieldCipher:
    """The centre's cipher for the blind index: ``CentreContext.cipher`` if the app made one, else
    one over the centre profile's ``key`` (``centre.key``; else the data directory's key file)."""

    def make(ctx: Any) -> FieldCipher:
        given = getattr(ctx, "cipher", None)
        if isinstance(given, FieldCipher):
            return given
        centre = getattr(ctx.profile, "centre", None)
        return profile_cipher(getattr(centre, "key", None), (), ctx.profile.data_dir)

    return made_once("centre_cipher", make)


def limits() -> IdLookupLimits:
    """How often one may search by ID number (the branch console's limits, ``web.id_lookup``)."""
    return made_once("id_lookup", lambda ctx: IdLookupLimits(ctx.settings.id_lookup))


def answer(status: int, **data: Any) -> Any:
    if wants_json() or request.args.get("format") == "json":
        response = jsonify(data)
        response.status_code = status
        return response
    return render_template("search.html", **data), status


def id_refused(who: Viewer, id_number: str, reason: str, shown: str) -> Response | None:
    """Why this search by ID number may not go ahead (an answer, audited), or None when it may."""
    if not who.may(Permission.CUSTOMER_SEARCH_ID):
        audit(AuditAction.LOOKUP, shown, AuditResult.DENIED, "denied: no right to search by ID number")
        return refuse(
            403,
            _(
                "{user} ({role}) may not search customers by ID number; look them up by customer number"
            ).format(user=who.username, role=who.role.value),
        )
    if request.method != "POST":
        return refuse(
            400,
            _("send an ID number with the look-up form (POST), never in the address: addresses are logged"),
        )
    if not valid_id_number(id_number):
        return refuse(
            400, _("this is not a valid ID number: check every digit (the last character is a check digit)")
        )
    if not reason:
        audit(AuditAction.LOOKUP, shown, AuditResult.DENIED, "denied: no reason given")
        return refuse(400, _("say why you search by ID number (a reason is required and audited)"))
    wait, limit = limits().take([f"user {who.username}", f"address {address()}"], time.time())
    if not wait:
        return None
    audit(AuditAction.LOOKUP, shown, AuditResult.DENIED, f"denied: over the limit of {limit} ({reason})")
    most, _sep, per = limit.partition(" ")
    limit_text = (_("{n} a day") if per == "a day" else _("{n} a minute")).format(n=most)
    response = refuse(
        429, _("too many look-ups by ID number ({limit} at most); try again later").format(limit=limit_text)
    )
    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


@bp.route("/search", methods=["GET", "POST"])
@require(Permission.VISITS_VIEW)
def page() -> Any:
    """The form; with ``q`` and ``reason``, the customer and their visits at every branch in scope."""
    who = me()
    q = (request.values.get("q") or "").strip()
    reason = (request.values.get("reason") or "").strip()[:200]
    if not q:
        return answer(200, query="", customers=[], visits=[], searched=False)
    by_id = bool(ID_NUMBER.fullmatch(q))
    if not by_id and not CUSTOMER_NO.fullmatch(q):
        return refuse(400, _("enter a customer number (letters and digits) or an 18-character ID number"))
    shown = f"id_number {mask_id_number(q)}" if by_id else q
    if by_id:
        q = q.upper()
        refused = id_refused(who, q, reason, shown)
        if refused is not None:
            return refused
        try:
            found = queries.find_by_id_number(database(), cipher(), q)
        except CipherError as exc:
            audit(AuditAction.LOOKUP, shown, AuditResult.ERROR, f"failed: {exc}")
            return refuse(503, str(exc))
    else:
        if not reason:
            audit(AuditAction.LOOKUP, q, AuditResult.DENIED, "denied: no reason given")
            return refuse(400, _("say why you look this customer up (a reason is required and audited)"))
        one = queries.find_customer(database(), q)
        found = [one] if one is not None else []
    allowed = scope(who)
    visits = []
    for customer in found:
        visits += queries.customer_visits(database(), customer.customer_no, allowed)
    visits.sort(key=lambda v: v.arrived_unix, reverse=True)
    if allowed is not None:
        # a branch manager: a customer of their branch (home branch, or a visit there), as a client
        # manager at the console sees their own; another answers as no match, audited as denied
        seen = {v.customer_no for v in visits}
        hidden = [c for c in found if c.home_branch_id not in allowed and c.customer_no not in seen]
        if hidden:
            audit(AuditAction.LOOKUP, ",".join(c.customer_no for c in hidden), AuditResult.DENIED,
                  f"denied: not a customer of branch {','.join(allowed) or '(none)'} ({shown})")  # fmt: skip
        found = [c for c in found if c not in hidden]
        if hidden and not found:
            return answer(404, query=shown, customers=[], visits=[], searched=True)
    where = "every branch" if allowed is None else f"branch {','.join(allowed) or '(none)'}"
    target = ",".join(c.customer_no for c in found) or shown
    note = f"{reason}; {len(visits)} visits at {where}" if found else f"{reason}; no match ({shown})"
    audit(AuditAction.LOOKUP, target, AuditResult.SUCCESS, note)
    zones: dict[str, Any] = {}  # each branch's own clock shows its times
    for v in visits:
        if v.branch_id not in zones:
            info = queries.branch_info(database(), v.branch_id)
            zones[v.branch_id] = queries.zone(info.timezone if info is not None else None)
    return answer(
        200 if found else 404,
        query=shown,
        customers=[attrs.asdict(c) | {"tier_word": tier_word(c.tier)} for c in found],
        visits=[visit_view(v, zones[v.branch_id]) for v in visits],
        searched=True,
    )
