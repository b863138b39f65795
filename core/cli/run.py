"""``vipsense run``: run a branch from its profile, with a live status line on a terminal."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

import attrs

from .. import __version__
from ..branch import Branch
from ..clock import Clock
from ..config.profile import Profile
from ..config.types import Secret
from ..i18n import _
from ..output import Output
from ..shutdown import Shutdown
from . import help_of
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    data_dir_help,
    load,
    plugin_host,
    profile_help,
    setup_logging,
)


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
    centre = branch.status.snapshot_centre()  # reporting to the centre (centre:): said when it is not
    if centre.get("state") in ("unreachable", "refused", "failed"):
        line += " · " + _("centre: {text}").format(text=centre.get("text", ""))
    return line


def _first_account_hint(web: Any, args: argparse.Namespace) -> str:
    if web.users.list():
        return ""
    where = f" --data-dir {args.data_dir}" if args.data_dir else ""
    command = f"vipsense users add {args.profile}{where} NAME --role admin"
    return _(" (no accounts yet: {command})").format(command=command)


def _serve_centre(profile: Profile, args: argparse.Namespace, output: Output) -> tuple[Any, Profile]:
    """The centre of ``centre: {serve: FILE}``, served beside the branch in this process (the demo: no
    server to install), and the profile with its address and a key made for this run, registered at
    that centre for this branch (as the demo's PDAs get a key of their own each run).  Without the
    branch web (``--no-web``) no centre is served and the branch does not report."""
    from ..centreweb.service import CentreFailed, CentreService
    from ..uplink.settings import resolve
    from .centre import load_centre

    link = profile.centre
    if not args.web:
        output.write(_("Not serving the centre of centre.serve (--no-web): the branch does not report."))
        return None, attrs.evolve(profile, centre=None)
    path = resolve(profile.profile_dir, link.serve)
    data_dir = Path(args.data_dir) / "centre" if args.data_dir else None
    centre_profile = load_centre(path, data_dir, outcome=_("nothing was started"))
    service = CentreService(centre_profile, port=args.centre_port)
    service.on_demo = lambda summary: output.write(
        _("Centre: wrote the demo branches' history ({days} days), once, in {seconds} s").format(
            days=centre_profile.demo.days if centre_profile.demo else 0, seconds=f"{summary.seconds:.1f}"
        )
    )
    try:
        try:
            url = service.start()
        except CentreFailed as exc:
            if args.centre_port is not None or not exc.port_in_use:
                raise
            # the demo's port is taken (another demo?): any free one will do, and the branch is told
            service = CentreService(centre_profile, port=0)
            url = service.start()
            output.write(
                _("Port {port} is in use; the centre serves on {url} instead.").format(
                    port=centre_profile.web.port, url=url
                )
            )
        assert service.keys is not None
        branch = profile.branch
        with_key = service.keys.lookup(branch.id)
        if with_key is not None and with_key.key is not None and not with_key.revoked:
            service.keys.revoke(branch.id)  # last run's key: each run makes its own
        key = service.keys.add(branch.id, branch.name, branch.timezone)
    except CentreFailed as exc:
        service.stop()
        raise CliError(str(exc)) from None
    except BaseException:
        service.stop()
        raise
    output.write(_("Centre web: {url}").format(url=url))
    link = attrs.evolve(link, url=url.rstrip("/"), key=Secret(key, "made for this run"))
    return service, attrs.evolve(profile, centre=link)


def _unusable(profile: Profile, exc: Exception) -> int:
    problem = _("cannot use the data directory {path}: {error}").format(path=profile.data_dir, error=exc)
    print(f"vipsense: {problem}", file=sys.stderr)
    print(_("Set data_dir in the profile, or pass --data-dir DIR."), file=sys.stderr)
    return EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    output = Output(live=None if args.status else False)
    setup_logging(args.verbose, output)
    host = plugin_host()
    profile = load(args.profile, host, args.data_dir, outcome=_("nothing was started"))
    centre = None
    if profile.centre is not None and profile.centre.serve is not None:
        try:  # the branch's own directory first: a bad one is named as such, not as its centre's
            profile.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return _unusable(profile, exc)
        centre, profile = _serve_centre(profile, args, output)
    try:
        return _run(profile, host, args, output)
    finally:
        if centre is not None:
            centre.stop()


def _run(profile: Profile, host: Any, args: argparse.Namespace, output: Output) -> int:
    shutdown = Shutdown()
    try:
        branch = Branch(profile, host, Clock(args.speed), output)
    except (OSError, sqlite3.Error) as exc:
        return _unusable(profile, exc)
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
    run.add_argument(
        "--centre-port",
        type=int,
        metavar="PORT",
        help=_("with centre: serve: in the profile, serve that centre on this port (0: any free one)"),
    )
    run.add_argument("--no-status", dest="status", action="store_false", help=_("no live status line"))
    run.set_defaults(func=cmd_run)
