"""When a kept-updated job runs: its schedule's times, computed by dateutil's rrule (hourly,
daily, weekly, monthly) and croniter (cron expressions), in the schedule's IANA timezone.

- A time of day is a local wall-clock time. A daily, weekly or monthly time that a DST change
  skips runs at the first valid time after it (02:30 on a spring-forward night in New York: at
  03:00); one that a DST change repeats runs once, at its first instant.
- Hourly runs at the time of day's minute of every hour, counted in real hours, so a DST change
  neither skips nor doubles one.
- A monthly day past a month's end is the month's last day (the 31st in April: the 30th).
- Without a time of day a job runs one period after its last run ended (an hour, or a local
  day, week or month), and right away when it has not run yet.

Every time here is an aware datetime; what comes out is in UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Frequency = Literal["hourly", "daily", "weekly", "monthly", "cron"]
FREQUENCIES: tuple[str, ...] = ("hourly", "daily", "weekly", "monthly", "cron")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class Schedule:
    """When a kept-updated job runs (see the module)."""

    frequency: str
    time_of_day: str | None = None
    """"HH:MM", local to `timezone`."""
    timezone: str = "UTC"
    day: int | None = None
    """Weekly: the weekday, 0 for Monday. Monthly: the day of the month, 1 to 31."""
    cron: str | None = None
    """With frequency "cron": five fields, or six with seconds first."""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def at_times(self) -> bool:
        """Whether it runs at times of its own (a time of day or a cron), rather than one
        period after the last run."""
        return self.cron is not None or self.time_of_day is not None

    def times(self, after: datetime) -> Iterator[datetime]:
        """Its times strictly after `after` (needs `at_times`), in UTC, in order."""
        if self.cron is not None:
            yield from _cron_times(self.cron, self.zone, after)
        elif self.frequency == "hourly":
            yield from _hourly_times(self._clock()[1], self.zone, after)
        else:
            yield from _wall_clock_times(self, after)

    def next_time(self, after: datetime) -> datetime:
        """Its first time strictly after `after`."""
        return next(self.times(after))

    def after_run(self, ended: datetime) -> datetime:
        """When a schedule without times runs next: one period after a run ended."""
        if self.frequency == "hourly":
            return (ended + timedelta(hours=1)).astimezone(UTC)
        from dateutil.relativedelta import relativedelta

        step = {
            "daily": relativedelta(days=1),
            "weekly": relativedelta(weeks=1),
            "monthly": relativedelta(months=1),
        }[self.frequency]
        local = ended.astimezone(self.zone).replace(tzinfo=None)
        return _instant(local + step, self.zone)

    def _clock(self) -> tuple[int, int]:
        hour, minute = (self.time_of_day or "00:00").split(":")
        return int(hour), int(minute)


def _wall_clock_times(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Daily, weekly and monthly times: local wall-clock times by rrule, each made an
    instant (a skipped time moves forward to the first valid one)."""
    from dateutil import rrule

    hour, minute = schedule._clock()
    zone = schedule.zone
    local_after = after.astimezone(zone).replace(tzinfo=None)
    # A day back: a wall-clock time just before `after` can be an instant after it (DST).
    start = (local_after - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    by: dict[str, object] = {"byhour": hour, "byminute": minute, "bysecond": 0}
    if schedule.frequency == "daily":
        rule = rrule.rrule(rrule.DAILY, dtstart=start, **by)
    elif schedule.frequency == "weekly":
        rule = rrule.rrule(
            rrule.WEEKLY,
            dtstart=start,
            byweekday=schedule.day or 0,
            **by,
        )
    else:
        day = schedule.day or 1
        # The day, or the month's last day when the month is shorter: the first of the two.
        days = {"bymonthday": (day, -1), "bysetpos": 1} if day > 28 else {"bymonthday": day}
        rule = rrule.rrule(rrule.MONTHLY, dtstart=start, **days, **by)
    last: datetime | None = None
    for local in rule:
        moment = _instant(local, zone)
        if moment > after and moment != last:
            yield moment
        last = moment


def _hourly_times(minute: int, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Every real hour, at the minute that is `minute` on the zone's clocks."""
    from dateutil import rrule

    offset = after.astimezone(zone).utcoffset() or timedelta()
    at = (minute - int(offset.total_seconds() // 60)) % 60  # zones an odd half hour off UTC
    start = after.astimezone(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    for moment in rrule.rrule(rrule.HOURLY, dtstart=start, byminute=at, bysecond=0):
        found = moment.replace(tzinfo=UTC)
        if found > after:
            yield found


def _cron_times(expression: str, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    from croniter import croniter

    times = croniter(
        expression, after.astimezone(zone), second_at_beginning=len(expression.split()) == 6
    )
    while True:
        found: datetime = times.get_next(datetime)
        yield found.astimezone(UTC)


def _instant(local: datetime, zone: ZoneInfo) -> datetime:
    """The instant of a local wall-clock time: its first, when a DST change repeats it; the
    first valid time after it, when a DST change skips it."""
    first = local.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == local:
        return first.astimezone(UTC)
    # In a gap: fold=1 reads it with the offset after the change, fold=0 with the one
    # before; the change is between the two instants, on a whole minute.
    low = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first.astimezone(UTC)
    low, high = min(low, high), max(low, high)
    before = low.astimezone(zone).utcoffset()
    moment = low
    while moment < high and moment.astimezone(zone).utcoffset() == before:
        moment += timedelta(minutes=1)
    return moment


def check_cron(expression: str) -> str:
    """A cron expression croniter reads (five fields, or six with seconds first)."""
    from croniter import croniter

    fields = len(expression.split())
    if fields not in (5, 6) or not croniter.is_valid(expression, second_at_beginning=fields == 6):
        raise ValueError(
            'must be a cron expression of five fields ("30 2 * * 1-5": 02:30 on weekdays) or '
            'six with seconds first ("*/10 * * * * *": every ten seconds)'
        )
    return expression


def weekday(value: str | int) -> int:
    """A weekday's number (0 for Monday) from its name or its first three letters."""
    text = str(value).strip().lower()
    for number, name in enumerate(WEEKDAYS):
        if text in (name, name[:3]):
            return number
    raise ValueError(f"must be a weekday: {', '.join(WEEKDAYS)} (or their first three letters)")
