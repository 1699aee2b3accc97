"""Event times: every accepted form, timezones and DST, and the values that do not parse."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from engine.errors import ConfigError
from engine.timestamps import TimestampRule, parse


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def parsed(values: list[str], **rule: str) -> list[datetime | None]:
    result, bad = parse(pa.array(values), TimestampRule("ts", **rule))
    assert bad == []
    values_out: list[datetime | None] = result.to_pylist()
    return values_out


def test_iso_8601_with_and_without_zone_and_epochs() -> None:
    assert parsed(
        [
            "2026-11-01T09:00:00Z",
            "2026-11-01T09:00:00+01:00",
            "2026-11-01 09:00:00.250-0500",
            "2026-11-01T09:00:00",
            "2026-11-01",
            "1793523600",
            "1793523600123",
            " 2026-11-01T09:00:00Z ",
        ]
    ) == [
        utc(2026, 11, 1, 9),
        utc(2026, 11, 1, 8),
        utc(2026, 11, 1, 14, 0, 0, 250_000),
        utc(2026, 11, 1, 9),
        utc(2026, 11, 1),
        utc(2026, 11, 1, 9),
        utc(2026, 11, 1, 9, 0, 0, 123_000),
        utc(2026, 11, 1, 9),
    ]


def test_naive_values_are_in_the_jobs_timezone_dst_included() -> None:
    assert parsed(
        ["2026-07-01T12:00:00", "2026-12-01T12:00:00", "2026-07-01T12:00:00Z"],
        timezone="Europe/London",
    ) == [utc(2026, 7, 1, 11), utc(2026, 12, 1, 12), utc(2026, 7, 1, 12)]
    # 01:30 on 25 Oct 2026 happens twice in London: the earlier one (BST) is taken.
    assert parsed(["2026-10-25T01:30:00"], timezone="Europe/London") == [utc(2026, 10, 25, 0, 30)]
    # 01:30 on 29 Mar 2026 does not exist in London: the first instant after the gap.
    assert parsed(["2026-03-29T01:30:00"], timezone="Europe/London") == [utc(2026, 3, 29, 1)]


def test_a_format() -> None:
    assert parsed(["01/11/2026 09:30"], format="%d/%m/%Y %H:%M", timezone="America/New_York") == [
        utc(2026, 11, 1, 14, 30)
    ]
    assert parsed(["01/11/2026 09:30 +0100"], format="%d/%m/%Y %H:%M %z") == [
        utc(2026, 11, 1, 8, 30)
    ]


def test_values_that_do_not_parse_are_located() -> None:
    values = ["2026-11-01T09:00:00Z"] * 1000
    values[3] = "yesterday"
    values[777] = ""
    values[999] = "2026-13-45"
    result, bad = parse(pa.array(values), TimestampRule("ts"))
    assert bad == [3, 777, 999]
    assert result.null_count == 3
    assert result[4].as_py() == utc(2026, 11, 1, 9)


def test_unknown_timezone() -> None:
    with pytest.raises(ConfigError, match="'Mars/Olympus' is not an IANA timezone"):
        TimestampRule("ts", timezone="Mars/Olympus")
