"""What every import job shares: the run itself (`run_import`), and its parts: the source
location, picking the file, event times, the bad-row policy, and committing with the job's
state. A job type (`csv_import`, later `json_import`) brings its spec and its reader."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import sequence, storage
from engine.auth import Authorization
from engine.crash import crash_point
from engine.errors import ConfigError, LimitExceeded
from engine.executor import prefetch
from engine.readers.rows import LINE, BadRow, ReadAgain
from engine.readers.source import Limits
from engine.storage import FileInfo
from engine.store import AppendResult, Source, Store, check_stream_name
from engine.store_rows import TS
from engine.timestamps import UTC_US, TimestampRule, parse
from pipelines.errors import SpecError
from pipelines.import_state import (
    Commit,
    Picked,
    has_imported,
    last_file,
    settle,
)
from pipelines.runs import (
    ALREADY_IMPORTED,
    NO_NEW_FILE,
    STOPPED,
    WAITING,
    RunRecord,
    recorded,
)
from pipelines.spec import BOOL, STRING, Field, Loaded, Schedule, one_of, reworded
from pipelines.spec import regex as regex_check
from pipelines.spec import timezone as timezone_check

EMPTY_RUNS = "empty_runs"
"""Runs in a row that found no next file (a continuous JSON import stops after some)."""
REJECTED_SCHEMA = pa.schema([(LINE, pa.int64()), ("reason", pa.string()), ("text", pa.string())])


_stream = reworded(check_stream_name, "must be a stream name: letters, digits, '_', '.' or '-'")


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
    "timestamp": Field(*STRING),
    "timestamp_format": Field(*STRING),
    "timezone": Field(*STRING, default="UTC", check=timezone_check),
    "fields": Field("a list of field names", (list,), check=_fields),
    "diff": Field(*BOOL, default=False),
    "bad_rows": Field(*STRING, default="fail", check=one_of("fail", "quarantine")),
    "max_rejected": Field("a count or a fraction", (int, float), default=0.01, check=_max_rejected),
}
"""The fields every import job file has; a format adds its own."""


def common_values(job: Loaded) -> dict[str, Any]:
    """The values of `ImportJob`'s fields, checked (a file or a prefix, not both)."""
    if (job["file"] is None) == (job["prefix"] is None):
        raise SpecError(job.source, "file", "or 'prefix' must be given, and not both")
    if job["timestamp_format"] and not job["timestamp"]:
        raise SpecError(job.source, "timestamp_format", "needs `timestamp` (the field)")
    timestamp = None
    if job["timestamp"]:
        timestamp = TimestampRule(job["timestamp"], job["timestamp_format"], job["timezone"])
    return {
        "name": job["name"],
        "stream": job["stream"],
        "folder": source_url(job["bucket"], job["directory"], job["auth"], job.source),
        "root": source_url(job["bucket"], None, job["auth"], job.source),
        "auth": job["auth"],
        "file": job["file"],
        "prefix": job["prefix"],
        "timestamp": timestamp,
        "fields": job["fields"],
        "diff": job["diff"],
        "bad_rows": job["bad_rows"],
        "max_rejected": job["max_rejected"],
        "keep_updated": job["keep_updated"],
        "schedule": job.schedule(job["timezone"]),
        "limits": job.limits(),
    }


def run_job(
    store: Store,
    job: ImportJob,
    open_reader: OpenReader,
    *,
    reset_diff: bool,
    progress: Callable[[int, int], None] | None,
    restart: bool,
    wait: float | None = 0.0,
) -> RunRecord:
    """One recorded run of an import job (see `run_import`), under the job's lease. A failed
    run is a record with status `failed` and the error; the one LakeportError raised is
    `JobRunning`, when another run of the job is under way (and `wait` runs out)."""
    return recorded(
        store,
        job.name,
        lambda record: run_import(
            store,
            job,
            record,
            open_reader=open_reader,
            reset_diff=reset_diff,
            progress=progress,
            restart=restart,
        ),
        wait=wait,
    )


def source_url(bucket: str, directory: str | None, auth: str | None, job_file: str) -> str:
    """The URL of the job's folder: an S3 bucket (with `auth`) or a local folder."""
    is_url = bucket.startswith(("s3://", "file://", "memory://"))
    if is_url or "/" in bucket or bucket.startswith((".", "~")):
        base = bucket
    elif auth is not None:
        base = f"s3://{bucket}"
    else:
        raise ConfigError(
            f"{job_file}: field 'bucket' = '{bucket}' reads as an S3 bucket name, which needs "
            "`auth`; for a local folder write a path such as ./" + bucket
        )
    if base.startswith("s3://") and auth is None:
        raise ConfigError(f"{job_file}: bucket {base} is in S3: set `auth` to an authorization")
    location = storage.parse_url(base)
    if directory:
        if ".." in directory.split("/") or directory.startswith("/"):
            raise ConfigError(
                f"{job_file}: field 'directory' = '{directory}' would leave the bucket: name a "
                "folder inside it, without '..' or a leading '/'"
            )
        location = location.child(directory.strip("/") + "/")
    return location.url


def pick_file(
    store: Store,
    job: str,
    folder: str,
    auth: Authorization | None,
    *,
    file: str | None,
    prefix: str | None,
) -> Picked | None:
    """The object to import now: the named one, or the next one of the sequence; None if none."""
    listing = storage.list_directory(folder, auth)
    if file is not None:
        for info in listing.files:
            if info.name == file:
                return Picked(info, None)
        names = [f.name for f in listing.files]
        near = difflib.get_close_matches(file, names, n=3, cutoff=0.4)
        hint = f"; nearest: {', '.join(near)}" if near else f" ({len(names)} files there)"
        raise ConfigError(f"there is no file '{file}' in {listing.url}{hint}")
    assert prefix is not None
    last = last_file(store, job)
    found = sequence.next_after(listing.files, prefix, last)
    return None if found is None else Picked(found.file, found.time)


def _stopped(store: Store, job: str, empty_periods: int) -> bool:
    return int(store.state.get_watermark(job, EMPTY_RUNS) or 0) > empty_periods


def _how_to_restart(job: str) -> str:
    return (
        f"no next file came for the job's empty periods; once the next file is in the bucket, "
        f"restart the job with `lakeport jobs run {job} --restart` (or `lakeport run JOB.toml "
        "--restart`)"
    )


class Rejections:
    """The bad-row policy: fail at the first bad row, or quarantine up to `max_rejected`."""

    def __init__(self, name: str, policy: str, max_rejected: int | float) -> None:
        self.name = name
        self.quarantine = policy == "quarantine"
        self.max_rejected = max_rejected
        self.rows: list[BadRow] = []

    @property
    def handler(self) -> Callable[[BadRow], None] | None:
        """What a reader calls with a bad row; None makes the reader fail at the first one."""
        return self.add if self.quarantine else None

    def add(self, row: BadRow) -> None:
        if not self.quarantine:
            raise row.error(self.name)
        self.rows.append(row)
        limit = self.max_rejected
        if isinstance(limit, int) and len(self.rows) > limit:
            raise LimitExceeded(self._too_many(f"more than {limit:,} rows were rejected"))

    def check(self, total: int) -> None:
        """At the end of the object, before anything is committed: `total` rows were read."""
        limit = self.max_rejected
        if isinstance(limit, float) and total and len(self.rows) / total > limit:
            share = len(self.rows) / total
            raise LimitExceeded(self._too_many(f"{share:.2%} of the rows were rejected"))

    def _too_many(self, what: str) -> str:
        first = self.rows[0]
        return (
            f"{self.name}: {what} (max_rejected = {self.max_rejected}); nothing was imported. "
            f"The first, line {first.line}: {first.reason}. Fix the file or raise max_rejected"
        )

    def stage(self, path: Path) -> None:
        """Write the rejected rows next to the job's snapshots, before the stream commit."""
        if not self.rows:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        batch = pa.record_batch(
            [
                pa.array([r.line for r in self.rows], pa.int64()),
                pa.array([r.reason for r in self.rows], pa.string()),
                pa.array([r.text for r in self.rows], pa.string()),
            ],
            schema=REJECTED_SCHEMA,
        )
        pq.write_table(pa.Table.from_batches([batch]), path)


def _names(fields: list[str], column: str) -> bool:
    """Whether `fields` select `column`: by its name, or by an object it is under."""
    return any(column == f or column.startswith(f + ".") for f in fields)


def crashing(batches: Iterator[pa.RecordBatch], stage: str) -> Iterator[pa.RecordBatch]:
    """The batches, with the crash point `stage` after the first."""
    for batch in batches:
        yield batch
        crash_point(stage)


def with_event_time(
    batches: Iterator[pa.RecordBatch],
    rule: TimestampRule | None,
    rejections: Rejections,
    *,
    keep_column: bool,
) -> Iterator[pa.RecordBatch]:
    """Add `_ts` from the rule's column; rows whose time does not parse are bad rows."""
    if rule is None:
        yield from batches
        return
    for batch in batches:
        values = batch.column(rule.column)
        times, bad = parse(values, rule)
        if bad:
            lines = batch.column(LINE)
            for at in bad:
                value = values[at].as_py()
                rejections.add(
                    BadRow(
                        int(lines[at].as_py()),
                        f"field '{rule.column}' is not a timestamp: {value!r}"
                        + (f" (format {rule.format})" if rule.format else ""),
                        str(value),
                    )
                )
            keep = pc.invert(pc.is_null(times))
            batch, times = batch.filter(keep), times.filter(keep)
        if not keep_column:
            batch = batch.drop_columns([rule.column])
        yield batch.append_column(pa.field(TS, times.type), times)


def event_time_schema(
    schema: pa.Schema, rule: TimestampRule | None, keep_column: bool
) -> pa.Schema:
    if rule is None:
        return schema
    if not keep_column:
        schema = schema.remove(schema.get_field_index(rule.column))
    return schema.append(pa.field(TS, UTC_US))


def progress_every(
    batches: Iterator[pa.RecordBatch], report: Callable[[], None] | None
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if report is not None:
            report()
        yield batch


def after_all(
    batches: Iterator[pa.RecordBatch], check: Callable[[], Any]
) -> Iterator[pa.RecordBatch]:
    """Run `check` when the batches are done, before the consumer can commit them."""
    yield from batches
    check()


class RowReader(Protocol):
    """What `run_import` needs of a format's reader."""

    header: list[str]
    schema: pa.Schema
    rows_read: int
    rows_bad: int
    rows_blank: int

    @property
    def bytes_read(self) -> int: ...

    def batches(self) -> Iterator[pa.RecordBatch]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class ImportJob:
    """What every import job file holds, validated; a format's job class adds its own."""

    name: str
    stream: str
    folder: str
    """The URL of the bucket/directory."""
    root: str
    """The URL of the bucket: of a local folder, nothing outside it is read."""
    auth: str | None
    file: str | None
    prefix: str | None
    timestamp: TimestampRule | None
    fields: list[str] | None
    diff: bool
    bad_rows: str
    max_rejected: int | float
    keep_updated: bool
    schedule: Schedule
    limits: Limits
    empty_periods: int | None = None
    """Runs in a row without a next file before a continuous import stops itself (None:
    it never stops)."""


OpenReader = Callable[
    [FileInfo, Authorization | None, list[str] | None, "Rejections", bool], RowReader
]
"""Opens the reader of one object: (file, authorization, fields to keep, bad-row policy,
whether it is read again after its reader raised ReadAgain)."""


def run_import(
    store: Store,
    job: ImportJob,
    record: RunRecord,
    *,
    open_reader: OpenReader,
    reset_diff: bool,
    progress: Callable[[int, int], None] | None,
    restart: bool = False,
) -> None:
    """One run of an import job, step by step; a reader of the job's format does the reading.

    0. settle what the last run of the job left; 1. pick the file; 2-3. stream it through the
    reader (fields, event time, line numbers); 4. keep the rows to import (all, or the diff);
    5. append them exactly once and move the job's state on; then record what was done.

    A job with `empty_periods` (a continuous JSON import) waits while no next file has come,
    and stops itself after that many runs in a row found none; `restart` starts it again.
    """
    # 0. Finish or undo what the last run of the job left (it was killed, or stopped).
    settled = settle(store, job.name, raising=True)
    if settled is not None:
        record.note = settled
    picked = _pick(store, job, record, restart)
    if picked is None:
        return
    run = _ImportRun(store, job, record, picked, open_reader, reset_diff, progress)
    if run.committed_before():
        return
    reader, rejections, result = run.read_and_append()
    run.record_result(reader, rejections, result)


def _pick(store: Store, job: ImportJob, record: RunRecord, restart: bool) -> Picked | None:
    """1. The file to import, or None when there is none (the record says why: no new file,
    waiting for one, or stopped)."""
    auth = store.authorization(job.auth) if job.auth else None
    empty_periods = job.empty_periods
    if empty_periods is not None and restart:
        store.state.set_watermark(job.name, EMPTY_RUNS, "0")
    if empty_periods is not None and _stopped(store, job.name, empty_periods):
        record.status = STOPPED
        record.note = _how_to_restart(job.name)
        return None
    storage.check_inside(job.root, job.folder, "the directory")
    picked = pick_file(store, job.name, job.folder, auth, file=job.file, prefix=job.prefix)
    if picked is None:
        if empty_periods is None or job.prefix is None:
            record.status = NO_NEW_FILE
            return None
        empty = int(store.state.get_watermark(job.name, EMPTY_RUNS) or 0) + 1
        store.state.set_watermark(job.name, EMPTY_RUNS, str(empty))
        if empty > empty_periods:
            record.status = STOPPED
            record.note = _how_to_restart(job.name)
        else:
            record.status = WAITING
            record.note = f"{empty} of {empty_periods} empty periods before the job stops"
        return None
    if empty_periods is not None:
        store.state.set_watermark(job.name, EMPTY_RUNS, "0")
    storage.check_inside(job.root, picked.file.url, "the file")
    return picked


class _ImportRun:
    """Steps 2-5 of one run, on the file picked."""

    def __init__(
        self,
        store: Store,
        job: ImportJob,
        record: RunRecord,
        picked: Picked,
        open_reader: OpenReader,
        reset_diff: bool,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.store, self.job, self.record = store, job, record
        self.open_reader, self.reset_diff, self.progress = open_reader, reset_diff, progress
        self.auth = store.authorization(job.auth) if job.auth else None
        self.target = picked.file
        self.source = Source(self.target.url, self.target.etag)
        record.object = self.target.url
        if record.run_id is not None:
            store.state.set_run_object(record.run_id, self.target.url)
        crash_point("listed")
        self.commit = Commit(job.name, job.stream, self.source, picked)
        self.snapshots = self.commit.snapshots(store)
        self.staged_rejects = self.commit.staged_rejects(store)
        # The fields to read: the job's, with the timestamp's. The timestamp's column is
        # kept when the job's fields name it (or an object it is under), or name no field.
        self.wanted = job.fields
        if self.wanted is not None and job.timestamp and job.timestamp.column not in self.wanted:
            self.wanted = [*self.wanted, job.timestamp.column]
        self.keep_ts_column = job.fields is None or (
            job.timestamp is not None and _names(job.fields, job.timestamp.column)
        )

    def committed_before(self) -> bool:
        """Whether an earlier run committed the file and stopped before moving the job's
        state on: then this run only moves it on."""
        if not self.store.is_committed(self.job.stream, self.job.name, self.source):
            return False
        self.commit.finish(self.store)
        self.record.status = ALREADY_IMPORTED
        return True

    def read_and_append(self) -> tuple[RowReader, Rejections, AppendResult]:
        """Steps 2-5, under the run's journal entry: from `begin` until `finish` the journal
        holds what this run began, and however the run ends, it (or the next run of the job)
        finishes it if the Delta log has the commit, or undoes it if it has not."""
        self.commit.begin(self.store)
        try:
            try:
                done = self._attempt(again=False)
            except ReadAgain:
                # A streaming reader met a field it had not announced, before anything was
                # committed: read the object again, all of it before the first row.
                self.commit.undo_files(self.store)
                done = self._attempt(again=True)
        except BaseException:
            settle(self.store, self.job.name)
            raise
        self.commit.finish(self.store)
        return done

    def _read(self, rejections: Rejections, again: bool) -> tuple[RowReader, pa.RecordBatchReader]:
        """2-3. The object through the reader: fields, event time, line numbers."""
        job, target = self.job, self.target
        reader = self.open_reader(target, self.auth, self.wanted, rejections, again)
        if job.timestamp and job.timestamp.column not in reader.schema.names:
            reader.close()
            raise ConfigError(
                f"the timestamp field '{job.timestamp.column}' is not in {target.url}: "
                f"the fields are {', '.join(reader.header)}"
            )
        rows = with_event_time(
            reader.batches(), job.timestamp, rejections, keep_column=self.keep_ts_column
        )
        schema = event_time_schema(reader.schema, job.timestamp, self.keep_ts_column)
        return reader, pa.RecordBatchReader.from_batches(schema, prefetch(rows))

    def _attempt(self, again: bool) -> tuple[RowReader, Rejections, AppendResult]:
        """4. Read the object (once, also with `diff`) and keep the rows to import; 5. append
        them exactly once."""
        job, target, progress = self.job, self.target, self.progress
        rejections = Rejections(target.url, job.bad_rows, job.max_rejected)
        reader, rows = self._read(rejections, again)
        report = (lambda: progress(reader.bytes_read, target.size)) if progress else None

        def before_commit() -> None:
            rejections.check(reader.rows_read + reader.rows_bad)
            rejections.stage(self.staged_rejects)
            crash_point("before-commit")

        read_all = pa.RecordBatchReader.from_batches(
            rows.schema,
            after_all(progress_every(crashing(iter(rows), "read"), report), before_commit),
        )
        batches = read_all
        if job.diff:
            # With --reset-diff the current snapshot is ignored, and replaced once this
            # file is committed.
            first = self.reset_diff or not has_imported(self.store, job.name)
            # `_ts` is left out when its column is imported: the column says the same,
            # and as text it costs less to fingerprint.
            derived = {LINE, TS} if self.keep_ts_column else {LINE}
            fingerprinted = [f.name for f in rows.schema if f.name not in derived]
            diffed = self.snapshots.diff(read_all, fingerprinted, self.commit.id, first=first)
            batches = pa.RecordBatchReader.from_batches(
                diffed.schema, crashing(iter(diffed), "diffed")
            )
        result = self.store.append(job.stream, batches, source=self.source, job=job.name)
        crash_point("committed")
        return reader, rejections, result

    def record_result(
        self, reader: RowReader, rejections: Rejections, result: AppendResult
    ) -> None:
        """What the run did, on its record."""
        record = self.record
        record.rows_read = reader.rows_read + reader.rows_bad
        record.rows_imported = result.rows
        record.rows_rejected = len(rejections.rows)
        record.rows_skipped = (self.snapshots.fingerprinted - result.rows) if self.job.diff else 0
        record.bytes = reader.bytes_read
        notes = [record.note] if record.note else []  # what the start of the run settled
        if reader.rows_read == 0 and not rejections.rows:
            nothing = "a header and no rows" if reader.header else "no records"
            notes.append(f"the file has {nothing}: nothing to import")
        elif reader.rows_blank:
            notes.append(f"{reader.rows_blank:,} blank rows skipped")
        record.note = "; ".join(notes) or None
