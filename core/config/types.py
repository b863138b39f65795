"""Value types that settings classes use: durations written like ``500ms``, masked secrets and serial
ports that ``vipsense check`` looks for on this machine."""

from __future__ import annotations

import glob
import math
import os
import re

from ..i18n import _

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


class Duration(float):
    """Seconds.  A profile writes ``500ms``, ``2s``, ``10m``, ``1h``, ``180d`` or a bare number of seconds."""

    @classmethod
    def parse(cls, value: object) -> Duration:
        if isinstance(value, bool):
            raise ValueError(
                _("expected a duration such as 500ms, 2s or 10m, got {value!r}").format(value=value)
            )
        if isinstance(value, int | float):
            if not math.isfinite(value) or value < 0:
                message = _("a duration must be a finite, non-negative time, got {value!r}")
                raise ValueError(message.format(value=value))
            return cls(value)
        if isinstance(value, str):
            m = _DURATION.match(value)
            if m:
                return cls(float(m.group(1)) * _UNIT[m.group(2)])
        raise ValueError(_("expected a duration such as 500ms, 2s or 10m, got {value!r}").format(value=value))

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


#: pyserial opens these by URL (``socket://host:port``, ``rfc2217://``, ``loop://``, ``spy://`` ...):
#: they name no device file, so there is nothing on this machine to look for.
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_SHOWN_PORTS = 8  #: a warning names at most this many of the ports that do exist


class SerialPort(str):
    """A serial device path such as ``/dev/ttyUSB0``, or a pyserial URL such as ``socket://host:4001``.

    A settings field of this type tells the core that the value is a serial port, so ``vipsense
    check`` warns when the device does not exist (it may be plugged in later, so it is not an error).
    """

    __slots__ = ()

    @property
    def is_url(self) -> bool:
        return bool(_URL.match(self))

    def missing_device(self) -> str | None:
        """Why this port cannot be opened now, as a warning; ``None`` when it exists or is a URL."""
        if self.is_url or os.path.exists(self):
            return None
        ports = serial_ports()
        here = ", ".join(ports[:_SHOWN_PORTS]) + (" ..." if len(ports) > _SHOWN_PORTS else "")
        return _(
            "serial port {port} does not exist on this machine (serial ports here: {ports}); plug the "
            "device in before the branch starts, or correct the port"
        ).format(port=self, ports=here or _("none"))


def serial_ports() -> list[str]:
    """The serial ports that exist on this machine, as pyserial lists them (it skips the legacy
    ``/dev/ttyS*`` nodes that have no UART behind them), or by globbing ``/dev`` without pyserial."""
    try:
        from serial.tools import list_ports
    except ImportError:
        patterns = ("/dev/ttyUSB*", "/dev/ttyACM*", "/dev/ttyAMA*", "/dev/serial/by-id/*")
        return sorted(p for pattern in patterns for p in glob.glob(pattern))
    return sorted(port.device for port in list_ports.comports())
