"""``vipsense run``: run a branch from its profile, with a live status line on a terminal."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from typing import Any

from .. import __version__
from ..branch import Branch
from ..clock import Clock
from ..output import Output
from ..shutdown import Shutdown
from . import help_of
from .common import EXIT_FAILED, EXIT_OK, load, plugin_host, setup_logging


def _status_line(branch: Branch) -> str:
    c = branch.status.counters
    down = [
        i
        for i, d in branch.status.devices.items()
        if d.state in ("disconnected", "failed", "unavailable", "degraded", "stuck")
    ]
    line = (
        f"{branch.status.reads_per_second():6.0f} reads/s · arrivals {c['arrivals']} · greeted {c['greeted']}"
        f" · rejected {c['rejected']} · re-entries {c['suppressed']} · unknown {c['unknown']}"
    )
    held = branch.pipeline.held()
    waiting = sum(h["state"] == "waiting" for h in held)
    unresolved = len(held) - waiting
    if c["unresolved"] or unresolved:
        # cards seen that no identity store could look up: staff were told a card came in
        line += f" · unresolved {c['unresolved']}" + (
            f" ({unresolved} at the door now)" if unresolved else ""
        )
    if waiting:
        line += f" · {waiting} waiting for a starting store"
    if down:
        line += f" · DOWN: {', '.join(down)}"
    storage = branch.status.storage.problem()  # a full disk: records are held in memory meanwhile
    if storage:
        line += f" · degraded: {storage}"
    return line


def _first_account_hint(web: Any, args: argparse.Namespace) -> str:
    if web.users.list():
        return ""
    where = f" --data-dir {args.data_dir}" if args.data_dir else ""
    return f" (no accounts yet: vipsense users add {args.profile}{where} NAME --role admin)"


def cmd_run(args: argparse.Namespace) -> int:
    output = Output(live=None if args.status else False)
    setup_logging(args.verbose, output)
    host = plugin_host()
    profile = load(args.profile, host, args.data_dir, outcome="nothing was started")
    shutdown = Shutdown()
    try:
        branch = Branch(profile, host, Clock(args.speed), output)
    except (OSError, sqlite3.Error) as exc:
        print(f"vipsense: cannot use the data directory {profile.data_dir}: {exc}", file=sys.stderr)
        print("Set data_dir in the profile, or pass --data-dir DIR.", file=sys.stderr)
        return EXIT_FAILED
    speed = f" at {args.speed:g}x speed" if args.speed != 1 else ""
    output.write(
        f"vipsense {__version__}: branch {profile.branch.name} ({profile.branch.id}){speed}; Ctrl-C stops"
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
                output.write(f"Branch web: {web.url}" + _first_account_hint(web, args))
        restored = branch.restored
        if restored.present or restored.quiet:
            window = float(profile.presence.reentry_suppress) / 60
            output.write(
                f"Note: {restored.present} cards were still at the door when the branch last stopped "
                f"(their visits continue) and {restored.quiet} were greeted less than {window:g} minutes "
                "before they were last seen; none of them is greeted again on return within that "
                "window. Use --data-dir DIR for a fresh start."
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
                output.write(f"The replay is over; the branch web stays up at {web.url} until Ctrl-C.")
        if web is not None:
            web.stop()
        branch.stop()
    output.clear_status()
    c = branch.status.counters
    output.write(
        f"Stopped. {c['reads']} reads, {c['arrivals']} arrivals: {c['greeted']} greeted, "
        f"{c['rejected']} rejected, {c['suppressed']} re-entries suppressed, {c['unknown']} unknown tags"
        + (f" ({c['unresolved']} unresolved: no identity store answered)" if c["unresolved"] else "")
        + ". "
        f"Visits in {branch.visit_log.path}"
    )
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help=help_of("run"))
    run.add_argument("profile", help="the branch profile (YAML)")
    run.add_argument("--speed", type=float, default=1.0, help="compress branch time (simulations only)")
    run.add_argument("--data-dir", help="use this data directory instead of the profile's")
    run.add_argument(
        "--web-port",
        type=int,
        metavar="PORT",
        help="serve the branch web on this port (0: any free one), with or without web: in the profile",
    )
    run.add_argument(
        "--no-web", dest="web", action="store_false", help="do not serve the branch web, even with web: set"
    )
    run.add_argument("--no-status", dest="status", action="store_false", help="no live status line")
    run.set_defaults(func=cmd_run)
