"""``vipsense sync``: refresh the branch replica from the central store once, and say what was copied.

The work is :func:`vipsense.identity.sync.sync_once`, the same refresh a running branch repeats every
``sync.interval``.  It is imported when the command runs, so the rest of the command line works in an
installation without it.
"""

from __future__ import annotations

import argparse
import sys

from ..i18n import _, format_number
from . import help_of
from .common import EXIT_OK, CliError, data_dir_help, load, plugin_host


def cmd_sync(args: argparse.Namespace) -> int:
    try:
        from ..identity.sync import SyncError, sync_once
    except ModuleNotFoundError as exc:
        if exc.name != "vipsense.identity.sync":
            raise
        raise CliError(
            _("vipsense sync is not available in this installation (no vipsense.identity.sync)")
        ) from None
    host = plugin_host()
    profile = load(args.profile, host, args.data_dir)
    try:
        result = sync_once(profile, host)
    except SyncError as exc:
        raise CliError(str(exc)) from None
    print(
        _("synced {source} -> {target}: {cards} cards and {customers} customers in {seconds} s").format(
            source=result.source,
            target=result.target,
            cards=format_number(result.cards),
            customers=format_number(result.customers),
            seconds=f"{result.seconds:.1f}",
        )
    )
    if result.n_skipped:
        more = result.n_skipped - len(result.skipped)
        print(
            _("left out {n} that could not be stored:").format(n=format_number(result.n_skipped)),
            file=sys.stderr,
        )
        for line in result.skipped:
            print(f"  {line}", file=sys.stderr)
        if more:
            print(
                "  " + _("… and {n} more (the log names each)").format(n=format_number(more)), file=sys.stderr
            )
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    sync = sub.add_parser("sync", help=help_of("sync"))
    sync.add_argument("profile", help=_("the branch profile (YAML), with a sync: section"))
    sync.add_argument("--data-dir", help=data_dir_help())
    sync.set_defaults(func=cmd_sync)
