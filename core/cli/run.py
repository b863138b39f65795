"""``vipsense run``: run a branch from its profile, with a live status line on a terminal."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from typing import Any

from .. import __version__
from ..branch import Branch
from ..clock import Clock
from ..i18n import _
from ..output import Output
from ..shutdown import Shutdown
from . import help_of
from .common import EXIT_FAILED, EXIT_OK, data_dir_help, load, plugin_host, profile_help, setup_logging


def _status_line(branch: Branch) -> str:
    c = branch.status.counters
    down = [
        i
        for i, d in branch.status.devices.items()
        if d.state in ("disconnected", "failed", "unavailable", "degraded", "stuck")
    ]
    line = _(
        "{rate} reads/s · arrivals {arrivals} · greeted {greeted} · rejected {rejected}"
        " · re-entries {suppressed} · unknown {unknown}"
    ).format(
        rate=f"{branch.status.reads_per_second():6.0f}",
        arrivals=c["arrivals"],
        greeted=c["greeted"],
        rejected=c["rejected"],
        suppressed=c["suppressed"],
        unknown=c["unknown"],
    )
    held = branch.pipeline.held()
    waiting = sum(h["state"] == "waiting" for h in held)
    unresolved = len(held) - waiting
    if c["unresolved"] or unresolved:
        # cards seen that no identity store could look up: staff were told a card came in
        line += " · " + _("unresolved {n}").format(n=c["unresolved"])
        if unresolved:
            line += _(" ({n} at the door now)").format(n=unresolved)
    if waiting:
        line += " · " + _("{n} waiting for a starting store").format(n=waiting)
    if down:
        line += " · " + _("DOWN: {devices}").format(devices=", ".join(down))
    storage = branch.status.storage.problem()  # a full disk: records are held in memory meanwhile
    if storage:
        line += " · " + _("degraded: {problem}").format(problem=storage)
    return line


def _first_account_hint(web: Any, args: argparse.Namespace) -> str:
    if web.users.list():
        return ""
    where = f" --data-dir {args.data_dir}" if args.data_dir else ""
    command = f"vipsense users add {args.profile}{where} NAME --role admin"
    return _(" (no accounts yet: {command})").format(command=command)


def cmd_run(args: argparse.Namespace) -> int:
    output = Output(live=None if args.status else False)
    setup_logging(args.verbose, output)
    host = plugin_host()
    profile = load(args.profile, host, args.data_dir, outcome=_("nothing was started"))
    shutdown = Shutdown()
    try:
        branch = Branch(profile, host, Clock(args.speed), output)
    except (OSError, sqlite3.Error) as exc:
        problem = _("cannot use the data directory {path}: {error}").format(path=profile.data_dir, error=exc)
        print(f"vipsense: {problem}", file=sys.stderr)
        print(_("Set data_dir in the profile, or pass --data-dir DIR."), file=sys.stderr)
        return EXIT_FAILED
    speed = _(" at {speed}x speed").format(speed=f"{args.speed:g}") if args.speed != 1 else ""
    output.write(
        _("vipsense {version}: branch {name} ({id}){speed}; Ctrl-C stops").format(
            version=__version__, name=profile.branch.name, id=profile.branch.id, speed=speed
        )
    )
    web = None
    with shutdown.handle_signals():
        branch.start()
        if args.web and (profile.web is not None or args.web_port is not None):
            from ..web.server import WebServer
            from ..web.settings import WebSettings

            web = WebServer(branch, profile.web or WebSettings(), port=args.web_port)
            web.start()
            if web.url:
                output.write(_("Branch web: {url}").format(url=web.url) + _first_account_hint(web, args))
        restored = branch.restored
        if restored.present or restored.quiet:
            window = float(profile.presence.reentry_suppress) / 60
            output.write(
                _(
                    "Note: {present} cards were still at the door when the branch last stopped (their"
                    " visits continue) and {quiet} were greeted less than {minutes} minutes before they"
                    " were last seen; none of them is greeted again on return within that window. Use"
                    " --data-dir DIR for a fresh start."
                ).format(present=restored.present, quiet=restored.quiet, minutes=f"{window:g}")
            )
        settle = float(profile.presence.depart_after) + 0.5
        replayed = False
        while not shutdown.wait(0.25):
            output.status(_status_line(branch))
            if branch.readers_finished and not replayed:
                shutdown.wait(branch.clock.real(settle))  # let the last departures land
                if web is None or not web.url:
                    break
                replayed = True  # a replay is over, but someone may be reading the page
                output.write(
                    _("The replay is over; the branch web stays up at {url} until Ctrl-C.").format(
                        url=web.url
                    )
                )
        if web is not None:
            web.stop()
        branch.stop()
    output.clear_status()
    c = branch.status.counters
    unresolved = ""
    if c["unresolved"]:
        unresolved = _(" ({n} unresolved: no identity store answered)").format(n=c["unresolved"])
    output.write(
        _(
            "Stopped. {reads} reads, {arrivals} arrivals: {greeted} greeted, {rejected} rejected,"
            " {suppressed} re-entries suppressed, {unknown} unknown tags{unresolved}. Visits in {path}"
        ).format(
            reads=c["reads"],
            arrivals=c["arrivals"],
            greeted=c["greeted"],
            rejected=c["rejected"],
            suppressed=c["suppressed"],
            unknown=c["unknown"],
            unresolved=unresolved,
            path=branch.visit_log.path,
        )
    )
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help=help_of("run"))
    run.add_argument("profile", help=profile_help())
    run.add_argument("--speed", type=float, default=1.0, help=_("compress branch time (simulations only)"))
    run.add_argument("--data-dir", help=data_dir_help())
    run.add_argument(
        "--web-port",
        type=int,
        metavar="PORT",
        help=_("serve the branch web on this port (0: any free one), with or without web: in the profile"),
    )
    run.add_argument(
        "--no-web",
        dest="web",
        action="store_false",
        help=_("do not serve the branch web, even with web: set"),
    )
    run.add_argument("--no-status", dest="status", action="store_false", help=_("no live status line"))
    run.set_defaults(func=cmd_run)
