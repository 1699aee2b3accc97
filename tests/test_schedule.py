"""A schedule's times: each frequency, the DST cases, short months, cron; computed from a
given moment, so no clock is needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest

from pipelines.schedule import Schedule, check_cron, weekday

NEW_YORK = ZoneInfo("America/New_York")


def local(text: str, zone: ZoneInfo = NEW_YORK, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone, fold=fold)


def times(schedule: Schedule, after: datetime, n: int) -> list[datetime]:
    return list(islice(schedule.times(after), n))


def in_zone(found: list[datetime], zone: ZoneInfo = NEW_YORK) -> list[str]:
    return [t.astimezone(zone).isoformat() for t in found]


def test_daily_runs_at_its_local_time_of_day() -> None:
    daily = Schedule("daily", "06:30", "Europe/London")
    found = times(daily, datetime(2027, 1, 10, 12, 0, tzinfo=UTC), 2)
    assert found == [
        datetime(2027, 1, 11, 6, 30, tzinfo=UTC),
        datetime(2027, 1, 12, 6, 30, tzinfo=UTC),
    ]
    summer = times(daily, datetime(2027, 7, 10, 12, 0, tzinfo=UTC), 1)
    assert summer == [datetime(2027, 7, 11, 5, 30, tzinfo=UTC)]  # 06:30 BST
    assert all(t.tzinfo is UTC for t in found)


def test_a_daily_time_the_spring_change_skips_runs_once_at_the_first_valid_time() -> None:
    daily = Schedule("daily", "02:30", "America/New_York")
    # 2027-03-14: clocks go from 02:00 EST to 03:00 EDT.
    found = times(daily, local("2027-03-13T12:00"), 3)
    assert in_zone(found) == [
        "2027-03-14T03:00:00-04:00",
        "2027-03-15T02:30:00-04:00",
        "2027-03-16T02:30:00-04:00",
    ]


def test_a_daily_time_the_autumn_change_repeats_runs_once_at_its_first_instant() -> None:
    daily = Schedule("daily", "01:30", "America/New_York")
    # 2027-11-07: clocks go from 02:00 EDT back to 01:00 EST; 01:30 happens twice.
    found = times(daily, local("2027-11-06T12:00"), 2)
    assert in_zone(found) == ["2027-11-07T01:30:00-04:00", "2027-11-08T01:30:00-05:00"]
    # Asked between the two 01:30s, the next run is the next day's: not the second 01:30.
    between = local("2027-11-07T01:45", fold=0)
    assert in_zone(times(daily, between, 1)) == ["2027-11-08T01:30:00-05:00"]


def test_a_0230_job_runs_once_on_both_change_days() -> None:
    daily = Schedule("daily", "02:30", "America/New_York")
    for day in ("2027-03-14", "2027-11-07"):
        start = local(f"{day}T00:00")
        found = [
            t
            for t in times(daily, start - timedelta(days=1), 4)
            if start.date() == t.astimezone(NEW_YORK).date()
        ]
        assert len(found) == 1, day


def test_hourly_runs_every_real_hour_across_both_changes() -> None:
    hourly = Schedule("hourly", "00:15", "America/New_York")
    for start in ("2027-03-14T00:00", "2027-11-07T00:00"):
        found = times(hourly, local(start), 5)
        gaps = {later - earlier for earlier, later in pairwise(found)}
        assert gaps == {timedelta(hours=1)}, start
        assert {t.astimezone(NEW_YORK).minute for t in found} == {15}


def test_hourly_in_a_zone_half_an_hour_off_utc() -> None:
    hourly = Schedule("hourly", "00:00", "Asia/Kolkata")
    found = times(hourly, datetime(2027, 1, 1, 0, 10, tzinfo=UTC), 2)
    assert [t.astimezone(ZoneInfo("Asia/Kolkata")).minute for t in found] == [0, 0]
    assert found[0] == datetime(2027, 1, 1, 0, 30, tzinfo=UTC)


def test_weekly_runs_on_its_weekday() -> None:
    weekly = Schedule("weekly", "09:00", "Europe/Paris", day=weekday("fri"))
    found = times(weekly, datetime(2027, 1, 1, 9, 0, tzinfo=UTC), 3)  # a Friday, after 09:00 CET
    assert [t.astimezone(ZoneInfo("Europe/Paris")).strftime("%a %d %H:%M") for t in found] == [
        "Fri 08 09:00",
        "Fri 15 09:00",
        "Fri 22 09:00",
    ]


def test_monthly_on_the_31st_runs_on_the_last_day_of_shorter_months() -> None:
    monthly = Schedule("monthly", "00:00", "UTC", day=31)
    found = times(monthly, datetime(2027, 1, 1, tzinfo=UTC), 5)
    assert [t.date().isoformat() for t in found] == [
        "2027-01-31",
        "2027-02-28",
        "2027-03-31",
        "2027-04-30",
        "2027-05-31",
    ]
    on_30th = Schedule("monthly", "00:00", "UTC", day=30)
    assert [t.day for t in times(on_30th, datetime(2028, 1, 1, tzinfo=UTC), 3)] == [30, 29, 30]


def test_without_a_time_of_day_a_job_runs_a_period_after_its_last_run() -> None:
    ended = local("2027-03-13T02:30")
    assert Schedule("hourly").after_run(ended) == ended + timedelta(hours=1)
    daily = Schedule("daily", timezone="America/New_York")
    # The next local day at 02:30 does not exist: the first valid time after it.
    assert in_zone([daily.after_run(ended)]) == ["2027-03-14T03:00:00-04:00"]
    monthly = Schedule("monthly", timezone="UTC")
    assert monthly.after_run(datetime(2027, 1, 31, 8, tzinfo=UTC)) == datetime(
        2027, 2, 28, 8, tzinfo=UTC
    )
    assert not daily.at_times


def test_cron_with_and_without_seconds() -> None:
    weekdays = Schedule("cron", timezone="America/New_York", cron="30 2 * * 1-5")
    found = times(weekdays, local("2027-01-01T12:00"), 2)  # a Friday
    assert in_zone(found) == ["2027-01-04T02:30:00-05:00", "2027-01-05T02:30:00-05:00"]
    every_ten = Schedule("cron", cron="*/10 * * * * *")
    found = times(every_ten, datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC), 2)
    assert found == [
        datetime(2027, 1, 1, 0, 0, 10, tzinfo=UTC),
        datetime(2027, 1, 1, 0, 0, 20, tzinfo=UTC),
    ]


@pytest.mark.parametrize("bad", ["* * *", "61 * * * *", "every day", "* * * * * * *"])
def test_a_bad_cron_expression_says_what_one_looks_like(bad: str) -> None:
    with pytest.raises(ValueError, match="five fields"):
        check_cron(bad)


def test_weekdays_by_name() -> None:
    assert weekday("Monday") == 0
    assert weekday("sun") == 6
    with pytest.raises(ValueError, match="must be a weekday"):
        weekday("someday")
