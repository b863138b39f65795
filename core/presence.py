"""Presence: turn the raw read stream into arrivals, re-entries and departures.

A pure function of (reads, branch monotonic clock), so it is tested with a fake clock.  Rules
(parameters from ``presence.md`` §4-§6):

* A card *arrives* once ``min_reads`` qualifying reads fall inside ``window``.  With ``min_rssi`` set,
  reads weaker than it do not qualify, so a passer-by read once or twice outside never arrives.
  Reads from readers that report no RSSI cannot be gated and always qualify.
* All antennas and readers of a branch are one door zone, so a card hopping antennas never re-arrives.
* An arrived card *departs* the door zone after ``depart_after`` of silence.
* An arrival less than ``reentry_suppress`` after the card's previous notified arrival is a
  *re-entry*: recorded, but nobody is told.  The previous times can be restored after a restart
  (:meth:`Presence.restore`), so a restart does not re-alert everyone standing nearby.
"""

from __future__ import annotations

from collections.abc import Iterable

from .config.profile import PresenceSettings
from .model import Arrival, TagRead


class _Track:
    __slots__ = ("antenna", "arrived", "first", "last", "peak", "qualifying", "reader", "reads", "tid")

    def __init__(self, read: TagRead) -> None:
        self.first = read.seen_mono
        self.last = read.seen_mono
        self.reads = 0
        self.peak = read.rssi
        self.reader = read.reader_id
        self.antenna = read.antenna
        self.tid = read.tid
        self.qualifying: list[float] = []
        self.arrived: Arrival | None = None


class Presence:
    def __init__(self, settings: PresenceSettings) -> None:
        self.s = settings
        self._tracks: dict[str, _Track] = {}
        self._notified: dict[str, float] = {}  # epc -> mono time of the last notified arrival
        self._prune_at = 4096  # prune _notified when it grows past this, not on every tick
        self.reads = 0
        self.weak_reads = 0

    # -- state --------------------------------------------------------------------------------

    def present(self) -> list[Arrival]:
        """Cards currently in the door zone."""
        return [t.arrived for t in self._tracks.values() if t.arrived is not None]

    def restore(self, notified: Iterable[tuple[str, float]]) -> None:
        """Seed previous notified arrivals as ``(epc, mono)`` pairs, e.g. from the visit log."""
        for epc, mono in notified:
            if mono > self._notified.get(epc, float("-inf")):
                self._notified[epc] = mono

    # -- feeding ------------------------------------------------------------------------------

    def feed(self, read: TagRead) -> tuple[Arrival, bool] | None:
        """Account for one read.  Returns ``(arrival, is_reentry)`` when it completes an arrival."""
        self.reads += 1
        track = self._tracks.get(read.epc)
        if track is not None and track.arrived is not None:  # the hot path: a card standing there
            track.last = read.seen_mono
            track.reads += read.read_count
            rssi = read.rssi
            if rssi is not None and (track.peak is None or rssi > track.peak):
                track.peak = rssi
            return None
        s = self.s
        rssi = read.rssi
        if s.min_rssi is not None and rssi is not None and rssi < s.min_rssi:
            self.weak_reads += 1
            return None
        now = read.seen_mono
        if track is None:
            track = self._tracks[read.epc] = _Track(read)
        track.last = now
        track.reads += read.read_count
        if rssi is not None and (track.peak is None or rssi > track.peak):
            track.peak = rssi
        if read.tid and not track.tid:
            track.tid = read.tid
        q = track.qualifying
        q.append(now)
        horizon = now - s.window
        while q and q[0] < horizon:
            q.pop(0)
        if len(q) < s.min_reads:
            return None
        arrival = Arrival(
            epc=read.epc,
            reader_id=read.reader_id,
            antenna=read.antenna,
            first_seen_mono=track.first,
            arrived_mono=now,
            read_count=track.reads,
            peak_rssi=track.peak,
            tid=track.tid,
        )
        track.arrived = arrival
        track.qualifying = []
        previous = self._notified.get(read.epc)
        reentry = previous is not None and now - previous < s.reentry_suppress
        if not reentry:
            self._notified[read.epc] = now
        return arrival, reentry

    def tick(self, now: float) -> list[Arrival]:
        """Expire stale candidates and return the arrivals whose cards have now departed."""
        departed: list[Arrival] = []
        s = self.s
        for epc, track in list(self._tracks.items()):
            if track.arrived is not None:
                if now - track.last >= s.depart_after:
                    departed.append(track.arrived)
                    del self._tracks[epc]
            elif now - track.last >= s.window:
                del self._tracks[epc]
        if len(self._notified) > self._prune_at:
            horizon = now - s.reentry_suppress
            self._notified = {e: t for e, t in self._notified.items() if t >= horizon}
            self._prune_at = max(4096, 2 * len(self._notified))
        return departed

    def depart_all(self) -> list[Arrival]:
        """At shutdown: every card still present departs now."""
        out = self.present()
        self._tracks.clear()
        return out
