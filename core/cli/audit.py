"""``vipsense audit verify``: check a branch's keyed, hash-chained audit log against its anchors and
name the first broken link."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..i18n import _
from ..storage.audit import (
    AuditKeyError,
    AuditUnreadable,
    anchor_policy,
    audit_path,
    profile_keys,
    verify_file,
)
from . import help_of
from .common import EXIT_FAILED, EXIT_OK, CliError, data_dir_help, load, plugin_host, profile_help


def read_centre_heads(file: str) -> list[tuple[int, str, float]]:
    """The heads ``vipsense centre anchors`` wrote, one JSON line each; a :class:`CliError` naming
    the line for anything else."""
    heads = []
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(_("cannot read {file}: {error}").format(file=file, error=exc)) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            head = json.loads(line)
            seq, digest, at = head["seq"], head["hash"], head["reported_at"]
            if type(seq) is not int or not isinstance(digest, str) or type(at) not in (int, float):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise CliError(
                _(
                    "{file}:{line}: not an audit chain head (a JSON object with seq, hash and reported_at,"
                    " as vipsense centre anchors writes)"
                ).format(file=file, line=number)
            ) from None
        heads.append((seq, digest, float(at)))
    return heads


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Read only: the log is opened read-only and no key file is made, so verifying changes nothing."""
    profile = load(args.profile, plugin_host(), args.data_dir)
    heads = read_centre_heads(args.centre_heads) if args.centre_heads else []
    path = audit_path(profile)
    if not path.exists():
        print(
            _("{path}: no audit log yet (nothing has been audited at this branch)").format(path=path),
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        keys = profile_keys(profile, create=False)
        result = verify_file(path, keys, anchor_policy(profile), centre_heads=heads)
    except AuditUnreadable as exc:
        print(
            _("{path}: cannot read the audit log: {error} (keep this file for the auditors)").format(
                path=path, error=exc
            ),
            file=sys.stderr,
        )
        return EXIT_FAILED
    except (AuditKeyError, OSError) as exc:
        print(_("{path}: cannot verify the audit log: {error}").format(path=path, error=exc), file=sys.stderr)
        return EXIT_FAILED
    if not result.ok:
        print(
            _("{path}: BROKEN after {n} good entries: {problem}").format(
                path=path, n=result.checked, problem=result.problem
            ),
            file=sys.stderr,
        )
        if not keys:
            print(
                _(
                    "{path}: note: there was no audit key to check with: {key} does not exist and the"
                    " profile names no privacy.audit_key"
                ).format(path=path, key=f"{profile.data_dir}/audit.key"),
                file=sys.stderr,
            )
        return EXIT_FAILED
    print(_("{path}: {n} entries, hash chain intact").format(path=path, n=result.checked))
    if heads:
        print(
            _("{path}: all {n} audit chain heads the centre recorded are in the log").format(
                path=path, n=len(heads)
            )
        )
    for note in result.notes:
        print(_("{path}: warning: {note}").format(path=path, note=note), file=sys.stderr)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help=help_of("audit"))
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify_cmd = audit_sub.add_parser(
        "verify", help=_("check the keyed hash chain and its anchors, and name the first broken link")
    )
    verify_cmd.add_argument("profile", help=profile_help())
    verify_cmd.add_argument("--data-dir", help=data_dir_help())
    verify_cmd.add_argument(
        "--centre-heads",
        metavar="FILE",
        help=_("also check the audit chain heads the centre recorded (vipsense centre anchors writes them)"),
    )
    verify_cmd.set_defaults(func=cmd_audit_verify)
