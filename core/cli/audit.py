"""``vipsense audit verify``: check a branch's hash-chained audit log and name the first broken link."""

from __future__ import annotations

import argparse
import sys

from ..audit import AuditLog, audit_path
from . import help_of
from .common import EXIT_FAILED, EXIT_OK, load, plugin_host


def cmd_audit_verify(args: argparse.Namespace) -> int:
    profile = load(args.profile, plugin_host(), args.data_dir)
    path = audit_path(profile)
    if not path.exists():
        print(f"{path}: no audit log yet (nothing has been audited at this branch)", file=sys.stderr)
        return EXIT_FAILED
    log = AuditLog(path)
    try:
        result = log.verify()
    finally:
        log.close()
    if result.ok:
        print(f"{path}: {result.checked} entries, hash chain intact")
        return EXIT_OK
    print(f"{path}: BROKEN after {result.checked} good entries: {result.problem}", file=sys.stderr)
    return EXIT_FAILED


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help=help_of("audit"))
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_sub.add_parser("verify", help="check the hash chain and name the first broken link")
    verify.add_argument("profile")
    verify.add_argument("--data-dir", help="use this data directory instead of the profile's")
    verify.set_defaults(func=cmd_audit_verify)
