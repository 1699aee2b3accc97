"""The `event-export` job: the events of some streams (all of them by default) to a bucket as
CSV, JSON or Parquet, compressed, in parts, with a manifest; on each run only the events
committed since the last run that completed.

One run:
1. pin each selected stream at its version now, and take the events committed after the
   version the last completed run reached (a first run, or `--restart`: every event); what
   commits while the run goes on is the next run's;
2. columns: `_stream`, `_ts`, `_source`, `_ingested_at`, then every stream's fields sorted
   (engine.events), or `fields` in their order; a field a stream lacks is empty in its rows;
3. encode, compress and upload in parallel parts (the audience export's writers): nothing is
   visible before a file is complete;
4. confirm each file's size at the destination, write the manifest last, then move the
   watermarks (the versions reached) in the state.db transaction that ends the run's journal:
   a run that stops before leaves them where they were, and the next run takes back what it
   began; a run that stops after its decision is finished by the next one, watermarks too;
5. email the links when `email_to` is set; record the run: events by stream, files, bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import BeforeValidator, model_validator

from engine import events, mail
from engine.declared import Kind, Problem
from engine.errors import ConfigError
from engine.storage.folders import Destination, folder
from engine.store import Changes, Store, check_stream_name
from engine.writers.export import FileSets, Options, Result, export
from engine.writers.names import FileNames, format_timestamp
from pipelines.exporting import (
    RUN,
    WATERMARKS,
    ExportSpec,
    email,
    encryption,
    journal,
    settle_export,
    url,
)
from pipelines.runs import RunRecord, recorded
from pipelines.spec import FieldNames, JobType, reworded

DEFAULT_TEMPLATE = "lakeport-events-{TIMESTAMP}"
NO_NEW_EVENTS = "no new events"
COLUMNS = "columns"
"""The watermark that keeps the last export's columns (a new field is said so)."""


def version_key(stream: str) -> str:
    """The watermark of a stream: the table version the last completed run reached."""
    return f"version:{stream}"


def _moment(value: Any) -> Any:
    """An ISO 8601 time; without an offset it is UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError('must be an ISO 8601 time like "2026-11-01T00:00:00Z"') from None
    else:
        return value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _streams(value: Any) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return value  # the type check says what it must be
    if not value:
        raise ValueError("must name at least one stream (leave it out for all of them)")
    if len(set(value)) != len(value):
        raise ValueError("names a stream twice")
    return [reworded(check_stream_name, "must be stream names")(name) for name in value]


Moment = Annotated[
    datetime, BeforeValidator(_moment), Kind('an ISO 8601 time like "2026-11-01T00:00:00Z"')
]
StreamNames = Annotated[list[str], BeforeValidator(_streams), Kind("a list of stream names")]


class EventExportJob(ExportSpec):
    """An `event-export` job file."""

    placeholders = ("TIMESTAMP", "JOB", "PART", "STREAM")

    type: Literal["event-export"]
    """`"event-export"`."""
    streams: StreamNames | None = None
    """The streams whose events are exported; all of them when absent."""
    format: Literal["csv", "json", "parquet"] = "csv"
    """`csv`, `json` or `parquet`."""
    fields: Annotated[FieldNames, Kind("a list of event field names")] | None = None
    """The columns, in the order given (engine fields such as `_stream` and `_ts` too); when
    absent `_stream`, `_ts`, `_source`, `_ingested_at`, then every field sorted."""
    since: Moment | None = None
    """Only events at or after this time (`_ts`, ISO 8601; UTC without an offset)."""
    until: Moment | None = None
    """Only events before this time."""
    filename: str = DEFAULT_TEMPLATE
    """The name without its extension: text and `{TIMESTAMP}`, `{JOB}`, `{PART}`, and
    `{STREAM}` with `split_by_stream`."""
    split_by_stream: bool = False
    """Each stream's events in files of their own, with the stream's name at `{STREAM}` (or
    after the name); one manifest lists them all."""

    @model_validator(mode="after")
    def _split(self) -> EventExportJob:
        if "{STREAM}" in self.filename and not self.split_by_stream:
            raise Problem(
                "filename",
                "holds {STREAM}, which names a stream's own files: set split_by_stream = true",
            )
        return self

    @model_validator(mode="after")
    def _bounded(self) -> EventExportJob:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise Problem("until", "must be after `since`")
        return self

    def names(self, timestamp: str) -> FileNames:
        return FileNames(
            self.directory, self.filename, timestamp, "", self.name, self.format, self.codec
        )


def run(
    store: Store,
    job: EventExportJob,
    *,
    reset_diff: bool = False,
    progress: Callable[[int, int], None] | None = None,
    restart: bool = False,
    wait: float | None = 0.0,
) -> RunRecord:
    """One recorded run (see the module). `restart` forgets what earlier runs exported: every
    event is exported again. `reset_diff` means nothing to an export."""

    def work(record: RunRecord) -> None:
        export_events(store, job, record, progress, restart=restart)

    return recorded(store, job.name, work, kind="events", wait=wait)


def export_events(
    store: Store,
    job: EventExportJob,
    record: RunRecord,
    progress: Callable[[int, int], None] | None = None,
    *,
    restart: bool = False,
) -> Result | None:
    """The run's steps, in order; the record is filled in as they finish. None when no
    stream has a new event (nothing is written)."""
    auth = store.authorizations.get(job.auth) if job.auth else None
    destination = folder(job.root, auth)
    settled = settle_export(store, job.name)  # it may move the watermarks: read them after
    server = mail.load(store) if job.email_to else None  # before any file is written
    marks = {} if restart else store.state.watermarks(job.name)
    found = [store.stream_changes(name, _reached(marks, name)) for name in _chosen(store, job)]
    changes = [c for c in found if c is not None]
    notes = [settled] if settled else []
    if not any(c.files for c in changes):
        record.status = NO_NEW_EVENTS
        record.note = "; ".join(notes) or None
        return None
    schema = events.columns(changes, job.fields)
    previous = json.loads(marks[COLUMNS]) if COLUMNS in marks else None
    added = [] if previous is None else [n for n in schema.names if n not in previous]
    started = datetime.now(UTC)
    names = _free_names(job, destination, format_timestamp(started, job.timestamp_format), record)
    about: dict[str, Any] = {
        "streams": {
            c.stream: {"after_version": c.after, "version": c.version, "events": 0} for c in changes
        },
        "fields_added": added,
    }
    counts = about["streams"]
    rows: pa.RecordBatchReader | FileSets = (
        [
            (replace(names, stream=c.stream), _rows(store, job, [c], schema, counts))
            for c in changes
            if c.files
        ]
        if job.split_by_stream
        else _rows(store, job, changes, schema, counts)
    )
    moved = {version_key(c.stream): str(c.version) for c in changes}
    moved[COLUMNS] = json.dumps(schema.names)
    run_id = f"{job.name}-{record.run_id}"
    result = export(
        rows,
        destination,
        names,
        Options(
            format=job.format,
            compress=job.codec,
            headers=job.headers,
            formula_guard=job.formula_guard,
            max_file_size=job.max_file_size,
            encrypt=encryption(auth),
        ),
        run_id=run_id,
        started=started,
        progress=progress,
        save=journal(
            store,
            job,
            **{WATERMARKS: moved, RUN: [record.run_id, url(job.root, names.manifest())]},
        ),
        about=about,
    )
    record.events = result.rows
    record.streams = {name: s["events"] for name, s in about["streams"].items()}
    record.bytes = result.bytes
    record.files = [f.key for f in result.files] + [result.manifest]
    record.object = url(job.root, result.manifest)
    if added:
        notes.append(f"new field(s) since the last export: {', '.join(added)}")
    if server is not None and job.email_to:
        what = f"the events of {', '.join(about['streams'])}"
        email(
            server,
            job,
            destination,
            result,
            what,
            f"{result.rows:,} events",
            f"lakeport: {result.rows:,} events exported (job '{job.name}')",
        )
        notes.append(f"emailed links to {', '.join(job.email_to)}")
    record.note = "; ".join(notes) or None
    return result


def _free_names(
    job: EventExportJob, destination: Destination, timestamp: str, record: RunRecord
) -> FileNames:
    """The run's names, never those of an earlier export (its events would be lost): a run
    in the same second as the last has its number after the timestamp."""
    names = job.names(timestamp)
    if destination.size(names.manifest()) is not None:
        names = job.names(f"{timestamp}-{record.run_id}")
    if destination.size(names.manifest()) is not None:
        raise ConfigError(
            f"job '{job.name}': an earlier export is at {url(job.root, names.manifest())}, "
            "and an event export never replaces one: put {TIMESTAMP} in `filename`"
        )
    return names


def _chosen(store: Store, job: EventExportJob) -> list[str]:
    """The streams to export, each checked to be in the store (by its folder: a folder
    whose first append died has no events to export, and is passed over)."""
    there = store.stream_names()
    if job.streams is None:
        if not there:
            raise ConfigError(
                f"job '{job.name}': the store has no streams yet: import some events first"
            )
        return there
    unknown = [name for name in job.streams if name not in there]
    if unknown:
        raise ConfigError(
            f"job '{job.name}': no stream named {', '.join(repr(n) for n in unknown)} "
            f"(streams: {', '.join(there) or 'none yet'}): fix `streams`"
        )
    return list(job.streams)


def _reached(marks: dict[str, str], stream: str) -> int | None:
    found = marks.get(version_key(stream))
    return None if found is None else int(found)


def _rows(
    store: Store,
    job: EventExportJob,
    changes: list[Changes],
    schema: pa.Schema,
    counts: dict[str, dict[str, Any]],
) -> pa.RecordBatchReader:
    """Every stream's new events, one stream after the other; `counts` hears each stream's
    events as they are read (the manifest is written after the last)."""
    spill = store.path / "tmp" / "events"
    views = job.format != "csv"  # Polars writes the other formats (see events.viewed)

    def batches() -> Iterator[pa.RecordBatch]:
        for change in changes:
            reader = events.rows(
                change, schema, spill=spill, since=job.since, until=job.until, views=views
            )
            for batch in reader:
                counts[change.stream]["events"] += batch.num_rows
                yield batch

    return pa.RecordBatchReader.from_batches(events.viewed(schema) if views else schema, batches())


JOB = JobType("event-export", EventExportJob, run)
