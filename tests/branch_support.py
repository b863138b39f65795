"""What tests that drive a real running Branch share: a notifier type that records what staff were
told, the real SQLite store with a gate a test can shut (a stalled or slow store), and a door that
reads cards at times the test chooses on a :class:`~vipsense.clock.ManualClock`."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import attrs

import vipsense
from vipsense.api import Duration, Notifier
from vipsense.clock import ManualClock
from vipsense.model import Notification, TagRead, VisitKind
from vipsense.plugins.stores.sqlite import SqliteSettings, SqliteStore

from .conftest import wait_for


@attrs.frozen
class GatedSettings:
    seed: tuple[str, ...] = ()
    open_delay: Duration = Duration(0)


class GatedStore(SqliteStore):
    """The real SQLite store; ``open`` takes ``open_delay`` longer, and ``find_card`` waits while the
    test holds the gate shut (a stalled directory or database)."""

    def __init__(self, settings: GatedSettings, ctx) -> None:
        super().__init__(SqliteSettings(seed=settings.seed), ctx)
        self.open_delay = float(settings.open_delay)
        self.gate = threading.Event()
        self.gate.set()
        self.opened_at = 0.0

    def open(self) -> None:
        time.sleep(self.open_delay)
        super().open()
        self.opened_at = time.monotonic()

    def find_card(self, epc):
        self.gate.wait(30)  # a stalled store; tests open the gate again before they end
        return super().find_card(epc)


class Recording(Notifier):
    def __init__(self, settings, ctx) -> None:
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> None:
        self.sent.append(notification)


class Types:
    """Test types, registered straight into a branch's plugin host: the ``gated-sqlite`` store and the
    ``recording`` notifier.  One instance serves a branch and its restarts (the latest objects win)."""

    def __init__(self) -> None:
        self.store: GatedStore | None = None
        self.pda: Recording | None = None
        self.sent: list[Notification] = []  #: every notification, across restarts

    @vipsense.hookimpl
    def vipsense_register_store_types(self, register):
        def make(settings, ctx):
            self.store = GatedStore(settings, ctx)
            return self.store

        register("gated-sqlite", GatedSettings, make)

    @vipsense.hookimpl
    def vipsense_register_notifier_types(self, register):
        def make(settings, ctx):
            self.pda = Recording(settings, ctx)
            self.pda.sent = self.sent
            return self.pda

        register("recording", GatedSettings, make)

    def told(self, kind: VisitKind, to: str = "lobby") -> list[str]:
        """EPCs ``to`` was told of with visits of ``kind``, in the order the notifier got them."""
        return [n.visit.arrival.epc for n in list(self.sent) if n.visit.kind is kind and n.recipient.id == to]

    def release(self) -> None:
        if self.store is not None:
            self.store.gate.set()  # no worker thread left waiting behind a test's gate


class Door:
    """Reads at the door of a running branch on a :class:`ManualClock`, each read processed before
    the clock moves on, so presence sees exactly the timeline the test writes."""

    def __init__(self, branch, clock: ManualClock) -> None:
        self.branch = branch
        self.clock = clock
        self.reads = branch.status.counters["reads"]

    def read(self, *epcs: str, rssi: float = -50.0) -> None:
        for epc in epcs:
            self.branch.pipeline.submit(TagRead("door", 1, epc, rssi, self.clock.mono()))
        self.reads += len(epcs)
        assert wait_for(lambda: self.branch.status.counters["reads"] >= self.reads, 5), "reads not processed"

    def stay(self, seconds: float, *epcs: str, every: float = 1.0) -> None:
        """The cards stand in the door zone for ``seconds``, each read every ``every`` seconds (the
        first read at once, the last ``seconds`` from now)."""
        steps = round(seconds / every)
        self.read(*epcs, *epcs)  # enough reads to arrive at once
        for _ in range(steps):
            self.clock.advance(every)
            self.read(*epcs)

    def wait(self, seconds: float, departures: int | None = None) -> None:
        """Time passes with no reads; ``departures``: wait until the branch has counted that many."""
        self.clock.advance(seconds)
        if departures is not None:
            counters = self.branch.status.counters
            assert wait_for(lambda: counters["departures"] >= departures, 5), counters["departures"]
        else:
            time.sleep(0.25)  # a tick or two of the pipeline thread sees the new time


def visit_rows(data_dir: Path) -> list[tuple]:
    """``(epc, kind, arrived_at, departed_at, last_seen_at)`` of every visit, oldest first."""
    db = sqlite3.connect(data_dir / "visits.sqlite3")
    try:
        return db.execute(
            "SELECT epc, kind, arrived_at, departed_at, last_seen_at FROM visits ORDER BY arrived_at"
        ).fetchall()
    finally:
        db.close()
