"""``vipsense visits``: ``list`` a day's visits with who was told, when it reached them and when they
acknowledged, and each member of staff's response times (``vipsense visits --today PROFILE`` is
``visits list --today``); ``purge`` deletes visits older than ``privacy.visit_retention``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import time
from zoneinfo import ZoneInfo

import attrs

from ..i18n import _, format_date, format_number, ngettext
from ..model import RejectReason, VisitKind
from ..permissions import Permission
from ..pipeline import response_times
from ..storage.audit import AuditAction
from ..storage.retention import count_visits, describe_cutoff, purge_visits
from ..timezone import day_bounds, day_of, local, moment
from . import help_of
from .common import EXIT_OK, Act, CliError, Session, add_common, describe, now, table


def _secs(value: float | None) -> str:
    return "-" if value is None else f"+{value:.1f}s" if value < 100 else f"+{value / 60:.0f}m"


def _kind(kind: str) -> str:
    """A visit's kind for people (``greeted`` is 已接待 in Chinese), or as stored when unknown."""
    try:
        return VisitKind(kind).label
    except ValueError:
        return kind


def _reason(reason: str | None) -> str:
    """Why a card was refused, for people (``lost``: 卡已挂失), or ``-``."""
    if not reason:
        return "-"
    try:
        return RejectReason(reason).label
    except ValueError:
        return reason


def _day(args: argparse.Namespace, tz: ZoneInfo) -> dt.date:
    if args.date is None:
        return day_of(time.time(), tz)  # the branch's today, in its own time zone
    try:
        return dt.date.fromisoformat(args.date)
    except ValueError:
        raise CliError(_("--date {date!r}: expected YYYY-MM-DD").format(date=args.date)) from None


def cmd_list(args: argparse.Namespace) -> int:
    with Session(args) as s:
        tz = s.profile.tz
        day = _day(args, tz)
        s.authorize(Permission.VISITS_VIEW, AuditAction.VIEW, Act(f"visits {day.isoformat()}", args.reason))
        since, until = day_bounds(day, tz)
        try:
            visits, records = response_times.load(s.profile.data_dir, since, until)
        except sqlite3.Error as exc:
            raise CliError(
                _("cannot read the visit log in {path}: {error}").format(path=s.profile.data_dir, error=exc)
            ) from None
        names = {p.id: p.name for p in s.profile.staff}
    told = response_times.told_by_visit(records)
    staff = response_times.per_staff(records)
    if args.json:
        doc = {
            "date": day.isoformat(),
            "branch": s.profile.branch.id,
            "visits": [
                {**attrs.asdict(v), "told": [attrs.asdict(t) for t in told.get(v.visit_id, [])]}
                for v in visits
            ],
            "staff": {k: {**r.as_dict(), "name": names.get(k, k)} for k, r in staff.items()},
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return EXIT_OK
    midday = moment(day, dt.time(12), tz)
    count = ngettext("{n} visit", "{n} visits", len(visits)).format(n=format_number(len(visits)))
    print(
        _("{day}  {branch}: {visits}").format(
            day=format_date(midday, tz), branch=s.profile.branch.name, visits=count
        )
    )
    rows = []
    for v in visits:
        first = True
        tellings: list[response_times.Told | None] = [*told.get(v.visit_id, [])] or [
            None
        ]  # None: nobody told
        for t in tellings:
            lead = (
                (
                    # to the second, as both languages write it: a response time is seconds
                    local(v.arrived_at, tz).strftime("%H:%M:%S"),
                    _kind(v.kind),
                    v.customer_no or "-",
                    s.profile.tier_name(v.tier) if v.tier else _reason(v.reason),
                )
                if first
                else ("", "", "", "")
            )
            first = False
            if t is None:
                rows.append((*lead, "-", "-", "-", "-", ""))
                continue
            note = _("escalated from {staff}").format(staff=t.escalated_from) if t.escalated_from else ""
            if t.escalated:
                note = _("no response: escalated")
            elif t.state in ("failed", "expired"):
                note = _("failed") if t.state == "failed" else _("expired")
            rows.append(
                (
                    *lead,
                    t.staff_id,
                    ",".join(t.via),
                    _secs(t.delivered_after),
                    _secs(t.acknowledged_after),
                    note,
                )
            )
    head = (
        _("TIME"),
        _("KIND"),
        _("CUSTOMER"),
        _("TIER"),
        _("STAFF"),
        _("VIA"),
        _("DELIVERED"),
        _("ACKNOWLEDGED"),
        "",
    )
    for line in table(head, rows):
        print(line)
    print("\n" + _("Response times (seconds after the customer arrived)"))
    srows = [
        (
            k,
            names.get(k, k),
            r.told,
            r.delivered,
            r.acknowledged,
            r.escalated,
            _secs(r.delivery_p50),
            _secs(r.acknowledgement_p50),
            _secs(r.acknowledgement_p90),
        )
        for k, r in staff.items()
    ]
    shead = (
        _("STAFF"),
        _("NAME"),
        _("TOLD"),
        _("DELIVERED"),
        _("ACKNOWLEDGED"),
        _("ESCALATED"),
        _("DELIVERY p50"),
        _("ACK p50"),
        _("ACK p90"),
    )
    for line in table(shead, srows):
        print(line)
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    with Session(args) as s:
        retention = float(s.profile.privacy.visit_retention)
        path = s.profile.data_dir / "visits.sqlite3"
        at = now()
        s.authorize(Permission.VISITS_PURGE, AuditAction.PURGE, Act("visits", args.reason))
        if retention <= 0:
            print(_("privacy.visit_retention is 0: visits are kept for ever, nothing to purge"))
            return EXIT_OK
        if args.dry_run:  # counts only: nothing is deleted, so nothing is audited
            n = count_visits(path, retention, at)
            message = ngettext(
                "would delete {n} visit that arrived before {cutoff}",
                "would delete {n} visits that arrived before {cutoff}",
                n,
            )
            print(message.format(n=format_number(n), cutoff=describe_cutoff(retention, at)))
            return EXIT_OK
        try:
            who = dict(role=s.role, branch=s.profile.branch.id, source=s.source, reason=args.reason)
            n = purge_visits(path, retention, s.audit, s.actor, at, **who)
        except Exception as exc:  # audited as an error by purge_visits
            raise CliError(_("cannot purge {path}: {error}").format(path=path, error=describe(exc))) from None
    message = ngettext(
        "deleted {n} visit that arrived before {cutoff} from {path}",
        "deleted {n} visits that arrived before {cutoff} from {path}",
        n,
    )
    print(message.format(n=format_number(n), cutoff=describe_cutoff(retention, at), path=path))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    visits = sub.add_parser("visits", help=help_of("visits"))
    visits_sub = visits.add_subparsers(dest="visits_command", required=True, metavar="ACTION")
    listing = visits_sub.add_parser(
        "list", help=_("a day's visits: who was told, delivered and acknowledged when; staff response times")
    )
    add_common(listing, store=False)
    when = listing.add_mutually_exclusive_group()
    when.add_argument("--today", action="store_true", help=_("today (the default)"))
    when.add_argument("--date", help=_("another day, YYYY-MM-DD"))
    listing.add_argument("--json", action="store_true", help=_("machine-readable JSON (English keys)"))
    listing.add_argument("--reason", default="", help=_("why you look (recorded in the audit log)"))
    listing.set_defaults(func=cmd_list)
    purge = visits_sub.add_parser("purge", help=_("delete visits older than privacy.visit_retention"))
    add_common(purge, store=False)
    purge.add_argument("--dry-run", action="store_true", help=_("only count what would be deleted"))
    purge.add_argument("--reason", default="", help=_("why (recorded in the audit log)"))
    purge.set_defaults(func=cmd_purge)
