"""The names of the built-in ``vipsense`` commands: the CLI registers them and the plugin host keeps
plugins from taking them.  It lives below both, so neither imports the other."""

from __future__ import annotations

#: The built-in commands, each registered by the CLI (``vipsense.cli.COMMANDS``, kept equal by a test).
BUILT_IN_COMMANDS = frozenset(
    {
        "run",
        "check",
        "audit",
        "cards",
        "customers",
        "visits",
        "sync",
        "keys",
        "plugins",
        "users",
        "tokens",
        "centre",
    }
)

#: Names plugins may not take: the built-in commands and what argparse answers itself.
RESERVED_COMMANDS = BUILT_IN_COMMANDS | {"help", "version"}

__all__ = ["BUILT_IN_COMMANDS", "RESERVED_COMMANDS"]
