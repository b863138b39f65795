"""The branch's time zone: what "today", a date range and a time of day mean at the branch.

Records keep UNIX time (:mod:`vipsense.clock`); people think in the branch's days.  A day runs from
midnight to midnight in the branch's IANA zone (the profile's ``branch.timezone``), so it is 23 or 25
hours long on a daylight-saving change (Europe/Berlin on 2026-03-29 and 2026-10-25; China keeps no
daylight saving, but vipsense's users elsewhere do).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


def local(at: float, tz: ZoneInfo) -> dt.datetime:
    """UNIX time ``at`` as the branch's wall clock showed it."""
    return dt.datetime.fromtimestamp(at, tz)


def day_of(at: float, tz: ZoneInfo) -> dt.date:
    """The branch's calendar day at UNIX time ``at``."""
    return local(at, tz).date()


def moment(day: dt.date, time_of_day: dt.time, tz: ZoneInfo) -> float:
    """The UNIX time of ``time_of_day`` on ``day`` at the branch.  A time that a spring-forward change
    skips is the moment of the change (the clock's first reading at or past it); one that an autumn
    change repeats is its first occurrence."""
    naive = dt.datetime.combine(day, time_of_day)
    after = naive.replace(tzinfo=tz).timestamp()  # fold=0: for a skipped time, past the gap
    if _wall(after, tz) == naive:
        return after
    before = naive.replace(tzinfo=tz, fold=1).timestamp()  # for a skipped time, before the gap
    while after - before > 1:  # the change itself: the first second whose clock reads naive or later
        middle = (before + after) / 2
        if _wall(middle, tz) < naive:
            before = middle
        else:
            after = middle
    return float(round(after))


def _wall(at: float, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, tz).replace(tzinfo=None)


def day_bounds(day: dt.date, tz: ZoneInfo) -> tuple[float, float]:
    """The branch's day as UNIX times ``[start, end)``: midnight to the next midnight."""
    return moment(day, dt.time(), tz), moment(day + dt.timedelta(days=1), dt.time(), tz)
