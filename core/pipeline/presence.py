"""Presence: turn the raw read stream into arrivals, re-entries and departures.

A pure function of (reads, branch monotonic clock), so it is tested with a fake clock.  Rules
(parameters from ``presence.md`` §4-§6):

* A card *arrives* once ``min_reads`` qualifying reads fall inside ``window``.  With ``min_rssi`` set,
  reads weaker than it do not qualify, so a passer-by read once or twice outside never arrives.
  Reads from readers that report no RSSI cannot be gated and always qualify.
* All antennas and readers of a branch are one door zone, so a card hopping antennas never re-arrives.
* An arrived card *departs* the door zone after ``depart_after`` of silence; it departed at its last
  sighting.
* An arrival less than ``reentry_suppress`` after the card's last sighting in a visit that greeted
  its holder (or was itself such a re-entry) is a *re-entry*: recorded, but nobody is told.  Only a
  greeting starts the window (the pipeline says which visits did, :meth:`Presence.quiet`): a
  rejected, suspect, unknown or unresolved arrival never silences a later greeting.  The window runs
  from the departure, not the arrival, so a VIP who stays an hour and steps out for a minute is not
  greeted again (presence.md §5).
* Both survive a restart: the sightings that start windows (:meth:`Presence.restore`), and the cards
  that were in the door zone, which continue their visits (:meth:`Presence.restore_present`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..config.profile import PresenceSettings
from ..model import Arrival, TagRead

#: a card restored as present after a restart departs ``depart_after`` after the first read of this
#: run (the readers may take a while to come back), or after this long with no read at all
RESTORE_HOLD_MAX = 30.0


class _Track:
    __slots__ = (
        "antenna",
        "arrived",
        "first",
        "hold",
        "last",
        "peak",
        "qualifying",
        "quiet",
        "reader",
        "reads",
        "tid",
    )

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
        self.quiet = (
            False  #: this visit greeted its holder (or was a re-entry): its departure starts a window
        )
        self.hold = float("-inf")  #: restored after a restart: does not depart before this


class Presence:
    def __init__(self, settings: PresenceSettings) -> None:
        self.s = settings
        self._tracks: dict[str, _Track] = {}
        #: epc -> mono time of its last sighting in a visit that greeted (or was suppressed)
        self._quiet_since: dict[str, float] = {}
        self._prune_at = 4096  # prune _quiet_since when it grows past this, not on every tick
        self._restoring = False  #: restored tracks wait for the first read of this run
        self._restore_deadline = 0.0
        self.reads = 0
        self.weak_reads = 0

    # -- state --------------------------------------------------------------------------------

    def present(self) -> list[Arrival]:
        """Cards currently in the door zone."""
        return [t.arrived for t in self._tracks.values() if t.arrived is not None]

    def sightings(self) -> list[tuple[str, float]]:
        """``(epc, last sighting mono)`` of every card in the door zone."""
        return [(epc, t.last) for epc, t in self._tracks.items() if t.arrived is not None]

    def is_reentry(self, epc: str, at: float) -> bool:
        """Whether an arrival of ``epc`` at ``at`` falls in the window of an earlier greeting."""
        previous = self._quiet_since.get(epc)
        return previous is not None and at - previous < self.s.reentry_suppress

    def quiet(self, epc: str, departed: float | None = None) -> None:
        """The pipeline greeted this card's visit (or suppressed it as a re-entry): its departure
        starts the re-entry window.  ``departed``: the last sighting, for a visit judged only after its
        card had left (an arrival held for a slow store)."""
        track = self._tracks.get(epc)
        if track is not None and track.arrived is not None:
            track.quiet = True
        elif departed is not None and departed > self._quiet_since.get(epc, float("-inf")):
            self._quiet_since[epc] = departed

    def restore(self, quiet: Iterable[tuple[str, float]]) -> None:
        """Seed window starts as ``(epc, last sighting mono)`` pairs, e.g. from the visit log."""
        for epc, mono in quiet:
            if mono > self._quiet_since.get(epc, float("-inf")):
                self._quiet_since[epc] = mono

    def restore_present(self, cards: Iterable[tuple[Arrival, float, bool]], now: float) -> None:
        """Put back cards that were in the door zone when the branch stopped, as ``(arrival, last
        sighting mono, quiet)``: a card read again continues its visit instead of arriving anew.  One
        that is not read departs at its last sighting, ``depart_after`` after the first read of this
        run (or :data:`RESTORE_HOLD_MAX` after ``now`` if no read comes)."""
        for arrival, last, quiet in cards:
            track = _Track(
                TagRead(arrival.reader_id, arrival.antenna, arrival.epc, arrival.peak_rssi, last, arrival.tid)
            )
            track.first = arrival.first_seen_mono
            track.reads = arrival.read_count
            track.arrived = arrival
            track.quiet = quiet
            track.hold = float("inf")
            self._tracks[arrival.epc] = track
            self._restoring = True
        self._restore_deadline = now + RESTORE_HOLD_MAX

    def _release(self, at: float) -> None:
        """The readers are back: restored cards depart ``depart_after`` from now unless read."""
        self._restoring = False
        until = at + self.s.depart_after
        for track in self._tracks.values():
            if track.hold == float("inf"):
                track.hold = until

    # -- feeding ------------------------------------------------------------------------------

    def feed(self, read: TagRead) -> tuple[Arrival, bool] | None:
        """Account for one read.  Returns ``(arrival, is_reentry)`` when it completes an arrival."""
        self.reads += 1
        if self._restoring:
            self._release(read.seen_mono)
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
        return arrival, self.is_reentry(read.epc, now)

    def tick(self, now: float) -> list[tuple[Arrival, float]]:
        """Expire stale candidates; return ``(arrival, last sighting)`` for each card that departed."""
        if self._restoring and now >= self._restore_deadline:
            self._release(now - self.s.depart_after)
        departed: list[tuple[Arrival, float]] = []
        s = self.s
        for epc, track in list(self._tracks.items()):
            if track.arrived is not None:
                if now - track.last >= s.depart_after and now >= track.hold:
                    departed.append((track.arrived, track.last))
                    if track.quiet:
                        self._quiet_since[epc] = max(track.last, self._quiet_since.get(epc, track.last))
                    del self._tracks[epc]
            elif now - track.last >= s.window:
                del self._tracks[epc]
        if len(self._quiet_since) > self._prune_at:
            horizon = now - s.reentry_suppress
            self._quiet_since = {e: t for e, t in self._quiet_since.items() if t >= horizon}
            self._prune_at = max(4096, 2 * len(self._quiet_since))
        return departed
