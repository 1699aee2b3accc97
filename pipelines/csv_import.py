"""The `csv-import` job: one CSV object from a bucket into a stream, exactly once.

One run:

1. pick the file: the named one, or the next of the `prefix` sequence (none: `no new file`);
2. stream it through decompression into the CSV reader, every field as text;
3. keep the chosen fields, take `_ts` from the timestamp column, add `_line` and `_source`;
4. with `diff`, drop the rows that were in the previous file;
5. append to the stream exactly once per (job, object, ETag), then move the job's state on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from engine import storage
from engine.diff import Snapshots
from engine.errors import ConfigError
from engine.executor import prefetch
from engine.readers.csv import CsvDialect, CsvReader
from engine.readers.source import Limits
from engine.store import Source, Store, append_id, check_stream_name
from engine.timestamps import TimestampRule
from pipelines import importing
from pipelines.runs import ALREADY_IMPORTED, NO_NEW_FILE, RunRecord, recorded
from pipelines.spec import BOOL, STRING, Field, Loaded, Schedule, SpecError, encoding, one_of
from pipelines.spec import regex as regex_check
from pipelines.spec import timezone as timezone_check


def _stream(value: str) -> str:
    try:
        return check_stream_name(value)
    except ConfigError:
        raise ValueError("must be a stream name: letters, digits, '_', '.' or '-'") from None


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
    auth = store.authorization(job.auth) if job.auth else None
    # 1. Pick the file.
    picked = importing.pick_file(
        store, job.name, job.folder, auth, file=job.file, prefix=job.prefix
    )
    if picked is None:
        record.status = NO_NEW_FILE
        return
    target = picked.file
    source = Source(target.url, target.etag)
    record.object = target.url
    snapshots = Snapshots(store.snapshots_path(job.name), spill=store.path / "tmp")
    run_id = append_id(job.name, source)
    staged_rejects = snapshots.pending(run_id)[0]
    if store.is_committed(job.stream, job.name, source):
        # Committed by an earlier run that stopped before moving the job's state on.
        importing.commit_rejected(store, job.stream, job.name, source, staged_rejects)
        snapshots.promote(run_id)
        importing.remember_file(store, job.name, picked)
        record.status = ALREADY_IMPORTED
        return

    # 2-3. Stream the object through the CSV reader: fields, event time, line numbers.
    wanted = job.fields
    if wanted is not None and job.timestamp and job.timestamp.column not in wanted:
        wanted = [*wanted, job.timestamp.column]
    keep_ts_column = job.fields is None or (
        job.timestamp is not None and job.timestamp.column in job.fields
    )

    def read(rejections: importing.Rejections) -> tuple[CsvReader, pa.RecordBatchReader]:
        reader = CsvReader(
            lambda: storage.open_input(target.url, auth),
            name=target.url,
            dialect=job.dialect,
            fields=wanted,
            limits=job.limits,
            on_bad_row=rejections.handler,
        )
        if job.timestamp and job.timestamp.column not in reader.header:
            raise ConfigError(
                f"the timestamp field '{job.timestamp.column}' is not in {target.url}: "
                f"the fields are {', '.join(reader.header)}"
            )
        rows = importing.with_event_time(
            reader.batches(), job.timestamp, rejections, keep_column=keep_ts_column
        )
        schema = importing.event_time_schema(reader.schema, job.timestamp, keep_ts_column)
        return reader, pa.RecordBatchReader.from_batches(schema, prefetch(rows))

    # 4. Diff: a first pass fingerprints the file and finds the lines of the new rows. With
    # --reset-diff the current snapshot is ignored, and replaced once this file is committed.
    new = None
    if job.diff:
        first = reset_diff or not importing.has_imported(store, job.name)
        _, probe = read(importing.Rejections(target.url, job.bad_rows, job.max_rejected))
        fingerprinted = [f.name for f in probe.schema if f.name != "_line"]
        new = snapshots.new_lines(probe, fingerprinted, run_id, first=first)

    rejections = importing.Rejections(target.url, job.bad_rows, job.max_rejected)
    reader, rows = read(rejections)
    kept = (new.keep(batch) for batch in rows) if new is not None else iter(rows)
    report = (lambda: progress(reader.bytes_read, target.size)) if progress else None

    def before_commit() -> None:
        rejections.check(reader.rows_read + reader.rows_bad)
        rejections.stage(staged_rejects)

    batches = pa.RecordBatchReader.from_batches(
        rows.schema,
        importing.after_all(importing.progress_every(kept, report), before_commit),
    )

    # 5. Append exactly once, then move the job's state on.
    try:
        result = store.append(job.stream, batches, source=source, job=job.name)
    except BaseException:
        snapshots.discard(run_id)
        staged_rejects.unlink(missing_ok=True)
        raise
    importing.commit_rejected(store, job.stream, job.name, source, staged_rejects)
    snapshots.promote(run_id)
    importing.remember_file(store, job.name, picked)

    record.rows_read = reader.rows_read + reader.rows_bad
    record.rows_imported = result.rows
    record.rows_rejected = len(rejections.rows)
    record.rows_skipped = (new.rows - result.rows) if new is not None else 0
    record.bytes = reader.bytes_read
    if reader.rows_read == 0 and not rejections.rows:
        record.note = "the file has a header and no rows: nothing to import"
    elif reader.rows_blank:
        record.note = f"{reader.rows_blank:,} blank rows skipped"
