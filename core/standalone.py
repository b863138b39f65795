"""One plugin object of a profile, built outside a running branch: the command line opens a store,
the issuing station runs a reader.  They get the same :class:`vipsense.api.PluginContext` a branch
would give them, so a plugin cannot tell the difference."""

from __future__ import annotations

import logging
from typing import Any

from .api import PluginContext
from .clock import Clock
from .config.profile import ItemConfig, Profile
from .output import Output
from .pluginhost import PluginHost


def plugin_context(profile: Profile, cfg: ItemConfig, clock: Clock | None = None) -> PluginContext:
    return PluginContext(
        branch_id=profile.branch.id,
        branch_name=profile.branch.name,
        item_id=cfg.id,
        data_dir=profile.data_dir,
        profile_dir=profile.profile_dir,
        clock=clock or Clock(),
        output=Output(live=False),
        log=logging.getLogger(f"vipsense.{cfg.kind.value}.{cfg.id}"),
        staff={s.id: s for s in profile.staff},
    )


def build(host: PluginHost, profile: Profile, cfg: ItemConfig, clock: Clock | None = None) -> Any:
    """Call the item's factory; whatever it raises is the caller's to report."""
    return host.types[cfg.kind][cfg.type].factory(cfg.settings, plugin_context(profile, cfg, clock))
