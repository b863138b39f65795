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

from ..permissions import Permission
from ..pipeline import response_times
from ..storage.audit import AuditAction
from ..storage.retention import count_visits, describe_cutoff, purge_visits
from ..timezone import day_bounds, day_of, local
from . import help_of
from .common import EXIT_OK, Act, CliError, Session, add_common, describe, now, table


def _secs(value: float | None) -> str:
    return "-" if value is None else f"+{value:.1f}s" if value < 100 else f"+{value / 60:.0f}m"


def _day(args: argparse.Namespace, tz: ZoneInfo) -> dt.date:
    if args.date is None:
        return day_of(time.time(), tz)  # the branch's today, in its own time zone
    try:
        return dt.date.fromisoformat(args.date)
    except ValueError:
        raise CliError(f"--date {args.date!r}: expected YYYY-MM-DD") from None


def cmd_list(args: argparse.Namespace) -> int:
    with Session(args) as s:
        tz = s.profile.tz
        day = _day(args, tz)
        s.authorize(Permission.VISITS_VIEW, AuditAction.VIEW, Act(f"visits {day.isoformat()}", args.reason))
        since, until = day_bounds(day, tz)
        try:
            visits, records = response_times.load(s.profile.data_dir, since, until)
        except sqlite3.Error as exc:
            raise CliError(f"cannot read the visit log in {s.profile.data_dir}: {exc}") from None
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
    print(f"{day.isoformat()}  {s.profile.branch.name}: {len(visits)} visits")
    rows = []
    for v in visits:
        first = True
        tellings: list[response_times.Told | None] = [*told.get(v.visit_id, [])] or [
            None
        ]  # None: nobody told
        for t in tellings:
            lead = (
                (
                    local(v.arrived_at, tz).strftime("%H:%M:%S"),
                    v.kind,
                    v.customer_no or "-",
                    v.tier or v.reason or "-",
                )
                if first
                else ("", "", "", "")
            )
            first = False
            if t is None:
                rows.append((*lead, "-", "-", "-", "-", ""))
                continue
            note = f"escalated from {t.escalated_from}" if t.escalated_from else ""
            if t.escalated:
                note = "no response: escalated"
            elif t.state in ("failed", "expired"):
                note = t.state
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
    for line in table(
        ("TIME", "KIND", "CUSTOMER", "TIER", "STAFF", "VIA", "DELIVERED", "ACKNOWLEDGED", ""), rows
    ):
        print(line)
    print("\nResponse times (seconds after the customer arrived)")
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
    head = (
        "STAFF",
        "NAME",
        "TOLD",
        "DELIVERED",
        "ACKNOWLEDGED",
        "ESCALATED",
        "DELIVERY p50",
        "ACK p50",
        "ACK p90",
    )
    for line in table(head, srows):
        print(line)
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    with Session(args) as s:
        retention = float(s.profile.privacy.visit_retention)
        path = s.profile.data_dir / "visits.sqlite3"
        at = now()
        s.authorize(Permission.VISITS_PURGE, AuditAction.PURGE, Act("visits", args.reason))
        if retention <= 0:
            print("privacy.visit_retention is 0: visits are kept for ever, nothing to purge")
            return EXIT_OK
        if args.dry_run:  # counts only: nothing is deleted, so nothing is audited
            n = count_visits(path, retention, at)
            print(f"would delete {n:,} visits that arrived before {describe_cutoff(retention, at)}")
            return EXIT_OK
        try:
            who = dict(role=s.role, branch=s.profile.branch.id, source=s.source, reason=args.reason)
            n = purge_visits(path, retention, s.audit, s.actor, at, **who)
        except Exception as exc:  # audited as an error by purge_visits
            raise CliError(f"cannot purge {path}: {describe(exc)}") from None
    print(f"deleted {n:,} visits that arrived before {describe_cutoff(retention, at)} from {path}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    visits = sub.add_parser("visits", help=help_of("visits"))
    visits_sub = visits.add_subparsers(dest="visits_command", required=True, metavar="ACTION")
    listing = visits_sub.add_parser(
        "list", help="a day's visits: who was told, delivered and acknowledged when; staff response times"
    )
    add_common(listing, store=False)
    when = listing.add_mutually_exclusive_group()
    when.add_argument("--today", action="store_true", help="today (the default)")
    when.add_argument("--date", help="another day, YYYY-MM-DD")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--reason", default="", help="why you look (recorded in the audit log)")
    listing.set_defaults(func=cmd_list)
    purge = visits_sub.add_parser("purge", help="delete visits older than privacy.visit_retention")
    add_common(purge, store=False)
    purge.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    purge.add_argument("--reason", default="")
    purge.set_defaults(func=cmd_purge)
