"""The `audience-export` job: an audience's profiles to a bucket as CSV, multi-CSV, JSON or
Parquet, compressed, in parts, with a manifest, and optionally an email with links to them.

One run:
1. scan the audience's profiles in record batches (the chosen fields, at most `user_limit`,
   with `segments`: every audience each user is in, from the same pass);
2. encode (engine.writers: Polars expressions, no per-row Python), compress, upload in
   parallel parts; nothing is visible in the bucket before a file is complete;
3. confirm each file's size at the destination, then write the manifest, last;
4. email the links (presigned in S3, valid `email_link_days`) when `email_to` is set;
5. record the run: users, files, bytes, seconds.
A run that fails takes back every file it began: no object, no open multipart upload.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, WithJsonSchema, model_validator

from engine import codecs, mail
from engine.audiences import Audiences
from engine.declared import Check, Kind, Problem
from engine.errors import ConfigError
from engine.storage.folders import Destination, folder
from engine.store import Store
from engine.writers import commit
from engine.writers.export import Format, Options, Result, export
from engine.writers.names import (
    DEFAULT_TEMPLATE,
    DEFAULT_TIMESTAMP_FORMAT,
    FileNames,
    check_directory,
    check_template,
    check_timestamp_format,
    format_timestamp,
)
from pipelines.runs import RunRecord, recorded
from pipelines.spec import FieldNames, InBucket, JobSpec, JobType, reworded

SEGMENTS = "segments"
MAX_LINK_DAYS = 7
"""A presigned S3 link lives at most 7 days."""
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 1 << 10, "mib": 1 << 20}
_UNITS["gib"] = 1 << 30
MIN_FILE_SIZE = 1 << 20
_A_SIZE = 'must be a size like 104857600, "100MB" or "1GiB"'


def _user_limit(value: int) -> int:
    if value < 1:
        raise ValueError("must be a whole number of users, 1 or more")
    return value


def _size(value: Any) -> Any:
    """Bytes, from a number or a text like "256MB" or "1GiB" (anything else is left to the
    type check)."""
    size = value
    if isinstance(value, str):
        found = _SIZE.match(value)
        if found is None:
            raise ValueError(_A_SIZE)
        size = int(float(found.group(1)) * _UNITS[(found.group(2) or "b").lower()])
    if isinstance(size, int) and not isinstance(size, bool) and size < MIN_FILE_SIZE:
        raise ValueError("must be at least 1 MiB (1048576 bytes)")
    return size


def _addresses(value: Any) -> Any:
    """An address or a list of them, as a list, each checked."""
    found = [value] if isinstance(value, str) else value
    if isinstance(found, list) and all(isinstance(a, str) for a in found):
        if not found:
            raise ValueError("must be an email address or a list of them")
        try:
            return [mail.check_address(a) for a in found]
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


def _link_days(value: int) -> int:
    if not 1 <= value <= MAX_LINK_DAYS:
        raise ValueError(f"must be 1 to {MAX_LINK_DAYS} days (S3's longest presigned link)")
    return value


Template = Annotated[
    str,
    Check(
        reworded(
            check_template,
            "must be a file name template of text and {TIMESTAMP}, {AUDIENCE}, {JOB}, {PART}, "
            "with no '..', leading '/', backslash or control character",
        )
    ),
]
TimestampFormat = Annotated[
    str,
    Check(
        reworded(
            check_timestamp_format,
            "must be made of the tokens YYYY, YY, MM, DD, HH, mm, ss or unix, with -, _, . or "
            "T between them",
        )
    ),
]
Size = Annotated[
    int,
    BeforeValidator(_size),
    Kind('a size (bytes, or "100MB")'),
    WithJsonSchema({"type": ["integer", "string"], "pattern": _SIZE.pattern}),
]
Addresses = Annotated[
    list[str],
    BeforeValidator(_addresses),
    Kind("an email address or a list of them"),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


class AudienceExportJob(InBucket, JobSpec):
    """An `audience-export` job file."""

    type: Literal["audience-export"]
    """`"audience-export"`."""
    audience: str
    """The audience to export (`lakeport audience list`)."""
    format: Format = "csv"
    """`csv`, `multi-csv`, `json` or `parquet`."""
    fields: Annotated[FieldNames, Kind("a list of profile field names")] | None = None
    """Profile fields, in the order given; all of them when absent."""
    user_limit: Annotated[int, Check(_user_limit)] | None = None
    """At most this many users: the first ones in the profiles table's order."""
    segments: bool = False
    """A list field `segments` with the names of every audience the user is in."""
    headers: bool = True
    """Each CSV file (each part) starts with the header line."""
    compress: codecs.Codec | None = None
    """`none` (default for text), `gzip` or `zstd`; for Parquet the codec inside the file
    (default `zstd`)."""
    filename: Template = DEFAULT_TEMPLATE
    """The name without its extension: text and `{TIMESTAMP}`, `{AUDIENCE}`, `{JOB}`, `{PART}`."""
    timestamp_format: TimestampFormat = DEFAULT_TIMESTAMP_FORMAT
    """How `{TIMESTAMP}` (the run's start, UTC) is written."""
    max_file_size: Size | None = None
    """Files are split into parts of at most this size (at least 1 MiB)."""
    email_to: Addresses | None = None
    """An address or a list: after the export, an email with a link to each file."""
    email_link_days: Annotated[int, Kind("a whole number of days"), Check(_link_days)] = 7
    """How long the links work: 1 to 7 days."""
    formula_guard: bool = True
    """CSV cells that a spreadsheet would run are prefixed with `'`."""

    @model_validator(mode="after")
    def _inside(self) -> AudienceExportJob:
        """The directory as the export writes it: a path every file system takes (this
        replaces InBucket's check, of a directory an import reads)."""
        try:
            check_directory(self.directory)
        except ConfigError as exc:
            raise Problem("directory", str(exc)) from None
        return self

    @model_validator(mode="after")
    def _writable(self) -> AudienceExportJob:
        if self.format == "parquet" and not self.headers:
            raise Problem("headers", "is for CSV: Parquet files carry their schema")
        try:  # the names as the first run would write them
            sample = format_timestamp(datetime.now(UTC), self.timestamp_format)
            self.names(sample).manifest()
        except ConfigError as exc:
            raise Problem("filename", str(exc)) from None
        return self

    @property
    def codec(self) -> codecs.Codec:
        """The codec: `compress`, else zstd inside Parquet files and none for text."""
        if self.compress is not None:
            return self.compress
        return "zstd" if self.format == "parquet" else "none"

    def names(self, timestamp: str) -> FileNames:
        """The names of a run's files, for the run's timestamp."""
        return FileNames(
            self.directory,
            self.filename,
            timestamp,
            self.audience,
            self.name,
            self.format,
            self.codec,
        )


def run(
    store: Store,
    job: AudienceExportJob,
    *,
    reset_diff: bool = False,
    progress: Callable[[int, int], None] | None = None,
    restart: bool = False,
    wait: float | None = 0.0,
) -> RunRecord:
    """One recorded run (see the module); a failed run is a record with the error. `progress`
    hears the bytes written; the import options (`reset_diff`, `restart`) mean nothing to an
    export."""

    def work(record: RunRecord) -> None:
        export_audience(store, job, record, progress)

    return recorded(store, job.name, work, kind="export", wait=wait)


def export_audience(
    store: Store,
    job: AudienceExportJob,
    record: RunRecord,
    progress: Callable[[int, int], None] | None = None,
) -> Result:
    """The run's steps, in order; the record is filled in as they finish. `progress` hears
    the bytes written so far."""
    auth = store.authorizations.get(job.auth) if job.auth else None
    destination = folder(job.root, auth)
    # Finish or take back what the last run of the job left (it was killed, or stopped).
    settled = settle_export(store, job.name)
    server = mail.load(store) if job.email_to else None  # before any file is written
    started = datetime.now(UTC)
    names = job.names(format_timestamp(started, job.timestamp_format))
    by = store.profiles_config().by if job.format == "multi-csv" else ()
    chosen = job.fields
    hidden = [] if chosen is None else [name for name in by if name not in chosen]
    if job.segments and SEGMENTS in store.profiles().collect_schema().names():
        raise ConfigError(
            f"job '{job.name}': the profiles have a field named '{SEGMENTS}', which the "
            "segments option would hide: leave segments off, or rename that field"
        )
    broken = Audiences(store).broken() if job.segments else {}
    rows = Audiences(store).rows(
        job.audience,
        columns=None if chosen is None else [*chosen, *hidden],
        limit=job.user_limit,
        segments=SEGMENTS if job.segments else None,
    )
    options = Options(
        format=job.format,
        compress=job.codec,
        headers=job.headers,
        formula_guard=job.formula_guard,
        max_file_size=job.max_file_size,
        by=tuple(by),
        hidden=tuple(hidden),
    )
    result = export(
        rows,
        destination,
        names,
        options,
        run_id=f"{job.name}-{record.run_id}",
        started=started,
        progress=progress,
        save=_journal(store, job),
    )
    record.users = result.users
    record.bytes = result.bytes
    record.files = [f.key for f in result.files] + [result.manifest]
    record.object = _url(job.root, result.manifest)
    notes = [settled] if settled else []
    if broken:
        notes.append(
            "segments leave out the broken audience(s) "
            + ", ".join(f"{name} ({reason})" for name, reason in broken.items())
        )
    if server is not None and job.email_to:
        _email(server, job, destination, result)
        notes.append(f"emailed links to {', '.join(job.email_to)}")
    record.note = "; ".join(notes) or None
    return result


JOURNAL = "export"
"""The journal entry of an export run under way: its ledger (engine.writers.commit)."""


def _journal(store: Store, job: AudienceExportJob) -> Callable[[dict[str, Any] | None], None]:
    def save(ledger: dict[str, Any] | None) -> None:
        if ledger is None:
            store.state.delete_journal(job.name, JOURNAL)
        else:
            entry = {**ledger, "bucket": job.root, "auth": job.auth}
            store.state.put_journal(job.name, JOURNAL, entry)

    return save


def settle_export(store: Store, job: str) -> str | None:
    """Finish or take back what an export run of `job` left (see engine.writers.commit);
    what was done, or None when nothing was left."""
    entry = store.state.get_journal(job, JOURNAL)
    if entry is None:
        return None
    auth = store.authorizations.get(entry["auth"]) if entry.get("auth") else None
    done = commit.settle(folder(entry["bucket"], auth), entry)
    store.state.delete_journal(job, JOURNAL)
    return done


def _url(bucket: str, key: str) -> str:
    return f"{bucket.rstrip('/')}/{key}"


def _email(
    server: mail.SmtpServer, job: AudienceExportJob, destination: Destination, result: Result
) -> None:
    """Email a link to each file and to the manifest."""
    assert job.email_to is not None
    seconds = job.email_link_days * 86400
    keys = [f.key for f in result.files] + [result.manifest]
    links = "\n".join(f"{key}\n  {destination.link(key, seconds)}\n" for key in keys)
    body = (
        f"lakeport exported the audience '{job.audience}' (job '{job.name}'): "
        f"{result.users:,} users in {len(result.files)} files, {result.bytes:,} bytes.\n\n"
        f"The links below work for {job.email_link_days} days. The manifest lists each file's "
        f"rows, bytes and SHA-256.\n\n{links}"
    )
    subject = f"lakeport: audience '{job.audience}' exported ({result.users:,} users)"
    try:
        mail.send(server, job.email_to, subject, body)
    except mail.MailError as exc:
        raise mail.MailError(
            f"the export is complete ({_url(job.root, result.manifest)}), but its email was "
            f"not sent: {exc}"
        ) from None


JOB = JobType("audience-export", AudienceExportJob, run)
