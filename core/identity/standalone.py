"""One plugin object of a profile, built outside a running branch: the command line opens a store,
the issuing station runs a reader, ``sync`` opens the central store and the replica.  They get the
same :class:`vipsense.api.PluginContext` a branch would give them, so a plugin cannot tell the
difference."""

from __future__ import annotations

from typing import Any

from ..clock import Clock
from ..config.profile import ItemConfig, Profile
from ..output import Output
from ..pluginhost import PluginHost


def build(host: PluginHost, profile: Profile, cfg: ItemConfig, clock: Clock | None = None) -> Any:
    """Call the item's factory; whatever it raises is the caller's to report."""
    ctx = profile.plugin_context(cfg, clock or Clock(), Output(live=False))
    return host.types[cfg.kind][cfg.type].factory(cfg.settings, ctx)
