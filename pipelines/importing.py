"""What every import job shares: its declaration (`ImportJob`, which a format's job type
extends) and its run, read as its steps (`run_import`): settle, pick the file, read it, keep the
rows (all, or the diff), append them exactly once, record what was done. The rows' mechanics
(bad-row policy, event time) are engine.intake's; the job's state is engine.import_state's."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import cached_property
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import model_validator

from engine import sequence, storage
from engine.auth import Authorization
from engine.crash import crash_point
from engine.declared import Check, Kind, Problem
from engine.errors import ConfigError
from engine.executor import prefetch
from engine.import_state import (
    Commit,
    Picked,
    has_imported,
    last_file,
    settle,
)
from engine.intake import (
    Rejections,
    RowReader,
    after_all,
    crashing,
    event_time_schema,
    progress_every,
    with_event_time,
)
from engine.readers.rows import LINE, ReadAgain
from engine.storage import FileInfo
from engine.store import AppendResult, Source, Store, check_stream_name
from engine.store_rows import TS
from engine.timestamps import TimestampRule
from pipelines.runs import (
    ALREADY_IMPORTED,
    NO_NEW_FILE,
    STOPPED,
    WAITING,
    RunRecord,
    recorded,
)
from pipelines.spec import FieldNames, InBucket, JobSpec, Limited, Regex, Timezone, reworded

EMPTY_RUNS = "empty_runs"
"""Runs in a row that found no next file (a continuous JSON import stops after some)."""


def _max_rejected(value: int | float) -> int | float:
    if value < 0 or (isinstance(value, float) and value >= 1):
        raise ValueError("must be a count (0, 1, 2...) or a fraction below 1 (0.01 for 1%)")
    return value


StreamName = Annotated[
    str,
    Check(reworded(check_stream_name, "must be a stream name: letters, digits, '_', '.' or '-'")),
]


class ImportJob(Limited, InBucket, JobSpec):
    """What every import job file holds; a format's job type adds its own fields."""

    file: str | None = None
    """The object to import (a name in `directory`). Exactly one of `file` and `prefix`."""
    prefix: Regex | None = None
    """A regular expression matched at the start of file names, up to their timestamp."""
    stream: StreamName
    """The target stream."""
    timestamp: str | None = None
    """The field that holds the event time, parsed into `_ts` (UTC)."""
    timestamp_format: str | None = None
    """A `strptime` format when the field is not ISO 8601 or epoch."""
    timezone: Timezone = "UTC"
    """The IANA timezone of times that carry no zone."""
    fields: FieldNames | None = None
    """The fields to import, in order (all when absent)."""
    diff: bool = False
    """Import only the rows that were not in the previous file this job imported."""
    bad_rows: Literal["fail", "quarantine"] = "fail"
    """`fail`: the first bad row fails the run; `quarantine`: bad rows go to the rejected table."""
    max_rejected: Annotated[int | float, Kind("a count or a fraction"), Check(_max_rejected)] = 0.01
    """With `quarantine`: a count, or a fraction of the rows below 1."""

    @model_validator(mode="after")
    def _one_source(self) -> ImportJob:
        if (self.file is None) == (self.prefix is None):
            raise Problem("file", "or 'prefix' must be given, and not both")
        if self.timestamp_format and not self.timestamp:
            raise Problem("timestamp_format", "needs `timestamp` (the field)")
        return self

    @property
    def default_timezone(self) -> str:
        return self.timezone

    @cached_property
    def event_time(self) -> TimestampRule | None:
        """How the event time is read, if the job has one."""
        if self.timestamp is None:
            return None
        return TimestampRule(self.timestamp, self.timestamp_format, self.timezone)

    @property
    def chosen(self) -> list[str] | None:
        """The fields to read (all when None)."""
        return self.fields

    @property
    def stops_after(self) -> int | None:
        """Runs in a row without a next file before a continuous import stops itself (None:
        it never stops)."""
        return None


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


def _names(fields: list[str], column: str) -> bool:
    """Whether `fields` select `column`: by its name, or by an object it is under."""
    return any(column == f or column.startswith(f + ".") for f in fields)


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
    auth = store.authorizations.get(job.auth) if job.auth else None
    empty_periods = job.stops_after
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
        self.auth = store.authorizations.get(job.auth) if job.auth else None
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
        rule, chosen = job.event_time, job.chosen
        self.wanted = chosen
        if self.wanted is not None and rule and rule.column not in self.wanted:
            self.wanted = [*self.wanted, rule.column]
        self.keep_ts_column = chosen is None or (rule is not None and _names(chosen, rule.column))

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
        rule = job.event_time
        if rule and rule.column not in reader.schema.names:
            reader.close()
            raise ConfigError(
                f"the timestamp field '{rule.column}' is not in {target.url}: "
                f"the fields are {', '.join(reader.header)}"
            )
        rows = with_event_time(reader.batches(), rule, rejections, keep_column=self.keep_ts_column)
        schema = event_time_schema(reader.schema, rule, self.keep_ts_column)
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
