"""The auditor's view of the audit log: entries by date, action and actor, newest first, a page at a
time, with the chain's verification at the top.

Reading the log is itself recorded (``view`` of ``audit log``, with the filter), before the page is
read, so the auditor's own view is on it.  The page reads through a read-only connection of its
own: it never holds the lock the door's audit writer appends under while it pages.

The chain is not walked again on every view: that took seconds at a million entries, and held the
writers' lock meanwhile.  :class:`vipsense.storage.audit.ChainCheck` remembers the last verified entry and
its hash, checks only what was added since (and that the remembered entry is unchanged), and walks
the whole chain again once an hour, on a thread of its own.  A view waits for it at most
:data:`CHECK_WAIT` seconds; a first walk of a long log shows how far it got.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from typing import Any

import attrs
from flask import Blueprint, render_template, request

from .. import i18n
from ..i18n import _
from ..permissions import Permission
from ..storage.audit import AuditAction, AuditResult, ChainCheck
from ..timezone import day_bounds, local
from .auth import audit, made_once, refuse, require, web

bp = Blueprint("audit_page", __name__)

PER_PAGE = 200
CHECK_WAIT = 0.15  #: seconds a view waits for the chain check to catch up
FULL_EVERY = 3600.0  #: seconds between walks of the whole chain
_COLUMNS = "seq, at, actor, role, branch, action, object, source, reason, result, prev_hash, hash"


class BadFilter(ValueError):
    """A filter value the page cannot use; its message is shown with a 400."""


@attrs.frozen
class Filter:
    since: dt.date | None = None
    until: dt.date | None = None  #: inclusive
    action: str = ""
    actor: str = ""
    page: int = 1

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("from", self.since), ("to", self.until)) if v]
        parts += [f"{k}={v}" for k, v in (("action", self.action), ("actor", self.actor)) if v]
        parts.append(f"page={self.page}")
        return ", ".join(parts)

    def args(self, page: int) -> dict[str, str]:
        """Query arguments for a link to ``page`` with the same filter."""
        out = {"from": str(self.since or ""), "to": str(self.until or ""), "action": self.action}
        out |= {"actor": self.actor, "page": str(page)}
        return {k: v for k, v in out.items() if v}


def _date(name: str, text: str) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BadFilter(
            _("{name}: {value!r} is not a date; use YYYY-MM-DD, e.g. 2024-05-29").format(
                name=name, value=text[:40]
            )
        ) from None


def parse_filter(args: Any) -> Filter:
    since, until = _date("from", args.get("from", "").strip()), _date("to", args.get("to", "").strip())
    if since and until and until < since:
        raise BadFilter(_("to ({until}) is before from ({since})").format(until=until, since=since))
    action = args.get("action", "").strip()
    if action and action not in {a.value for a in AuditAction}:
        known = ", ".join(a.value for a in AuditAction)
        raise BadFilter(
            _("action: {value!r} is no audit action; choose one of {known}").format(
                value=action[:40], known=known
            )
        )
    actor = args.get("actor", "").strip()
    if len(actor) > 64:
        raise BadFilter(_("actor: at most 64 characters"))
    page_text = args.get("page", "1").strip() or "1"
    if not page_text.isdigit() or not 1 <= int(page_text) <= 10**6:
        raise BadFilter(_("page: {value!r} is not a page number (1, 2, ...)").format(value=page_text[:20]))
    return Filter(since, until, action, actor, int(page_text))


def query(path: Any, f: Filter) -> tuple[list[dict[str, Any]], int]:
    """One page of matching entries, newest first, and how many match in all.  Rows stay plain
    dicts, so a hand-edited row (which verify() reports) is still shown as it is."""
    where: list[str] = []
    params: list[float | str] = []
    if f.since:
        where.append("at >= ?")
        params.append(day_bounds(f.since, web().branch.profile.tz)[0])
    if f.until:
        where.append("at < ?")
        params.append(day_bounds(f.until, web().branch.profile.tz)[1])
    for column, value in (("action", f.action), ("actor", f.actor)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    sql_where = (" WHERE " + " AND ".join(where)) if where else ""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    with contextlib.closing(db):
        (total,) = db.execute(f"SELECT COUNT(*) FROM audit{sql_where}", params).fetchone()
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM audit{sql_where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*params, PER_PAGE, (f.page - 1) * PER_PAGE],
        ).fetchall()
    names = _COLUMNS.split(", ")
    return [dict(zip(names, row, strict=True)) for row in rows], total


def chain_check() -> ChainCheck:
    """This web's incremental check of the branch's audit chain, made at the first view."""
    return made_once(
        "audit_check",
        lambda ctx: ChainCheck(ctx.audit.path, ctx.audit.keys, ctx.audit.anchors, full_every=FULL_EVERY),
    )


def when_text(at: float) -> str:
    """An entry's time on the branch's clock, in the viewer's language, to the second (an auditor
    orders entries by it): ``2026年12月7日 10:36:05``, ``Dec 7, 2026 10:36:05``."""
    tz = web().branch.profile.tz
    return f"{i18n.format_date(at, tz)} {local(at, tz):%H:%M:%S}"


@bp.route("/audit")
@require(Permission.AUDIT_VIEW)
def page() -> Any:
    try:
        f = parse_filter(request.args)
    except BadFilter as exc:
        audit(AuditAction.VIEW, "audit log", AuditResult.ERROR, reason=f"bad filter: {exc}")
        return refuse(400, str(exc))
    log = web().audit
    audit(AuditAction.VIEW, "audit log", AuditResult.SUCCESS, reason=f.describe())
    chain = chain_check().look(CHECK_WAIT)
    entries, total = query(log.path, f)
    pages = max(1, -(-total // PER_PAGE))
    return render_template(
        "audit.html",
        entries=entries,
        total=total,
        f=f,
        pages=pages,
        chain=chain,
        verified=chain.result,
        actions=[a.value for a in AuditAction],
        when=when_text,
    )
