"""``vipsense plugins``: every plugin with its distribution, version, state, and the types and
commands it provides."""

from __future__ import annotations

import argparse
import json
import sys

from ..i18n import _, ngettext
from ..pluginhost import PluginState
from . import help_of
from .common import EXIT_OK, plugin_host, table


def cmd_plugins(args: argparse.Namespace) -> int:
    host = plugin_host()
    rows = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "state": p.state.value,
            "error": p.error,
            "module": p.module,
            "types": [f"{t.kind.value}:{t.name}" for t in p.types]
            + [f"command:{c.name}" for c in p.commands],
        }
        for p in host.plugins
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table_rows = [
        (
            r["name"],
            f"{r['distribution']} {r['version']}".strip() or "-",
            r["state"],
            ", ".join(r["types"]) or "-",
        )
        for r in rows
    ]
    lines = table((_("PLUGIN"), _("DISTRIBUTION"), _("STATE"), _("TYPES")), table_rows)
    indent = " " * (max(len(r["name"]) for r in rows) + 2) if rows else ""
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i and rows[i - 1]["error"]:
            out.append(indent + f"↳ {rows[i - 1]['error']}")
    print("\n".join(out))
    failed = [p for p in host.plugins if p.state is PluginState.FAILED]
    if failed:
        message = ngettext(
            "{n} plugin failed to load; everything else works.",
            "{n} plugins failed to load; everything else works.",
            len(failed),
        )
        print("\n" + message.format(n=len(failed)), file=sys.stderr)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    plugins = sub.add_parser("plugins", help=help_of("plugins"))
    plugins.add_argument("--json", action="store_true", help=_("machine-readable JSON (English keys)"))
    plugins.set_defaults(func=cmd_plugins)
