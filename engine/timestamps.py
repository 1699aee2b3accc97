"""Event times: a text column parsed into `_ts`, UTC, vectorized.

Without a format a value may be ISO 8601 with a zone (`2026-11-01T09:00:00Z`,
`2026-11-01 09:00:00.5+05:30`), ISO 8601 without one (`2026-11-01T09:00:00`, `2026-11-01`),
which is read in the job's timezone, or epoch seconds (up to 11 digits) or milliseconds (12-14
digits). With a format (`%d/%m/%Y %H:%M`), values are read with it; without `%z` in it they are in
the job's timezone. Local times that a DST change makes ambiguous take the earlier instant; times
that fall in a DST gap take the first valid instant after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError

UTC_US = pa.timestamp("us", tz="UTC")
_ZONED = r"\d:\d\d(:\d\d(\.\d*)?)?\s?(Z|z|[+-]\d\d(:?\d\d)?)$"
_EPOCH = r"^\d{1,14}$"


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"'{name}' is not an IANA timezone: use a name like Europe/London or UTC"
        ) from None
    return name


@dataclass(frozen=True)
class TimestampRule:
    """How one column becomes `_ts`."""

    column: str
    format: str | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        check_timezone(self.timezone)


def parse(values: pa.Array, rule: TimestampRule) -> tuple[pa.Array, list[int]]:
    """The values as timestamp[us, UTC], and the positions of those that do not parse.

    Values that do not parse are null in the result. The common case, everything parses, costs a
    few vectorized passes; finding the bad values splits the array in halves until they are
    isolated.
    """
    values = pc.cast(values, pa.string())
    bad: list[int] = []
    parsed = _parse_or_locate(values, rule, 0, bad)
    return parsed, bad


def _parse_or_locate(
    values: pa.Array, rule: TimestampRule, offset: int, bad: list[int]
) -> pa.Array:
    try:
        return _parse_all(values, rule)
    except (pa.ArrowInvalid, ValueError):
        if len(values) == 1:
            bad.append(offset)
            return pa.nulls(1, UTC_US)
    half = len(values) // 2
    left = _parse_or_locate(values.slice(0, half), rule, offset, bad)
    right = _parse_or_locate(values.slice(half), rule, offset + half, bad)
    return pa.concat_arrays([left, right])


def _parse_all(values: pa.Array, rule: TimestampRule) -> pa.Array:
    if values.null_count or not pc.all(pc.greater(pc.utf8_length(values), 0)).as_py():
        raise ValueError("empty")
    if rule.format is None:
        # The usual case: one ISO 8601 shape for the whole column; one cast settles it.
        try:
            return pc.cast(values, UTC_US)
        except pa.ArrowInvalid:
            pass
    trimmed = pc.utf8_trim_whitespace(values)
    if rule.format is not None:
        parsed = pc.strptime(trimmed, format=rule.format, unit="us")
        if "%z" in rule.format:
            return pc.cast(parsed, UTC_US)
        return _localize(parsed, rule.timezone)
    epoch = pc.match_substring_regex(trimmed, _EPOCH)
    zoned = pc.match_substring_regex(trimmed, _ZONED)
    result: pa.Array | None = None
    if pc.any(epoch).as_py():
        result = _choose(result, epoch, _from_epoch(pc.if_else(epoch, trimmed, "0")))
    if pc.any(zoned).as_py():
        placeholder = "1970-01-01T00:00:00Z"
        result = _choose(result, zoned, pc.cast(pc.if_else(zoned, trimmed, placeholder), UTC_US))
    naive = pc.invert(pc.or_(epoch, zoned))
    if pc.any(naive).as_py():
        local = pc.cast(pc.if_else(naive, trimmed, "1970-01-01T00:00:00"), pa.timestamp("us"))
        result = _choose(result, naive, _localize(local, rule.timezone))
    assert result is not None
    return result


def _choose(current: pa.Array | None, mask: pa.Array, parsed: pa.Array) -> pa.Array:
    return parsed if current is None else pc.if_else(mask, parsed, current)


def _from_epoch(digits: pa.Array) -> pa.Array:
    numbers = pc.cast(digits, pa.int64())
    in_ms = pc.greater(pc.utf8_length(digits), 11)
    micros = pc.if_else(in_ms, pc.multiply(numbers, 1_000), pc.multiply(numbers, 1_000_000))
    return pc.cast(micros, pa.int64()).view(UTC_US)


def _localize(naive: pa.Array, timezone: str) -> pa.Array:
    if timezone == "UTC":
        return pc.cast(naive, UTC_US)
    local = pc.assume_timezone(naive, timezone, ambiguous="earliest", nonexistent="latest")
    return pc.cast(local, UTC_US)
