"""``vipsense check``: validate a profile without opening any device; ``--dump`` prints it resolved."""

from __future__ import annotations

import argparse
import datetime as dt
import enum
from pathlib import Path
from typing import Any

import attrs
import yaml

from ..config import Secret
from ..config.profile import audit_note
from ..crypto import local_key_note
from ..i18n import _, ngettext
from ..privacy import mask_field
from . import help_of
from .common import EXIT_OK, load, plugin_host, profile_help


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
    if isinstance(value, str):  # a SerialPort is a str that YAML cannot represent as itself
        return str(value)
    if attrs.has(type(value)):
        return {f.name: _plain(mask_field(f.name, getattr(value, f.name))) for f in attrs.fields(type(value))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def cmd_check(args: argparse.Namespace) -> int:
    profile = load(args.profile, plugin_host(), outcome=_("nothing was started"))  # prints its warnings
    if args.dump:
        resolved = _plain(profile)
        del resolved["warnings"]  # printed by load(), not part of the profile
        print(yaml.safe_dump(resolved, allow_unicode=True, sort_keys=False), end="")
        return EXIT_OK
    r, s, n = len(profile.readers), len(profile.stores), len(profile.notifiers)
    kinds = _("{readers}, {stores}, {notifiers}").format(
        readers=ngettext("{n} reader", "{n} readers", r).format(n=r),
        stores=ngettext("{n} store", "{n} stores", s).format(n=s),
        notifiers=ngettext("{n} notifier", "{n} notifiers", n).format(n=n),
    )
    w = len(profile.warnings)
    ok = ngettext("OK with {n} warning", "OK with {n} warnings", w).format(n=w) if w else _("OK")
    rules = len(profile.routing)
    print(
        ngettext(
            "{profile}: {ok}: branch {id} ({name}): {kinds}, {n} routing rule; data in {path}",
            "{profile}: {ok}: branch {id} ({name}): {kinds}, {n} routing rules; data in {path}",
            rules,
        ).format(
            profile=args.profile,
            ok=ok,
            id=profile.branch.id,
            name=profile.branch.name,
            kinds=kinds,
            n=rules,
            path=profile.data_dir,
        )
    )
    for store in profile.stores:
        # what a slow store costs an arrival: the grace at start-up, the timeout after
        print(
            "  "
            + _(
                "store {id} ({type}): answers within {timeout} or is skipped; arrivals wait up to {grace}"
                " for it while it starts"
            ).format(
                id=store.id,
                type=store.type,
                timeout=_seconds(store.timeout),
                grace=_seconds(store.start_grace),
            )
        )
    if not any(rule.event == "unresolved" for rule in profile.routing):
        print(
            "  "
            + _(
                "note: no routing rule for 'unresolved': a card that no identity store can look up is shown"
                " on the status page only; add {{event: unresolved, to: lobby_manager, via: [...]}}"
            ).format()
        )
    for note in (
        local_key_note(profile.privacy.data_key, profile.data_dir),
        audit_note(profile.privacy, profile.data_dir),
    ):
        if note:
            print("  " + _("note: {note}").format(note=note))
    return EXIT_OK


def _seconds(value: float | None) -> str:
    seconds = float(value or 0)
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:g} s"  # units: the same in Chinese


def register(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check", help=help_of("check"))
    check.add_argument("profile", help=profile_help())
    check.add_argument("--dump", action="store_true", help=_("print the resolved profile, secrets masked"))
    check.set_defaults(func=cmd_check)
