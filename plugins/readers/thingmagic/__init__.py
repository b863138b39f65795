"""ThingMagic / JADAK embedded UHF modules (M6e, Micro, Nano, M7e) over their binary serial protocol.

``port`` is a pyserial URL: ``/dev/ttyUSB0``, ``socket://host:port`` or ``rfc2217://host:port``.
With ``emulate:`` instead of ``port``, the plugin starts the project's protocol-accurate module
emulator on a pseudo-terminal, fed by a visitor scenario, and the real driver talks to it: the demo
branch runs this way.  Where no pseudo-terminal can be made, the scenario is replayed directly
(the ``simulated`` reader's :class:`vipsense.replay.SimulatedReader`), so the demo still runs::

    readers:
      - id: door
        type: thingmagic
        port: /dev/ttyUSB0
        region: PRC
        antennas: [1, 2]
        read_power_dbm: 27
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import attrs

import vipsense
from vipsense.api import Duration, PluginContext, Reader, RegisterType, SerialPort
from vipsense.i18n import _, lazy_gettext
from vipsense.replay import Replay, SimulatedReader, SimulatedSettings, Visitor

from .protocol import REGIONS

log = logging.getLogger(__name__)


def _region(inst: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in REGIONS:
        raise ValueError(
            _("unknown region {value!r}; one of {choices}").format(value=value, choices=", ".join(REGIONS))
        )


def _antennas(inst: Any, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if not value or any(not 1 <= a <= 16 for a in value):
        raise ValueError(_("antennas must be port numbers 1-16, got {value}").format(value=list(value)))


def _power(inst: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0 <= value <= 31.5:
        raise ValueError(_("read power must be 0-31.5 dBm, got {value:g}").format(value=value))


@attrs.frozen
class EmulatedModule:
    """A module emulator on a pseudo-terminal, reading the cards of a scenario."""

    visitors: tuple[Visitor, ...]
    seed: int = 1
    streaming: bool = True  #: False: the module cannot stream and the driver polls instead


@attrs.frozen
class ThingMagicSettings:
    region: str = attrs.field(validator=_region)  #: the legal RF region of the site, e.g. PRC, EU, NA
    port: SerialPort | None = None  #: device path or pyserial URL of the module
    emulate: EmulatedModule | None = None  #: instead of ``port``: an emulated module (demos, tests)
    baudrate: int = 115200
    antennas: tuple[int, ...] = attrs.field(default=(1,), validator=_antennas)
    read_power_dbm: float = attrs.field(default=27.0, validator=_power)
    streaming: Literal["auto", "on", "off"] = "auto"  #: auto: stream where the module can, else poll
    poll_time: Duration = Duration(0.25)  #: length of one read-tag-multiple when polling
    command_timeout: Duration = Duration(1.0)
    silence_timeout: Duration = Duration(3.0)  #: no frame (not even a keep-alive) this long: link lost

    def __attrs_post_init__(self) -> None:
        if (self.port is None) == (self.emulate is None):
            raise ValueError(_("set exactly one of 'port' (a pyserial URL) and 'emulate'"))


class _ScenarioSource:
    """Feeds the emulator the scenario's reads on the branch clock, so ``--speed`` applies."""

    def __init__(self, replay: Replay, clock: Any) -> None:
        self.replay = replay
        self.clock = clock
        self.start: float | None = None

    def __call__(self, now: float) -> list[Any]:
        from .emulator import EmulatedRead

        if self.start is None:
            self.start = self.clock.mono()
        due = self.replay.due(self.clock.mono() - self.start)
        return [EmulatedRead(r.visitor.card, r.visitor.antenna, round(r.rssi)) for r in due]


def make_reader(settings: ThingMagicSettings, ctx: PluginContext) -> Reader:
    from .driver import ThingMagicReader

    if settings.port is not None:
        return ThingMagicReader(settings, settings.port)
    em = settings.emulate
    assert em is not None, "the settings hold exactly one of port and emulate"
    replay = Replay(em.visitors, em.seed)
    try:
        from .emulator import ModuleEmulator, ModuleLink

        emulator = ModuleEmulator(_ScenarioSource(replay, ctx.clock), streaming=em.streaming)
        link = ModuleLink.on_pty(emulator)
        link.start()
    except (ImportError, OSError) as exc:  # no pseudo-terminals here (or no pyserial)
        ctx.log.warning("cannot emulate the serial module here (%s); replaying the scenario directly", exc)
        return SimulatedReader(SimulatedSettings(em.visitors, em.seed))
    return ThingMagicReader(settings, link.url, on_close=link.stop, finished=lambda: replay.finished)


@vipsense.hookimpl
def vipsense_register_reader_types(register: RegisterType) -> None:
    register(
        "thingmagic",
        ThingMagicSettings,
        make_reader,
        summary=lazy_gettext("ThingMagic/JADAK UHF module over serial (pyserial URL), or its emulator"),
    )
