"""A scenario of visitors replayed as card reads: who walks in when, how long they linger, at what read
rate, signal strength and antenna.

The ``simulated`` reader replays a scenario straight into the branch; an emulated hardware reader (the
``thingmagic`` reader's ``emulate:``) feeds the same scenario through a real reader protocol, and falls
back to :class:`SimulatedReader` where it cannot emulate.  Both read their scenario from the profile
as :class:`Visitor` items, so its mistakes are reported with file and line like any other.
"""

from __future__ import annotations

import heapq
import random

import attrs

from .api import Reader, ReaderContext
from .config.types import Duration
from .i18n import lazy_gettext
from .texts import Text

__all__ = ["Replay", "ScheduledRead", "SimulatedReader", "SimulatedSettings", "Visitor"]


@attrs.frozen
class Visitor:
    card: str  #: EPC in hex
    at: Duration  #: when the card enters the field, from the start of the replay
    stay: Duration = attrs.field(default=Duration(3.0))  #: how long the card stays in the field
    rate: float = 10.0  #: reads per second while in the field
    reads: int | None = None  #: an exact number of reads instead of ``stay * rate``
    rssi: float = -55.0  #: mean signal strength, dBm
    jitter: float = 3.0  #: RSSI varies uniformly by this much, dB
    antenna: int = 1
    tid: str | None = None
    label: str = ""  #: a note for people reading the scenario


@attrs.frozen
class SimulatedSettings:
    visitors: tuple[Visitor, ...]
    seed: int = 1  #: random seed for RSSI jitter, so a replay is repeatable
    loop: bool = False  #: start again after the last read instead of finishing


@attrs.frozen
class ScheduledRead:
    offset: float  #: seconds from the start of the replay
    visitor: Visitor
    rssi: float


class Replay:
    """The reads of a scenario in time order, handed out as their time comes."""

    def __init__(self, visitors: tuple[Visitor, ...], seed: int = 1, loop: bool = False) -> None:
        self.loop = loop
        self.reads = self._schedule(visitors, random.Random(seed))
        self._next = 0
        self._base = 0.0  # offset of the current pass, for loops

    @staticmethod
    def _schedule(visitors: tuple[Visitor, ...], rng: random.Random) -> list[ScheduledRead]:
        events: list[tuple[float, int, Visitor]] = []
        for v in visitors:
            count = v.reads if v.reads is not None else max(1, int(v.stay * v.rate))
            step = 1.0 / v.rate if v.rate > 0 else 0.0
            events.extend((v.at + k * step, len(events), v) for k in range(count))
        heapq.heapify(events)
        ordered = [heapq.heappop(events) for _ in range(len(events))]
        return [
            ScheduledRead(t, v, round(v.rssi + rng.uniform(-v.jitter, v.jitter), 1)) for t, _, v in ordered
        ]

    @property
    def finished(self) -> bool:
        return not self.loop and self._next >= len(self.reads)

    def next_offset(self) -> float | None:
        """When the next read is due, or None when the replay is over."""
        if self._next >= len(self.reads):
            if not self.loop or not self.reads:
                return None
            self._base += self.reads[-1].offset + 1.0
            self._next = 0
        return self._base + self.reads[self._next].offset

    def due(self, elapsed: float) -> list[ScheduledRead]:
        """Every read due by ``elapsed`` seconds from the start that was not handed out yet."""
        out = []
        while (offset := self.next_offset()) is not None and offset <= elapsed:
            out.append(self.reads[self._next])
            self._next += 1
        return out


class SimulatedReader(Reader):
    def __init__(self, settings: SimulatedSettings) -> None:
        self.settings = settings

    def run(self, ctx: ReaderContext) -> None:
        replay = Replay(self.settings.visitors, self.settings.seed, self.settings.loop)
        ctx.connected(
            Text(
                lazy_gettext("replaying {visitors} visitors, {reads} reads"),
                visitors=len(self.settings.visitors),
                reads=len(replay.reads),
            )
        )
        start = ctx.clock.mono()
        while (offset := replay.next_offset()) is not None:
            if ctx.clock.sleep_until(start + offset, ctx.stop):
                return
            for r in replay.due(offset):
                ctx.read(r.visitor.card, antenna=r.visitor.antenna, rssi=r.rssi, tid=r.visitor.tid)
