"""The `csv-import` job: one CSV object from a bucket into a stream, exactly once.

The run is the import run of `importing.run_import` (pick the file, read it, event times, diff,
append exactly once, move the job's state on) with the CSV reader: every field as text, the
job's delimiter, quoting, encoding and limits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from engine import storage
from engine.auth import Authorization
from engine.readers.csv import CsvDialect, CsvReader
from engine.readers.source import Limits
from engine.storage import FileInfo
from engine.store import Store, check_stream_name
from engine.timestamps import TimestampRule
from pipelines import importing
from pipelines.errors import SpecError
from pipelines.runs import RunRecord, recorded
from pipelines.spec import BOOL, STRING, Field, Loaded, Schedule, encoding, one_of, reworded
from pipelines.spec import regex as regex_check
from pipelines.spec import timezone as timezone_check

_stream = reworded(check_stream_name, "must be a stream name: letters, digits, '_', '.' or '-'")


def _delimiter(value: str) -> str:
    value = "\t" if value in ("t", "\\t", "tab") else value
    if len(value) != 1 or value in '\r\n"':
        raise ValueError("must be one character (t or \\t for tab), not a quote or line break")
    return value


def _quote_char(value: str) -> str:
    if len(value) > 1:
        raise ValueError('must be one character, or "" for no quoting')
    return value


def _fields(value: list[Any]) -> list[str]:
    if not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a non-empty list of field names")
    return [str(v) for v in value]


def _max_rejected(value: int | float) -> int | float:
    if isinstance(value, bool) or value < 0 or (isinstance(value, float) and value >= 1):
        raise ValueError("must be a count (0, 1, 2...) or a fraction below 1 (0.01 for 1%)")
    return value


FIELDS: dict[str, Field] = {
    "auth": Field(*STRING),
    "bucket": Field(*STRING, required=True),
    "directory": Field(*STRING, default=""),
    "file": Field(*STRING),
    "prefix": Field(*STRING, check=regex_check),
    "stream": Field(*STRING, check=_stream, required=True),
    "delimiter": Field(*STRING, default=",", check=_delimiter),
    "encoding": Field(*STRING, default="utf-8", check=encoding),
    "quote_char": Field(*STRING, default='"', check=_quote_char),
    "timestamp": Field(*STRING),
    "timestamp_format": Field(*STRING),
    "timezone": Field(*STRING, default="UTC", check=timezone_check),
    "fields": Field("a list of field names", (list,), check=_fields),
    "diff": Field(*BOOL, default=False),
    "bad_rows": Field(*STRING, default="fail", check=one_of("fail", "quarantine")),
    "max_rejected": Field("a count or a fraction", (int, float), default=0.01, check=_max_rejected),
}


@dataclass(frozen=True)
class CsvImportJob:
    """A validated `csv-import` job file."""

    type: ClassVar[str] = "csv-import"
    name: str
    stream: str
    folder: str
    """The URL of the bucket/directory."""
    auth: str | None
    file: str | None
    prefix: str | None
    dialect: CsvDialect
    timestamp: TimestampRule | None
    fields: list[str] | None
    diff: bool
    bad_rows: str
    max_rejected: int | float
    keep_updated: bool
    schedule: Schedule
    limits: Limits

    @classmethod
    def from_loaded(cls, job: Loaded) -> CsvImportJob:
        if (job["file"] is None) == (job["prefix"] is None):
            raise SpecError(job.source, "file", "or 'prefix' must be given, and not both")
        if job["timestamp_format"] and not job["timestamp"]:
            raise SpecError(job.source, "timestamp_format", "needs `timestamp` (the column)")
        timestamp = None
        if job["timestamp"]:
            timestamp = TimestampRule(job["timestamp"], job["timestamp_format"], job["timezone"])
        return cls(
            name=job["name"],
            stream=job["stream"],
            folder=importing.source_url(job["bucket"], job["directory"], job["auth"], job.source),
            auth=job["auth"],
            file=job["file"],
            prefix=job["prefix"],
            dialect=CsvDialect(job["delimiter"], job["quote_char"] or None, job["encoding"]),
            timestamp=timestamp,
            fields=job["fields"],
            diff=job["diff"],
            bad_rows=job["bad_rows"],
            max_rejected=job["max_rejected"],
            keep_updated=job["keep_updated"],
            schedule=job.schedule(job["timezone"]),
            limits=job.limits(),
        )


def run(
    store: Store,
    job: CsvImportJob,
    *,
    reset_diff: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RunRecord:
    """One run of the job; see the module docstring. Never raises a LakeportError: a failed
    run is a record with status `failed` and the error."""
    return recorded(store, job.name, lambda record: _run(store, job, record, reset_diff, progress))


def _run(
    store: Store,
    job: CsvImportJob,
    record: RunRecord,
    reset_diff: bool,
    progress: Callable[[int, int], None] | None,
) -> None:
    def open_reader(
        target: FileInfo,
        auth: Authorization | None,
        fields: list[str] | None,
        rejections: importing.Rejections,
    ) -> CsvReader:
        return CsvReader(
            lambda: storage.open_input(target.url, auth),
            name=target.url,
            dialect=job.dialect,
            fields=fields,
            limits=job.limits,
            on_bad_row=rejections.handler,
        )

    importing.run_import(
        store, job, record, open_reader=open_reader, reset_diff=reset_diff, progress=progress
    )
