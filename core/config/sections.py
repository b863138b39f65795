"""Top-level profile sections declared by the layers above config, such as the web's ``web:``.

The layer that owns a section registers its settings class (and any check that needs the whole
section) when it is imported; the profile loader then reads the section like its own keys, so config
never imports the layers above it.  ``SECTION_PROVIDERS`` names the modules that register one: the
loader imports them by name before it reads a profile, as it would an entry point.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

from .yamlload import KeyPath

#: Modules that register a profile section when imported (``vipsense.web``: the ``web:`` section;
#: ``vipsense.uplink``: ``centre:``).
SECTION_PROVIDERS = ("vipsense.web", "vipsense.uplink")


class SectionReport(Protocol):
    """Where a section's check reports; key paths are relative to the section."""

    def error(self, path: KeyPath, message: str) -> None: ...

    def warn(self, path: KeyPath, message: str) -> None: ...


#: ``check(settings, profile_dir, report)``: a section's checks that need more than its own fields,
#: such as files it names; run once the section itself is valid.
SectionCheck = Callable[[Any, Path, SectionReport], None]


@attrs.frozen
class Section:
    name: str  #: the top-level key, also the :class:`~vipsense.config.profile.Profile` attribute
    settings_class: type  #: a frozen attrs class, structured like the profile's own sections
    check: SectionCheck | None = None


_registered: dict[str, Section] = {}


def register(name: str, settings_class: type, check: SectionCheck | None = None) -> None:
    """Declare the top-level section ``name:`` of a profile (optional, ``None`` when absent)."""
    _registered[name] = Section(name, settings_class, check)


def registered() -> Mapping[str, Section]:
    """Every declared section, its providers imported first, in registration order."""
    for module in SECTION_PROVIDERS:
        importlib.import_module(module)
    return dict(_registered)


__all__ = ["SECTION_PROVIDERS", "Section", "SectionCheck", "SectionReport", "register", "registered"]
