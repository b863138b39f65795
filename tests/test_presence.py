"""Presence rules as a pure function of reads and a fake clock (presence.md §7 scenarios)."""

from __future__ import annotations

import pytest

from vipsense.config.profile import PresenceSettings
from vipsense.config.types import Duration
from vipsense.model import Arrival, TagRead
from vipsense.pipeline.presence import Presence

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


def test_departure_after_silence_at_the_last_sighting():
    p = Presence(settings(depart_after=Duration(2.0)))
    walk(p, 0.0, 1.0)
    assert p.tick(2.5) == []  # last read at 0.9 s: 1.6 s of silence
    [(arrival, last)] = p.tick(3.0)
    assert (arrival.epc, last) == (CARD, 0.9)  # it left when it was last seen, not when we noticed
    assert p.present() == []


def greeted(p: Presence, events: list) -> list:
    """What the pipeline does after judging: a greeting (or a re-entry) marks the visit quiet."""
    for arrival, _ in events:
        p.quiet(arrival.epc)
    return events


def test_reentry_inside_the_window_of_a_greeting_is_flagged_and_after_it_is_not():
    p = Presence(settings(reentry_suppress=Duration(600)))
    [(_, first)] = greeted(p, walk(p, 0.0, 1.0))
    p.tick(10.0)
    [(_, second)] = greeted(p, walk(p, 300.0, 1.0))  # back after 5 minutes
    p.tick(310.0)
    [(_, third)] = walk(p, 920.0, 1.0)  # 10.3 minutes after it was last seen
    assert (first, second, third) == (False, True, False)


def test_the_window_runs_from_the_last_sighting_not_the_arrival():
    """presence.md §5 and issue 21: a VIP who stays 12 minutes and steps outside for a minute."""
    p = Presence(settings(reentry_suppress=Duration(600), depart_after=Duration(3.0)))
    [(_, first)] = greeted(p, walk(p, 0.0, 720.0, rate=2))  # 12 minutes in the door zone
    assert [a.epc for a, _ in p.tick(725.0)] == [CARD]
    [(_, back)] = walk(p, 780.0, 1.0)  # one minute outside
    assert (first, back) == (False, True)


def test_a_dropout_while_the_vip_never_leaves_is_a_re_entry():
    p = Presence(settings(reentry_suppress=Duration(600), depart_after=Duration(3.0)))
    greeted(p, walk(p, 0.0, 720.0, rate=2))
    assert len(p.tick(723.6)) == 1  # the tag goes silent for 4 s at minute 12 ...
    [(_, reentry)] = walk(p, 723.5 + 4.0, 1.0)  # ... and is read again
    assert reentry is True


def test_arrivals_at_0_9_and_11_minutes_are_greeted_then_suppressed_twice():
    p = Presence(settings(reentry_suppress=Duration(600), depart_after=Duration(3.0)))
    kinds = []
    for minute in (0, 9, 11):
        [(_, reentry)] = greeted(p, walk(p, minute * 60.0, 20.0))  # each visit lasts 20 s
        kinds.append("suppressed" if reentry else "greeted")
        p.tick(minute * 60.0 + 30.0)
    assert kinds == ["greeted", "suppressed", "suppressed"]  # 2 minutes after the last visit


def test_a_visit_nobody_was_greeted_in_starts_no_window():
    """Rejected, suspect, unknown and unresolved arrivals are not marked quiet by the pipeline."""
    p = Presence(settings(reentry_suppress=Duration(600)))
    walk(p, 0.0, 1.0)  # e.g. a lost card, rejected
    p.tick(10.0)
    [(_, reentry)] = walk(p, 180.0, 1.0)  # found, and back 3 minutes later
    assert reentry is False


def test_a_held_visit_greeted_after_its_card_left_starts_the_window_at_its_last_sighting():
    p = Presence(settings(reentry_suppress=Duration(600), depart_after=Duration(2.0)))
    walk(p, 0.0, 1.0)
    [(arrival, last)] = p.tick(5.0)  # gone before a store answered
    p.quiet(arrival.epc, departed=last)  # then greeted
    assert p.is_reentry(CARD, last + 599) and not p.is_reentry(CARD, last + 601)


def test_restore_keeps_suppression_across_restart():
    p = Presence(settings())
    p.restore([(CARD, -120.0)])  # last seen two minutes before this process started, after a greeting
    [(_, reentry)] = walk(p, 0.0, 1.0)
    assert reentry is True


def test_a_card_restored_as_present_continues_its_visit_when_read_again():
    p = Presence(settings(depart_after=Duration(2.0)))
    before = Arrival(CARD, "door", 1, -700.0, -700.0, 90, -50.0)
    p.restore_present([(before, -1.0, True)], now=0.0)
    assert p.tick(5.0) == []  # no read yet this run (the reader is still starting): it waits
    assert walk(p, 6.0, 1.0) == []  # read again: the same visit, no new arrival
    assert [(a.epc, a.arrived_mono) for a in p.present()] == [(CARD, -700.0)]
    [(_, last)] = p.tick(9.0)
    assert last == 6.9


def test_a_card_restored_as_present_that_is_not_read_again_departs_at_its_last_sighting():
    p = Presence(settings(depart_after=Duration(2.0)))
    p.restore_present([(Arrival(CARD, "door", 1, -60.0, -60.0, 30, -50.0), -1.5, True)], now=0.0)
    p.feed(read(0.5, epc=OTHER))  # the readers are back
    assert p.tick(2.0) == []  # depart_after from the first read of this run
    [(arrival, last)] = p.tick(2.6)
    assert (arrival.epc, last) == (CARD, -1.5)
    assert p.is_reentry(CARD, 100.0)  # it was greeted: its window runs from -1.5


def test_restored_cards_depart_even_when_no_reader_ever_comes_back():
    p = Presence(settings(depart_after=Duration(2.0)))
    p.restore_present([(Arrival(CARD, "door", 1, -60.0, -60.0, 30, -50.0), -1.5, False)], now=0.0)
    assert p.tick(29.0) == []
    assert [a.epc for a, _ in p.tick(30.0)] == [CARD]


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
