"""Job specs: flat TOML files, validated on load, every error naming the field and the fix.

Each job type is a frozen dataclass built from a table of `Field`s; what is shared (name, type,
schedule, limits) is declared once here and reused by every job type.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError
from engine.readers.source import Limits, check_encoding
from engine.timestamps import check_timezone
from pipelines.errors import SpecError

FREQUENCIES = ("hourly", "daily", "weekly", "monthly")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Field:
    """One key of a job file: its kind, default, and how to check it."""

    kind: str
    """What the value must be, in words: `a string`, `true or false`, `a whole number`..."""
    types: tuple[type, ...]
    default: Any = None
    check: Callable[[Any], Any] | None = None
    """Returns the value to keep, or raises ValueError with the fix."""
    required: bool = False


@dataclass(frozen=True)
class Schedule:
    """When a kept-updated job runs: every hour, day, week or month, at a local time of day."""

    frequency: str | None = None
    time_of_day: str | None = None
    timezone: str = "UTC"


def one_of(*choices: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return check


def job_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be 1-64 letters, digits, '_', '.' or '-', starting with a letter")
    return value


def time_of_day(value: str) -> str:
    if not _TIME_OF_DAY.match(value):
        raise ValueError('must be a 24-hour time like "06:30"')
    return value


def reworded(check: Callable[[str], str], fix: str) -> Callable[[str], str]:
    """A field check made of an engine check: its ConfigError becomes the field's own fix."""

    def checked(value: str) -> str:
        try:
            return check(value)
        except ConfigError:
            raise ValueError(fix) from None

    return checked


timezone = reworded(check_timezone, "must be an IANA timezone name like Europe/London or UTC")


def encoding(value: str) -> str:
    return check_encoding(value)


def positive(value: int | float) -> int | float:
    # NaN compares false with everything: `not value > 0` refuses it, and inf is no limit.
    if isinstance(value, bool) or not value > 0 or not math.isfinite(value):
        raise ValueError("must be a positive, finite number")
    return value


def regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"must be a regular expression ({exc})") from None
    return value


STRING = ("a string", (str,))
BOOL = ("true or false", (bool,))

COMMON: dict[str, Field] = {
    "name": Field("a job name", (str,), check=job_name, required=True),
    "type": Field("a job type", (str,), required=True),
    "keep_updated": Field(*BOOL, default=False),
    "frequency": Field(*STRING, check=one_of(*FREQUENCIES)),
    "time_of_day": Field(*STRING, check=time_of_day),
    "schedule_timezone": Field(*STRING, check=timezone),
    "max_bytes": Field("a whole number of bytes", (int,), check=positive),
    "max_ratio": Field("a number", (int, float), check=positive),
    "max_line_bytes": Field("a whole number of bytes", (int,), check=positive),
    "max_field_bytes": Field("a whole number of bytes", (int,), check=positive),
}


@dataclass(frozen=True)
class Loaded:
    """A validated job file: its values by key, and where it came from."""

    source: str
    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def schedule(self, default_timezone: str = "UTC") -> Schedule:
        schedule = Schedule(
            frequency=self.values.get("frequency"),
            time_of_day=self.values.get("time_of_day"),
            timezone=self.values.get("schedule_timezone") or default_timezone,
        )
        if self.values.get("keep_updated") and schedule.frequency is None:
            raise SpecError(
                self.source,
                "frequency",
                f"is needed when keep_updated is true: one of {', '.join(FREQUENCIES)}",
            )
        return schedule

    def limits(self) -> Limits:
        defaults = Limits()
        return Limits(
            max_bytes=self.values.get("max_bytes") or defaults.max_bytes,
            max_ratio=float(self.values.get("max_ratio") or defaults.max_ratio),
            max_line_bytes=self.values.get("max_line_bytes") or defaults.max_line_bytes,
            max_field_bytes=self.values.get("max_field_bytes") or defaults.max_field_bytes,
        )


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(source, None, f"is not valid TOML: {exc}") from None


def validate(raw: Mapping[str, Any], fields: Mapping[str, Field], source: str) -> Loaded:
    """Check every key of a job file against `fields` (plus the common ones)."""
    known = {**COMMON, **fields}
    for key, value in raw.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = (
                f": did you mean '{close[0]}'?" if close else f"; the fields are {', '.join(known)}"
            )
            raise SpecError(source, key, f"is not a field of a {raw.get('type', '?')} job{hint}")
        if isinstance(value, dict) and (key not in known or dict not in known[key].types):
            raise SpecError(source, key, "must be a value, not a table: job files are flat")
    values: dict[str, Any] = {}
    for key, spec in known.items():
        if key not in raw:
            if spec.required:
                raise SpecError(source, key, f"is missing: it must be {spec.kind}")
            values[key] = spec.default
            continue
        value = raw[key]
        wrong_bool = isinstance(value, bool) and bool not in spec.types
        if not isinstance(value, spec.types) or wrong_bool:
            raise SpecError(source, key, f"must be {spec.kind}, not {_shown(value)}")
        if spec.check is not None:
            try:
                value = spec.check(value)
            except ValueError as exc:
                raise SpecError(source, key, f"{exc} (got {_shown(value)})") from None
        values[key] = value
    return Loaded(source, values)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
