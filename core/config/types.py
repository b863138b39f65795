"""Value types that settings classes use: durations written like ``500ms`` and masked secrets."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


class Duration(float):
    """Seconds.  A profile writes ``500ms``, ``2s``, ``10m``, ``1h``, ``180d`` or a bare number of seconds."""

    @classmethod
    def parse(cls, value: object) -> Duration:
        if isinstance(value, bool):
            raise ValueError(f"expected a duration such as 500ms, 2s or 10m, got {value!r}")
        if isinstance(value, int | float):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"a duration must be a finite, non-negative time, got {value!r}")
            return cls(value)
        if isinstance(value, str):
            m = _DURATION.match(value)
            if m:
                return cls(float(m.group(1)) * _UNIT[m.group(2)])
        raise ValueError(f"expected a duration such as 500ms, 2s or 10m, got {value!r}")

    def __repr__(self) -> str:
        return f"Duration({float(self)!r})"


class Secret:
    """A value from ``!secret`` or ``!env`` that is never printed: ``str`` and ``repr`` mask it."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        self.source = source  #: e.g. ``secrets.yaml:ldap_password`` or ``env:LDAP_PW``

    def reveal(self) -> str:
        """The real value, for the one call that needs it (a bind, a login)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('******', source={self.source!r})" if self.source else "Secret('******')"

    def __str__(self) -> str:
        return "******"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
