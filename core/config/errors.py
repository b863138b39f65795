"""Profile errors that name the file, the line, the key path and what to do."""

from __future__ import annotations

import attrs


@attrs.frozen
class ConfigError:
    file: str
    line: int | None
    path: str  #: key path, e.g. ``readers[0].port``; empty for the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ProfileError(Exception):
    """All the errors found in one profile, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
