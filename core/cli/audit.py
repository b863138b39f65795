"""``vipsense audit verify``: check a branch's keyed, hash-chained audit log against its anchors and
name the first broken link."""

from __future__ import annotations

import argparse
import sys

from ..storage.audit import (
    AuditKeyError,
    AuditUnreadable,
    anchor_policy,
    audit_path,
    profile_keys,
    verify_file,
)
from . import help_of
from .common import EXIT_FAILED, EXIT_OK, load, plugin_host


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Read only: the log is opened read-only and no key file is made, so verifying changes nothing."""
    profile = load(args.profile, plugin_host(), args.data_dir)
    path = audit_path(profile)
    if not path.exists():
        print(f"{path}: no audit log yet (nothing has been audited at this branch)", file=sys.stderr)
        return EXIT_FAILED
    try:
        keys = profile_keys(profile, create=False)
        result = verify_file(path, keys, anchor_policy(profile))
    except AuditUnreadable as exc:
        print(f"{path}: cannot read the audit log: {exc} (keep this file for the auditors)", file=sys.stderr)
        return EXIT_FAILED
    except (AuditKeyError, OSError) as exc:
        print(f"{path}: cannot verify the audit log: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not result.ok:
        print(f"{path}: BROKEN after {result.checked} good entries: {result.problem}", file=sys.stderr)
        if not keys:
            print(
                f"{path}: note: there was no audit key to check with: {profile.data_dir}/audit.key does not"
                " exist and the profile names no privacy.audit_key",
                file=sys.stderr,
            )
        return EXIT_FAILED
    print(f"{path}: {result.checked} entries, hash chain intact")
    for note in result.notes:
        print(f"{path}: warning: {note}", file=sys.stderr)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help=help_of("audit"))
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify_cmd = audit_sub.add_parser(
        "verify", help="check the keyed hash chain and its anchors, and name the first broken link"
    )
    verify_cmd.add_argument("profile")
    verify_cmd.add_argument("--data-dir", help="use this data directory instead of the profile's")
    verify_cmd.set_defaults(func=cmd_audit_verify)
