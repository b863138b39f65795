"""A day at the branch is midnight to midnight in the branch's zone, across daylight-saving changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from vipsense.timezone import day_bounds, day_of, moment

BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("day", "hours"),
    [(dt.date(2026, 3, 29), 23), (dt.date(2026, 10, 25), 25), (dt.date(2026, 12, 7), 24)],
    ids=["spring-forward", "fall-back", "plain"],
)
def test_a_berlin_day_lasts_as_long_as_its_clocks_say(day, hours):
    start, end = day_bounds(day, BERLIN)
    assert (end - start) / 3600 == hours
    assert day_of(start, BERLIN) == day and day_of(end - 1, BERLIN) == day and day_of(end, BERLIN) != day
    assert dt.datetime.fromtimestamp(start, BERLIN).time() == dt.time(0, 0)


def test_a_shanghai_day_is_24_hours_and_starts_at_its_own_midnight():
    start, end = day_bounds(dt.date(2026, 3, 29), SHANGHAI)
    assert end - start == 86400
    assert dt.datetime.fromtimestamp(start, dt.timezone.utc) == dt.datetime(
        2026, 3, 28, 16, tzinfo=dt.timezone.utc
    )


def test_times_of_day_in_a_skipped_or_repeated_hour():
    # 02:30 does not exist in Berlin on 2026-03-29 (02:00 -> 03:00): it is the change, at 03:00
    skipped = moment(dt.date(2026, 3, 29), dt.time(2, 30), BERLIN)
    assert dt.datetime.fromtimestamp(skipped, BERLIN).replace(tzinfo=None) == dt.datetime(2026, 3, 29, 3, 0)
    # 02:30 happens twice on 2026-10-25: the first one
    first = moment(dt.date(2026, 10, 25), dt.time(2, 30), BERLIN)
    assert dt.datetime.fromtimestamp(first, BERLIN).utcoffset() == dt.timedelta(hours=2)


@pytest.mark.parametrize("day", ["2026-03-29", "2026-10-25"])
def test_a_days_visits_are_the_branchs_day_across_a_daylight_saving_change(
    write_profile, tmp_path, capsys, day
):
    """``vipsense visits --date`` lists exactly the visits from midnight to midnight in Berlin."""
    import json

    from vipsense.cli import main
    from vipsense.model import Arrival, Visit, VisitKind
    from vipsense.storage.visitlog import VisitLog

    from .conftest import BASE_PROFILE

    profile = write_profile(
        BASE_PROFILE.replace(
            "branch: {id: test-branch, name: Test Branch, locale: en}",
            "branch: {id: test-branch, name: Test Branch, locale: en, timezone: Europe/Berlin}",
        )
    )
    date = dt.date.fromisoformat(day)
    start, end = day_bounds(date, BERLIN)
    times = {"before": start - 1, "first": start, "late": end - 60, "after": end}
    log = VisitLog(tmp_path / "d" / "visits.sqlite3")
    arrival = Arrival("E20000000000000000000001", "door", 1, 0.0, 0.0, 3, -50.0)
    log.record(Visit(name, "test-branch", VisitKind.GREETED, arrival, at) for name, at in times.items())
    log.close()
    args = [
        "visits",
        "list",
        "--date",
        day,
        str(profile),
        "--as",
        "boss",
        "--json",
        "--data-dir",
        str(tmp_path / "d"),
    ]
    assert main(args) == 0
    listed = [v["visit_id"] for v in json.loads(capsys.readouterr().out)["visits"]]
    assert listed == ["first", "late"]  # 23 h or 25 h apart, both on that Berlin day
