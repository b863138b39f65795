"""The ``vipsense`` command: run a branch, check a profile, list plugins, verify the audit log, and
the card and customer lifecycle.  One module per command group; :mod:`.common` holds what they share
(profile loading, the acting member of staff, the audit log, the store).

``load_host`` is looked up here by every command, so replacing ``vipsense.cli.load_host`` changes the
plugins all of them see.  Plugins may add commands (``vipsense_register_commands``); plugins are loaded
for parsing only when the command named is not a built-in one, so built-in commands start as fast as
before and a broken plugin cannot stop them.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..audit import audit_path
from ..pluginhost import PluginHost, load_host
from . import audit, cards, check, customers, plugins, run, sync, users, visits
from .check import _plain, cmd_check
from .common import EXIT_OK, EXIT_PROFILE, EXIT_USAGE, CliError, ProfileFailed, setup_logging

__all__ = [
    "EXIT_OK",
    "EXIT_PROFILE",
    "EXIT_USAGE",
    "_plain",
    "audit_path",
    "build_parser",
    "cmd_check",
    "load_host",
    "main",
]

COMMANDS = (run, check, audit, cards, customers, visits, sync, plugins, users)
BUILT_IN = frozenset(
    {"run", "check", "audit", "cards", "customers", "visits", "sync", "plugins", "users", "tokens"}
)


def build_parser(host: PluginHost | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``host``, also the commands its plugins contribute."""
    parser = argparse.ArgumentParser(
        prog="vipsense", description="Recognise VIP customers at the branch door from their RFID card."
    )
    parser.add_argument("--version", action="version", version=f"vipsense {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    for cmd in host.commands.values() if host is not None else ():
        sub_parser = sub.add_parser(cmd.name, help=f"{cmd.help} (plugin {cmd.plugin})".lstrip())
        cmd.configure(sub_parser)
    return parser


def _wants_plugin_commands(argv: list[str]) -> bool:
    """True unless ``argv`` names a built-in command (help and unknown names list them all)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first not in BUILT_IN


def _aliases(argv: list[str]) -> list[str]:
    """``visits --today PROFILE`` is ``visits list --today PROFILE``."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            if arg == "visits" and i + 1 < len(argv) and argv[i + 1].split("=")[0] in visits.LIST_OPTIONS:
                return [*argv[: i + 1], "list", *argv[i + 1 :]]
            break
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = _aliases(sys.argv[1:] if argv is None else list(argv))
    host = load_host() if _wants_plugin_commands(argv) else None
    args = build_parser(host).parse_args(argv)
    if args.command != "run":
        setup_logging(args.verbose)
    if getattr(args, "speed", 1.0) <= 0:
        print("vipsense: --speed must be greater than 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except ProfileFailed as exc:
        print(exc, file=sys.stderr)
        return EXIT_PROFILE
    except CliError as exc:
        print(f"vipsense: {exc}", file=sys.stderr)
        return EXIT_PROFILE
