"""The ``vipsense`` command: run a branch, check a profile, list plugins."""

from __future__ import annotations

import argparse
import datetime as dt
import enum
import json
import logging
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import attrs
import yaml

from . import __version__
from .audit import AuditLog
from .branch import Branch
from .clock import Clock
from .config import ProfileError, Secret
from .config.profile import Profile, load_profile
from .output import Output
from .pluginhost import PluginHost, PluginState, load_host
from .privacy import mask_field

EXIT_OK, EXIT_PROFILE, EXIT_USAGE = 0, 1, 2


class _OutputHandler(logging.Handler):
    """Log lines go above the live status line instead of through it."""

    def __init__(self, output: Output) -> None:
        super().__init__()
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.output.write(self.format(record))
        except Exception:
            self.handleError(record)


def _setup_logging(verbose: int, output: Output | None = None) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    handler: logging.Handler = _OutputHandler(output) if output and output.live else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _load(path: str, host: PluginHost, data_dir: str | None = None) -> Profile | None:
    try:
        return load_profile(path, host, data_dir=data_dir)
    except ProfileError as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        n = len(exc.errors)
        print(f"{path}: {n} error{'s' if n != 1 else ''}; nothing was started", file=sys.stderr)
        return None


# -- vipsense check ---------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Profile values as YAML-friendly data, secrets masked."""
    if isinstance(value, Secret):
        return "******"
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return float(value)
    if attrs.has(type(value)):
        return {f.name: _plain(mask_field(f.name, getattr(value, f.name))) for f in attrs.fields(type(value))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def cmd_check(args: argparse.Namespace) -> int:
    host = load_host()
    profile = _load(args.profile, host)
    if profile is None:
        return EXIT_PROFILE
    if args.dump:
        print(yaml.safe_dump(_plain(profile), allow_unicode=True, sort_keys=False), end="")
        return EXIT_OK
    kinds = ", ".join(
        f"{len(items)} {name}{'' if len(items) == 1 else 's'}"
        for name, items in (
            ("reader", profile.readers),
            ("store", profile.stores),
            ("notifier", profile.notifiers),
        )
    )
    print(
        f"{args.profile}: OK: branch {profile.branch.id} ({profile.branch.name}): {kinds}, "
        f"{len(profile.routing)} routing rules; data in {profile.data_dir}"
    )
    return EXIT_OK


# -- vipsense plugins -------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    host = load_host()
    rows = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "state": p.state.value,
            "error": p.error,
            "module": p.module,
            "types": [f"{t.kind.value}:{t.name}" for t in p.types],
        }
        for p in host.plugins
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = [
        (
            r["name"],
            f"{r['distribution']} {r['version']}".strip() or "-",
            r["state"],
            ", ".join(r["types"]) or "-",
        )
        for r in rows
    ]
    head = ("PLUGIN", "DISTRIBUTION", "STATE", "TYPES")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table, strict=False)]
    for i, line in enumerate([head, *table]):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
        if i and rows[i - 1]["error"]:
            print(" " * (widths[0] + 2) + f"↳ {rows[i - 1]['error']}")
    failed = [p for p in host.plugins if p.state is PluginState.FAILED]
    if failed:
        print(f"\n{len(failed)} plugin(s) failed to load; everything else works.", file=sys.stderr)
    return EXIT_OK


# -- vipsense run -----------------------------------------------------------------------------------


def _status_line(branch: Branch) -> str:
    c = branch.status.counters
    down = [
        i for i, d in branch.status.devices.items() if d.state in ("disconnected", "failed", "unavailable")
    ]
    line = (
        f"{branch.status.reads_per_second():6.0f} reads/s · arrivals {c['arrivals']} · greeted {c['greeted']}"
        f" · rejected {c['rejected']} · re-entries {c['suppressed']} · unknown {c['unknown']}"
    )
    if down:
        line += f" · DOWN: {', '.join(down)}"
    return line


def cmd_run(args: argparse.Namespace) -> int:
    output = Output(live=None if args.status else False)
    _setup_logging(args.verbose, output)
    host = load_host()
    profile = _load(args.profile, host, args.data_dir)
    if profile is None:
        return EXIT_PROFILE
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    try:
        branch = Branch(profile, host, Clock(args.speed), output)
    except (OSError, sqlite3.Error) as exc:
        print(f"vipsense: cannot use the data directory {profile.data_dir}: {exc}", file=sys.stderr)
        print("Set data_dir in the profile, or pass --data-dir DIR.", file=sys.stderr)
        return EXIT_PROFILE
    speed = f" at {args.speed:g}x speed" if args.speed != 1 else ""
    output.write(
        f"vipsense {__version__}: branch {profile.branch.name} ({profile.branch.id}){speed}; Ctrl-C stops"
    )
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        branch.start()
        if branch.restored:
            window = float(profile.presence.reentry_suppress) / 60
            output.write(
                f"Note: {branch.restored} cards arrived within the last {window:g} minutes (before this "
                "start); they are not greeted again until then. Use --data-dir DIR for a fresh start."
            )
        settle = float(profile.presence.depart_after) + 0.5
        while not stop.wait(0.25):
            output.status(_status_line(branch))
            if branch.readers_finished:
                branch.clock.sleep(settle, stop)  # let the last departures land
                break
        branch.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
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


# -- vipsense audit ---------------------------------------------------------------------------------


def audit_path(profile: Profile) -> Path:
    """Where a branch keeps its audit log."""
    return profile.data_dir / "audit.sqlite3"


def cmd_audit_verify(args: argparse.Namespace) -> int:
    host = load_host()
    profile = _load(args.profile, host, args.data_dir)
    if profile is None:
        return EXIT_PROFILE
    path = audit_path(profile)
    if not path.exists():
        print(f"{path}: no audit log yet (nothing has been audited at this branch)", file=sys.stderr)
        return EXIT_PROFILE
    log = AuditLog(path)
    try:
        result = log.verify()
    finally:
        log.close()
    if result.ok:
        print(f"{path}: {result.checked} entries, hash chain intact")
        return EXIT_OK
    print(f"{path}: BROKEN after {result.checked} good entries: {result.problem}", file=sys.stderr)
    return EXIT_PROFILE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vipsense", description="Recognise VIP customers at the branch door from their RFID card."
    )
    parser.add_argument("--version", action="version", version=f"vipsense {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a branch from its profile")
    run.add_argument("profile", help="the branch profile (YAML)")
    run.add_argument("--speed", type=float, default=1.0, help="compress branch time (simulations only)")
    run.add_argument("--data-dir", help="use this data directory instead of the profile's")
    run.add_argument("--no-status", dest="status", action="store_false", help="no live status line")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a profile without opening any device")
    check.add_argument("profile")
    check.add_argument("--dump", action="store_true", help="print the resolved profile, secrets masked")
    check.set_defaults(func=cmd_check)

    audit = sub.add_parser("audit", help="the branch's tamper-evident audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_sub.add_parser("verify", help="check the hash chain and name the first broken link")
    verify.add_argument("profile")
    verify.add_argument("--data-dir", help="use this data directory instead of the profile's")
    verify.set_defaults(func=cmd_audit_verify)

    plugins = sub.add_parser("plugins", help="list installed plugins and the types they provide")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        _setup_logging(args.verbose)
    if getattr(args, "speed", 1.0) <= 0:
        print("vipsense: --speed must be greater than 0", file=sys.stderr)
        return EXIT_USAGE
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
