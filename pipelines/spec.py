"""Job specs: flat TOML files, one typed model per job type (engine.declared), checked on load.

What every job shares is declared once here and composed: `JobSpec` (name, type, schedule),
`InBucket` (bucket, directory, auth) and `Limited` (the limits of what an import reads). A job
type is a model made of them plus its own fields, and a `JobType` in the registry
(pipelines.jobs): its model and its run function.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import model_validator

from engine import storage
from engine.declared import Check, Declared, Kind, Problem
from engine.errors import ConfigError
from engine.readers.source import Limits
from engine.store import Store
from engine.timestamps import check_timezone
from pipelines.errors import SpecError
from pipelines.runs import RunRecord
from pipelines.schedule import FREQUENCIES, Frequency, Schedule, check_cron, weekday

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def reworded(check: Callable[[str], str], fix: str) -> Callable[[str], str]:
    """A field check made of an engine check: its ConfigError becomes the field's own fix."""

    def checked(value: str) -> str:
        try:
            return check(value)
        except ConfigError:
            raise ValueError(fix) from None

    return checked


def _job_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be 1-64 letters, digits, '_', '.' or '-', starting with a letter")
    return value


def _time_of_day(value: str) -> str:
    if not _TIME_OF_DAY.match(value):
        raise ValueError('must be a 24-hour time like "06:30"')
    return value


def _positive(value: int | float) -> int | float:
    # NaN compares false with everything: `not value > 0` refuses it, and inf is no limit.
    if not value > 0 or not math.isfinite(value):
        raise ValueError("must be a positive, finite number")
    return value


def _at_least_one(value: int) -> int:
    if value < 1:
        raise ValueError("must be a whole number, 1 or more")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"must be a regular expression ({exc})") from None
    return value


def _names(value: list[str]) -> list[str]:
    if not value or not all(v.strip() for v in value):
        raise ValueError("must be a non-empty list of field names")
    if len(set(value)) != len(value):
        raise ValueError("names a field twice")
    return value


Timezone = Annotated[
    str, Check(reworded(check_timezone, "must be an IANA timezone name like Europe/London or UTC"))
]
Positive = Annotated[int, Kind("a whole number of bytes"), Check(_positive)]
AtLeastOne = Annotated[int, Check(_at_least_one)]
Regex = Annotated[str, Check(_regex)]
FieldNames = Annotated[list[str], Kind("a list of field names"), Check(_names)]


class JobSpec(Declared):
    """What every job file has: its name and type, and its schedule."""

    noun: ClassVar[str] = "field of a {type} job"
    nouns: ClassVar[str] = "fields"
    flat: ClassVar[bool] = True

    name: Annotated[str, Kind("a job name"), Check(_job_name)]
    """The job's name (letters, digits, `_ . -`): its state is kept under it."""
    type: str
    """The job type."""
    keep_updated: bool = False
    """Whether the job runs on its schedule (`lakeport scheduler`)."""
    frequency: Frequency | None = None
    """How often a kept-updated job runs: hourly, daily, weekly, monthly, or cron."""
    time_of_day: Annotated[str, Check(_time_of_day)] | None = None
    """When it runs, "HH:MM" in `schedule_timezone` (hourly: its minute)."""
    schedule_timezone: Timezone | None = None
    """The IANA timezone of `time_of_day`."""
    day: Annotated[str | int, Kind("a weekday or a day of the month")] | None = None
    """Weekly: the weekday (monday...sunday; default monday). Monthly: the day of the month,
    1 to 31 (default 1; past a month's end, its last day)."""
    cron: Annotated[str, Check(check_cron)] | None = None
    """With frequency = "cron": a cron expression, five fields, or six with seconds first."""

    @classmethod
    def error(cls, source: str, key: str | None, problem: str) -> ConfigError:
        return SpecError(source, key, problem)

    @model_validator(mode="after")
    def _scheduled(self) -> JobSpec:
        if self.keep_updated and self.frequency is None:
            raise Problem(
                "frequency", f"is needed when keep_updated is true: one of {', '.join(FREQUENCIES)}"
            )
        if (self.frequency == "cron") != (self.cron is not None):
            if self.cron is None:
                raise Problem("cron", 'is needed with frequency = "cron": an expression')
            raise Problem("cron", 'is for frequency = "cron" only: set that, or remove cron')
        if self.frequency == "cron" and self.time_of_day is not None:
            raise Problem("time_of_day", "is given by the cron expression: remove time_of_day")
        if self.day is not None:
            self._day_number()
        return self

    def _day_number(self) -> int | None:
        """`day` as Schedule takes it: 0-6 for a weekday, 1-31 for a day of the month."""
        if self.day is None:
            return None
        if self.frequency == "weekly":
            try:
                return weekday(self.day)
            except ValueError as exc:
                raise Problem("day", str(exc)) from None
        if self.frequency == "monthly":
            if isinstance(self.day, int) and 1 <= self.day <= 31:
                return self.day
            raise Problem(
                "day", "must be a day of the month, 1 to 31 (past a month's end: its last day)"
            )
        raise Problem("day", "is for weekly or monthly schedules: remove it, or change frequency")

    @property
    def default_timezone(self) -> str:
        """The timezone of a schedule without `schedule_timezone`."""
        return "UTC"

    @property
    def schedule(self) -> Schedule | None:
        """When the job runs, or None when it is not kept updated."""
        if not self.keep_updated or self.frequency is None:
            return None
        return Schedule(
            self.frequency,
            self.time_of_day,
            self.schedule_timezone or self.default_timezone,
            day=self._day_number(),
            cron=self.cron,
        )


class InBucket(Declared):
    """Where a job reads or writes: a bucket (or local folder) and a directory in it."""

    auth: str | None = None
    """The authorization for an S3 bucket."""
    bucket: str
    """An S3 bucket name (with `auth`), an `s3://bucket` URL, or a local folder."""
    directory: str = ""
    """The folder inside the bucket, without `..` or a leading `/`."""

    @model_validator(mode="after")
    def _reachable(self) -> InBucket:
        self.root  # noqa: B018 - checks the bucket, once
        return self

    @model_validator(mode="after")
    def _inside(self) -> InBucket:
        """The directory as an import reads it (an export replaces this with its own)."""
        if ".." in self.directory.split("/") or self.directory.startswith("/"):
            raise Problem(
                "directory",
                f"= '{self.directory}' would leave the bucket: name a folder inside it, "
                "without '..' or a leading '/'",
            )
        return self

    @cached_property
    def root(self) -> str:
        """The URL of the bucket: of a local folder, nothing outside it is read."""
        bucket = self.bucket
        if bucket.startswith(("s3://", "file://", "memory://", ".", "~")) or "/" in bucket:
            base = bucket
        elif self.auth is not None:
            base = f"s3://{bucket}"
        else:
            raise Problem(
                "bucket",
                f"= '{bucket}' reads as an S3 bucket name, which needs `auth`; for a local "
                f"folder write a path such as ./{bucket}",
            )
        if base.startswith("s3://") and self.auth is None:
            raise Problem("bucket", f"= '{base}' is in S3: set `auth` to an authorization")
        return storage.parse_url(base).url

    @cached_property
    def folder(self) -> str:
        """The URL of the bucket's directory."""
        location = storage.parse_url(self.root)
        if self.directory:
            location = location.child(self.directory.strip("/") + "/")
        return location.url


class Limited(Declared):
    """The limits that protect the machine from what an import reads."""

    max_bytes: Positive | None = None
    """Decompressed bytes per object (default 256 GiB)."""
    max_ratio: Annotated[float, Kind("a number"), Check(_positive)] | None = None
    """Decompressed/compressed ratio (default 1000, checked past 64 MiB)."""
    max_line_bytes: Positive | None = None
    """The longest record (default 2 MiB)."""
    max_field_bytes: Positive | None = None
    """The longest field (default 1 MiB)."""

    @model_validator(mode="after")
    def _within(self) -> Limited:
        try:
            self.limits  # noqa: B018 - Limits checks what a reader can take
        except ConfigError as exc:  # "limit NAME must be at most ..."
            said = str(exc).removeprefix("limit ")
            raise Problem.named(f"{said.partition(' ')[0]} is too large: {said}") from None
        return self

    @cached_property
    def limits(self) -> Limits:
        defaults = Limits()
        return Limits(
            max_bytes=self.max_bytes or defaults.max_bytes,
            max_ratio=float(self.max_ratio or defaults.max_ratio),
            max_line_bytes=self.max_line_bytes or defaults.max_line_bytes,
            max_field_bytes=self.max_field_bytes or defaults.max_field_bytes,
        )


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(source, None, f"is not valid TOML: {exc}") from None


J = TypeVar("J", bound=JobSpec)
J_contra = TypeVar("J_contra", bound=JobSpec, contravariant=True)


class Runner(Protocol[J_contra]):
    """A job type's run function: one recorded run of a job."""

    def __call__(
        self,
        store: Store,
        job: J_contra,
        *,
        reset_diff: bool = False,
        progress: Callable[[int, int], None] | None = None,
        restart: bool = False,
        wait: float | None = 0.0,
    ) -> RunRecord: ...


@dataclass(frozen=True)
class JobType(Generic[J]):
    """A job type: its name (the files' `type`), its model and its run function."""

    name: str
    spec: type[J]
    run: Runner[J]
