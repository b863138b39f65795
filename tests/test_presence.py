"""Presence rules as a pure function of reads and a fake clock (presence.md §7 scenarios)."""

from __future__ import annotations

import pytest

from vipsense.config.profile import PresenceSettings
from vipsense.config.types import Duration
from vipsense.model import TagRead
from vipsense.presence import Presence

CARD = "E2801160600002084C1A0001"
OTHER = "E2801160600002084C1A0002"


def settings(**kw) -> PresenceSettings:
    base = dict(
        min_reads=3,
        window=Duration(1.0),
        min_rssi=-70.0,
        reentry_suppress=Duration(600),
        depart_after=Duration(2.0),
    )
    base.update(kw)
    return PresenceSettings(**base)


def read(t: float, epc: str = CARD, rssi: float = -50.0, antenna: int = 1) -> TagRead:
    return TagRead(reader_id="door", antenna=antenna, epc=epc, rssi=rssi, seen_mono=t)


def walk(p: Presence, start: float, seconds: float, rate: float = 10, **kw) -> list:
    """Feed a card standing in the field; return what presence reported."""
    out = []
    n = int(seconds * rate)
    for k in range(n):
        r = p.feed(read(start + k / rate, **kw))
        if r is not None:
            out.append(r)
    return out


def test_arrival_needs_min_reads_inside_window():
    p = Presence(settings())
    assert p.feed(read(0.0)) is None
    assert p.feed(read(0.3)) is None
    arrival, reentry = p.feed(read(0.6))
    assert (arrival.epc, arrival.arrived_mono, arrival.first_seen_mono, reentry) == (CARD, 0.6, 0.0, False)
    assert arrival.read_count == 3


def test_reads_spread_wider_than_window_do_not_arrive():
    p = Presence(settings())
    results = [p.feed(read(t)) for t in (0.0, 0.8, 1.6, 2.4, 3.2)]
    assert results == [None] * 5
    assert p.present() == []


def test_weak_reads_of_a_passer_by_never_arrive():
    p = Presence(settings())
    results = [p.feed(read(t, rssi=-79.0)) for t in (0.0, 0.1, 0.2, 0.3, 0.4)]
    assert results == [None] * 5
    assert p.weak_reads == 5


def test_no_rssi_gate_when_min_rssi_unset():
    p = Presence(settings(min_rssi=None))
    assert [p.feed(read(t, rssi=-90.0)) is not None for t in (0.0, 0.1, 0.2)] == [False, False, True]


def test_lingering_card_arrives_once_however_many_reads():
    p = Presence(settings())
    events = walk(p, 0.0, 60.0, rate=20)  # 1,200 reads
    assert len(events) == 1
    assert p.reads == 1200
    assert p.tick(60.0) == []  # still present: last read 0.05 s ago


def test_antenna_hop_does_not_re_arrive():
    p = Presence(settings())
    assert len(walk(p, 0.0, 2.0, antenna=1)) == 1
    assert walk(p, 2.0, 2.0, antenna=2) == []


def test_departure_after_silence():
    p = Presence(settings(depart_after=Duration(2.0)))
    walk(p, 0.0, 1.0)
    assert p.tick(2.5) == []  # last read at 0.9 s: 1.6 s of silence
    departed = p.tick(3.0)
    assert [a.epc for a in departed] == [CARD]
    assert p.present() == []


def test_reentry_inside_window_is_flagged_and_after_window_is_not():
    p = Presence(settings(reentry_suppress=Duration(600)))
    [(_, first)] = walk(p, 0.0, 1.0)
    p.tick(10.0)
    [(_, second)] = walk(p, 300.0, 1.0)  # back after 5 minutes
    p.tick(310.0)
    [(_, third)] = walk(p, 700.0, 1.0)  # 11.7 minutes after the last *notified* arrival
    assert (first, second, third) == (False, True, False)


def test_suppression_counts_from_last_notified_arrival_not_last_reentry():
    p = Presence(settings(reentry_suppress=Duration(600)))
    walk(p, 0.0, 1.0)
    p.tick(10.0)
    walk(p, 500.0, 1.0)  # suppressed re-entry
    p.tick(510.0)
    [(_, reentry)] = walk(p, 650.0, 1.0)  # 650 s after the notified one, 150 s after the re-entry
    assert reentry is False


def test_restore_keeps_suppression_across_restart():
    p = Presence(settings())
    p.restore([(CARD, -120.0)])  # greeted two minutes before this process started
    [(_, reentry)] = walk(p, 0.0, 1.0)
    assert reentry is True


def test_two_cards_together_are_independent():
    p = Presence(settings())
    out = []
    for k in range(10):
        for epc in (CARD, OTHER):
            r = p.feed(read(k / 10, epc=epc))
            if r:
                out.append(r[0].epc)
    assert sorted(out) == [CARD, OTHER]


def test_stale_candidates_expire():
    p = Presence(settings())
    p.feed(read(0.0))
    p.feed(read(0.1))
    p.tick(5.0)  # two reads, then nothing: the candidate is forgotten
    assert p.feed(read(5.0)) is None
    assert p.feed(read(5.1)) is None
    assert p.feed(read(5.2)) is not None


@pytest.mark.parametrize("min_reads", [1, 2, 5])
def test_min_reads_is_exact(min_reads):
    p = Presence(settings(min_reads=min_reads))
    results = [p.feed(read(k * 0.05)) for k in range(min_reads)]
    assert results[:-1] == [None] * (min_reads - 1)
    assert results[-1] is not None


def test_reads_without_rssi_cannot_be_gated_and_qualify():
    p = Presence(settings(min_rssi=-70.0))
    results = [p.feed(read(t, rssi=None)) for t in (0.0, 0.1, 0.2)]
    assert results[:2] == [None, None]
    arrival, _ = results[2]
    assert arrival.peak_rssi is None
    p.feed(read(0.3, rssi=-55.0))
    assert p.present()[0].epc == CARD
