"""Profile errors that name the file, the line, the key path and what to do, all in one pass and in
file order (the Home Assistant / ESPHome style: reference/anchors-style.md §4)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import attrs

from ..i18n import lazy_gettext


@attrs.frozen
class ConfigError:
    file: str
    line: int | None
    path: str  #: key path, e.g. ``readers[0].port``; empty for the whole file
    message: str
    column: int | None = None  #: YAML syntax errors and bad bytes only: where on the line

    #: put before the message; a warning says ``warning:`` (in the language in force when shown)
    label: ClassVar[Any] = ""

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.column}" if self.column else f":{self.line}"
        parts = [where, self.path, str(self.label), self.message]
        return ": ".join(p for p in parts if p)


@attrs.frozen
class ConfigWarning(ConfigError):
    """Something that does not stop the branch but probably needs a look, such as a serial device
    that is not plugged in yet."""

    label = lazy_gettext("warning")


def in_file_order(entries: Iterable[ConfigError]) -> list[ConfigError]:
    """Each entry once, sorted by file and line, so the list reads like the files."""
    unique = list(dict.fromkeys(entries))
    return sorted(unique, key=lambda e: (e.file, e.line or 0, e.column or 0))


class ProfileError(Exception):
    """All the errors found in one profile, reported together, and the warnings found with them."""

    def __init__(self, errors: list[ConfigError], warnings: Iterable[ConfigError] = ()) -> None:
        self.errors = errors
        self.warnings = tuple(warnings)
        super().__init__("\n".join(str(e) for e in errors))
