"""``vipsense visits purge``: delete visits older than the profile's ``privacy.visit_retention``."""

from __future__ import annotations

import argparse

from ..audit import AuditAction
from ..permissions import Permission
from ..retention import count_visits, describe_cutoff, purge_visits
from .common import EXIT_OK, Act, CliError, Session, add_common, describe, now


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
    visits = sub.add_parser("visits", help="the branch's visit log")
    visits_sub = visits.add_subparsers(dest="visits_command", required=True, metavar="ACTION")
    purge = visits_sub.add_parser("purge", help="delete visits older than privacy.visit_retention")
    add_common(purge, store=False)
    purge.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    purge.add_argument("--reason", default="")
    purge.set_defaults(func=cmd_purge)
