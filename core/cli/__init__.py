"""The ``vipsense`` command: run a branch, check a profile, list plugins, verify the audit log, and
the card and customer lifecycle.  One module per command group; :mod:`.common` holds what they share
(profile loading, the acting member of staff, the audit log, the store).

A command's module is imported only when that command runs (or shows its ``--help``): ``vipsense
--version`` imports nothing of the branch, and ``vipsense check`` nothing of the web.  The one-line
help of every command is in :data:`COMMANDS`, so ``vipsense --help`` lists them all without importing
any.

``load_host`` is looked up here by every command, so replacing ``vipsense.cli.load_host`` changes the
plugins all of them see.  Plugins may add commands (``vipsense_register_commands``); plugins are loaded
for parsing only when the command named is not a built-in one, so built-in commands start as fast as
before and a broken plugin cannot stop them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..commands import BUILT_IN_COMMANDS

if TYPE_CHECKING:
    from ..pluginhost import PluginHost

__all__ = [
    "BUILT_IN",
    "COMMANDS",
    "EXIT_OK",
    "EXIT_PROFILE",
    "EXIT_USAGE",
    "build_parser",
    "load_host",
    "main",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_PROFILE = EXIT_FAILED


def _(message: str) -> str:
    """Marks a message for the catalogue and leaves it as written (gettext's deferred translation):
    importing Babel here would slow ``vipsense --version``; :func:`help_of` translates it."""
    return message


#: Built-in commands: name -> (the module that registers it, one line of help for ``--help``, in
#: English: :func:`help_of` gives it in the language in force).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", _("run a branch from its profile")),
    "check": ("check", _("validate a profile without opening any device")),
    "audit": ("audit", _("the branch's tamper-evident audit log")),
    "cards": ("cards", _("the card lifecycle: issue, lost, revoke, reissue, import, export")),
    "customers": ("customers", _("import, show and look up customers")),
    "visits": ("visits", _("the branch's visit log: a day's visits and response times, purge")),
    "sync": ("sync", _("refresh the branch replica from the central store once")),
    "keys": ("keys", _("the data key of ID and mobile numbers at rest: rotate, new")),
    "plugins": ("plugins", _("list installed plugins and the types they provide")),
    "users": ("users", _("web accounts: add, list, passwd, disable, enable, unlock")),
    "tokens": ("users", _("third-party API tokens: add, list, revoke")),
    "centre": ("centre", _("the VIP service centre: serve, check, branches and their keys, accounts")),
}
del _
BUILT_IN = BUILT_IN_COMMANDS
#: ``visits --today PROFILE`` and ``visits --date DAY PROFILE`` mean ``visits list ...``
VISITS_LIST_OPTIONS = ("--today", "--date")


def help_of(name: str) -> str:
    """The one line of help of built-in command ``name``, in the language in force (modules register
    their parsers with it)."""
    from ..i18n import gettext

    return gettext(COMMANDS[name][1])


def __getattr__(name: str) -> Any:
    # ``vipsense.cli.load_host`` without importing the plugin host for ``--version``; a test may
    # replace it with monkeypatch.setattr, which then shadows this
    if name == "load_host":
        from ..pluginhost import load_host

        return load_host
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _command_of(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(host: PluginHost | None = None, command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every built-in command, with ``command``'s arguments (the others only
    named, with their help); with ``host``, also the commands its plugins contribute."""
    from ..i18n import _
    from .parsing import install

    install()  # argparse's own words in the language in force, from the start ("-h" is made now)
    parser = argparse.ArgumentParser(
        prog="vipsense", description=_("Recognise VIP customers at the branch door from their RFID card.")
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"vipsense {__version__}",
        help=_("show the version of vipsense and exit"),
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help=_("more log output (-vv: debug)"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = {COMMANDS[command][0]} if command in COMMANDS else set()
    for module in dict.fromkeys(m for m, _help in COMMANDS.values()):  # in table order, each module once
        if module in wanted:
            importlib.import_module(f"{__name__}.{module}").register(sub)
    for name in COMMANDS:
        if name not in sub.choices:  # listed in --help; its module is not needed for this command
            sub.add_parser(name, help=help_of(name))
    for cmd in host.commands.values() if host is not None else ():
        about = _("{help} (plugin {plugin})").format(help=cmd.help, plugin=cmd.plugin).lstrip()
        sub_parser = sub.add_parser(cmd.name, help=about)
        cmd.configure(sub_parser)
    return parser


def _aliases(argv: list[str]) -> list[str]:
    """``visits --today PROFILE`` is ``visits list --today PROFILE``."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            if arg == "visits" and i + 1 < len(argv) and argv[i + 1].split("=")[0] in VISITS_LIST_OPTIONS:
                return [*argv[: i + 1], "list", *argv[i + 1 :]]
            break
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = _aliases(sys.argv[1:] if argv is None else list(argv))
    command = _command_of(argv)
    if argv == ["--version"]:  # the fastest answer, nothing imported; exits as argparse's would
        print(f"vipsense {__version__}")
        raise SystemExit(EXIT_OK)
    from .. import i18n

    # every command speaks the language LANG names (C or none: Chinese); ``run`` switches to the
    # branch's branch.locale when its profile sets one
    i18n.set_default(i18n.from_environment())
    from ..files import private_umask
    from ..i18n import _
    from .common import CliError, ProfileFailed, setup_logging

    private_umask()  # every file a command creates (data, exports) is its owner's alone

    host = None
    if command not in BUILT_IN:  # help, a plugin's command, or a misspelt one: list them all
        from . import load_host

        host = load_host()
    args = build_parser(host, command if command in BUILT_IN else None).parse_args(argv)
    if args.command != "run":
        setup_logging(args.verbose)
    if getattr(args, "speed", 1.0) <= 0:
        print("vipsense: " + _("--speed must be greater than 0"), file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # the reader stopped early (``| head``): no error, and no traceback when Python flushes
        # stdout again at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK
    except ProfileFailed as exc:
        print(exc, file=sys.stderr)
        return EXIT_PROFILE
    except CliError as exc:
        print(f"vipsense: {exc}", file=sys.stderr)
        return EXIT_PROFILE
