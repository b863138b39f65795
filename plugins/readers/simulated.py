"""A reader that replays a scenario: who walks in when, how long they linger, at what read rate,
signal strength and antenna.  It needs no hardware, so the demo branch and the tests run anywhere.

The scenario lives in the profile, so its mistakes are reported with file and line like any other::

    readers:
      - id: door
        type: simulated
        visitors:
          - {card: E2801160600002084C1A0001, at: 5s, stay: 20s, rate: 10, rssi: -50}
          - {card: E2801160600002084C1A00FF, at: 40s, reads: 2, rssi: -79}   # a passer-by
"""

from __future__ import annotations

import heapq
import random

import attrs

import vipsense
from vipsense.api import Duration, Reader, ReaderContext


@attrs.frozen
class Visitor:
    card: str  #: EPC in hex
    at: Duration  #: when the card enters the field, from the start of the replay
    stay: Duration = Duration(3.0)  #: how long the card stays in the field
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


class SimulatedReader(Reader):
    def __init__(self, settings: SimulatedSettings) -> None:
        self.settings = settings

    def schedule(self) -> list[tuple[float, int, Visitor]]:
        """Every read of the replay as ``(seconds from start, sequence, visitor)``, in time order."""
        events: list[tuple[float, int, Visitor]] = []
        seq = 0
        for v in self.settings.visitors:
            count = v.reads if v.reads is not None else max(1, int(v.stay * v.rate))
            step = 1.0 / v.rate if v.rate > 0 else 0.0
            for k in range(count):
                events.append((v.at + k * step, seq, v))
                seq += 1
        heapq.heapify(events)
        return [heapq.heappop(events) for _ in range(len(events))]

    def run(self, ctx: ReaderContext) -> None:
        rng = random.Random(self.settings.seed)
        schedule = self.schedule()
        ctx.connected(f"replaying {len(self.settings.visitors)} visitors, {len(schedule)} reads")
        while True:
            start = ctx.clock.mono()
            for offset, _, v in schedule:
                if ctx.clock.sleep_until(start + offset, ctx.stop):
                    return
                rssi = round(v.rssi + rng.uniform(-v.jitter, v.jitter), 1)
                ctx.read(v.card, antenna=v.antenna, rssi=rssi, tid=v.tid)
            if not self.settings.loop:
                return


@vipsense.hookimpl
def vipsense_register_reader_types(register):
    register(
        "simulated",
        SimulatedSettings,
        lambda settings, ctx: SimulatedReader(settings),
        summary="replays a scenario of visitors; no hardware needed",
    )
