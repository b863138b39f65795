"""What the notification and web benchmarks share: the seed of bench cards and the
background door load (cards standing in the door zone read at a steady rate, plus new VIPs)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vipsense.model import TagRead

EPC = "E2801160600002084C{:06X}"  #: the i-th bench card
READ_RATE = 1000  #: background reads per second
NEW_EVERY = 0.05  #: seconds between new arrivals


def wait_until(
    condition: Callable[[], bool], timeout: float, waiting_for: str, got: Callable[[], Any]
) -> float:
    """Poll ``condition`` for at most ``timeout`` seconds; return how long it took.  On a miss, say
    what the bench was waiting for and what it got, and exit 1: no bench ever hangs."""
    t0 = time.monotonic()
    end = t0 + timeout
    while not condition():
        if time.monotonic() >= end:
            print(
                f"bench: gave up after {timeout:g} s waiting for {waiting_for}; got {got()}", file=sys.stderr
            )
            raise SystemExit(1)
        time.sleep(0.005)
    return time.monotonic() - t0


def write_seed(tmp: Path, cards: int, extra: str = "") -> None:
    """``seed.yaml`` with ``cards`` gold customers ``C00000``... and one card each; ``extra`` is added
    to every customer (e.g. ``, client_manager: li.mei``)."""
    lines = ["customers:"]
    lines += [f"  - {{customer_no: C{i:05d}, name: 客户{i}, tier: gold{extra}}}" for i in range(cards)]
    lines.append("cards:")
    lines += [f"  - {{epc: {EPC.format(i)}, customer_no: C{i:05d}}}" for i in range(cards)]
    (tmp / "seed.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


class Feeder(threading.Thread):
    """:data:`READ_RATE` reads/s of the first ``present`` cards, and the next card arriving every
    :data:`NEW_EVERY` seconds, through the branch's real pipeline."""

    def __init__(self, branch: Any, cards: int, present: int) -> None:
        super().__init__(name="feeder", daemon=True)
        self.branch = branch
        self.present = present
        self.epc = [EPC.format(i) for i in range(cards)]
        self.stopping = threading.Event()
        self.reads = 0
        self.new = present  #: the next new card; ``new - present`` have arrived
        self.started = 0.0

    def warm(self) -> None:
        """Make the present cards arrive once, before anything is measured."""
        submit, mono = self.branch.pipeline.submit, self.branch.clock.mono
        for e in self.epc[: self.present]:
            for _ in range(2):
                submit(TagRead("door", 1, e, -50.0, mono()))
        counters = self.branch.status.counters
        wait_until(
            lambda: counters["greeted"] >= self.present,
            60,
            f"the {self.present} warm-up cards to be greeted",
            lambda: (
                f"{counters['greeted']} greeted, {counters['unresolved']} unresolved, "
                f"{counters['unknown']} unknown of {counters['arrivals']} arrivals"
            ),
        )

    def run(self) -> None:
        submit, mono = self.branch.pipeline.submit, self.branch.clock.mono
        tick = 10 / READ_RATE
        self.started = next_new = t = time.monotonic()
        while not self.stopping.is_set():
            for i in range(10):
                submit(TagRead("door", 1, self.epc[(self.reads + i) % self.present], -50.0, mono()))
            self.reads += 10
            if t >= next_new and self.new < len(self.epc):
                for _ in range(2):
                    submit(TagRead("door", 2, self.epc[self.new], -48.0, mono()))
                self.new += 1
                next_new += NEW_EVERY
            t += tick  # on a fixed schedule: a late tick is caught up, not lost
            time.sleep(max(0.0, t - time.monotonic()))

    def rate(self) -> float:
        return self.reads / max(1e-9, time.monotonic() - self.started)
