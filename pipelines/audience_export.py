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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from engine import codecs, mail
from engine.errors import ConfigError
from engine.storage.folders import Destination, folder
from engine.store import Store
from engine.writers import commit
from engine.writers.export import FORMATS, Options, Result, export
from engine.writers.names import (
    DEFAULT_TEMPLATE,
    DEFAULT_TIMESTAMP_FORMAT,
    FileNames,
    check_directory,
    check_template,
    check_timestamp_format,
    format_timestamp,
)
from pipelines.errors import SpecError
from pipelines.importing import source_url
from pipelines.runs import RunRecord, recorded
from pipelines.spec import BOOL, STRING, Field, Loaded, Schedule, one_of, reworded

SEGMENTS = "segments"
MAX_LINK_DAYS = 7
"""A presigned S3 link lives at most 7 days."""
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 1 << 10, "mib": 1 << 20}
_UNITS["gib"] = 1 << 30
MIN_FILE_SIZE = 1 << 20


def _fields(value: list[Any]) -> list[str]:
    if not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a non-empty list of profile field names")
    if len(set(value)) != len(value):
        raise ValueError("names a field twice")
    return [str(v) for v in value]


def _user_limit(value: int) -> int:
    if isinstance(value, bool) or value < 1:
        raise ValueError("must be a whole number of users, 1 or more")
    return value


def _size(value: int | str) -> int:
    """Bytes, from a number or a text like "256MB" or "1GiB"."""
    if isinstance(value, bool):
        raise ValueError('must be a size like 104857600, "100MB" or "1GiB"')
    size = value
    if isinstance(value, str):
        found = _SIZE.match(value)
        if found is None:
            raise ValueError('must be a size like 104857600, "100MB" or "1GiB"')
        size = int(float(found.group(1)) * _UNITS[(found.group(2) or "b").lower()])
    assert isinstance(size, int)
    if size < MIN_FILE_SIZE:
        raise ValueError("must be at least 1 MiB (1048576 bytes)")
    return size


def _addresses(value: str | list[Any]) -> list[str]:
    found = [value] if isinstance(value, str) else value
    if not found or not all(isinstance(a, str) for a in found):
        raise ValueError("must be an email address or a list of them")
    try:
        return [mail.check_address(str(a)) for a in found]
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _link_days(value: int) -> int:
    if isinstance(value, bool) or not 1 <= value <= MAX_LINK_DAYS:
        raise ValueError(f"must be 1 to {MAX_LINK_DAYS} days (S3's longest presigned link)")
    return value


FIELDS: dict[str, Field] = {
    "auth": Field(*STRING),
    "audience": Field(*STRING, required=True),
    "bucket": Field(*STRING, required=True),
    "directory": Field(*STRING, default=""),
    "format": Field(*STRING, default="csv", check=one_of(*FORMATS)),
    "fields": Field("a list of profile field names", (list,), check=_fields),
    "user_limit": Field("a whole number", (int,), check=_user_limit),
    "segments": Field(*BOOL, default=False),
    "headers": Field(*BOOL, default=True),
    "compress": Field(*STRING, check=one_of(*codecs.NAMES)),
    "filename": Field(
        *STRING,
        default=DEFAULT_TEMPLATE,
        check=reworded(
            check_template,
            "must be a file name template of text and {TIMESTAMP}, {AUDIENCE}, {JOB}, {PART}, "
            "with no '..', leading '/', backslash or control character",
        ),
    ),
    "timestamp_format": Field(
        *STRING,
        default=DEFAULT_TIMESTAMP_FORMAT,
        check=reworded(
            check_timestamp_format,
            "must be made of the tokens YYYY, YY, MM, DD, HH, mm, ss or unix, with -, _, . or "
            "T between them",
        ),
    ),
    "max_file_size": Field('a size (bytes, or "100MB")', (int, str), check=_size),
    "email_to": Field("an email address or a list of them", (str, list), check=_addresses),
    "email_link_days": Field("a whole number of days", (int,), default=7, check=_link_days),
    "formula_guard": Field(*BOOL, default=True),
}


@dataclass(frozen=True, kw_only=True)
class AudienceExportJob:
    """A validated `audience-export` job file."""

    type: ClassVar[str] = "audience-export"
    name: str
    audience: str
    bucket: str
    """The URL of the bucket (or local folder) the directory is in."""
    directory: str
    auth: str | None
    format: str
    fields: list[str] | None
    user_limit: int | None
    segments: bool
    headers: bool
    compress: str
    filename: str
    timestamp_format: str
    max_file_size: int | None
    email_to: list[str] | None
    email_link_days: int
    formula_guard: bool
    keep_updated: bool
    schedule: Schedule

    @classmethod
    def from_loaded(cls, job: Loaded) -> AudienceExportJob:
        compress = job["compress"] or ("zstd" if job["format"] == "parquet" else "none")
        if job["format"] == "parquet" and not job["headers"]:
            raise SpecError(job.source, "headers", "is for CSV: Parquet files carry their schema")
        directory = job["directory"] or ""
        try:
            check_directory(directory)
        except ConfigError as exc:
            raise SpecError(job.source, "directory", str(exc)) from None
        try:  # the names as the first run would write them
            sample = format_timestamp(datetime.now(UTC), job["timestamp_format"])
            FileNames(
                directory,
                job["filename"],
                sample,
                job["audience"],
                job["name"],
                job["format"],
                compress,
            ).manifest()
        except ConfigError as exc:
            raise SpecError(job.source, "filename", str(exc)) from None
        return cls(
            name=job["name"],
            audience=job["audience"],
            bucket=source_url(job["bucket"], None, job["auth"], job.source),
            directory=directory,
            auth=job["auth"],
            format=job["format"],
            fields=job["fields"],
            user_limit=job["user_limit"],
            segments=job["segments"],
            headers=job["headers"],
            compress=compress,
            filename=job["filename"],
            timestamp_format=job["timestamp_format"],
            max_file_size=job["max_file_size"],
            email_to=job["email_to"],
            email_link_days=job["email_link_days"],
            formula_guard=job["formula_guard"],
            keep_updated=job["keep_updated"],
            schedule=job.schedule(),
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
    auth = store.authorization(job.auth) if job.auth else None
    destination = folder(job.bucket, auth)
    # Finish or take back what the last run of the job left (it was killed, or stopped).
    settled = settle_export(store, job.name)
    server = mail.load(store) if job.email_to else None  # before any file is written
    started = datetime.now(UTC)
    names = FileNames(
        job.directory,
        job.filename,
        format_timestamp(started, job.timestamp_format),
        job.audience,
        job.name,
        job.format,
        job.compress,
    )
    by = store.profiles_config().by if job.format == "multi-csv" else ()
    chosen = job.fields
    hidden = [] if chosen is None else [name for name in by if name not in chosen]
    if job.segments and SEGMENTS in store.profiles().collect_schema().names():
        raise ConfigError(
            f"job '{job.name}': the profiles have a field named '{SEGMENTS}', which the "
            "segments option would hide: leave segments off, or rename that field"
        )
    broken = store.broken_audiences() if job.segments else {}
    rows = store.audience_rows(
        job.audience,
        columns=None if chosen is None else [*chosen, *hidden],
        limit=job.user_limit,
        segments=SEGMENTS if job.segments else None,
    )
    options = Options(
        format=job.format,
        compress=job.compress,
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
    record.object = _url(job.bucket, result.manifest)
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
            entry = {**ledger, "bucket": job.bucket, "auth": job.auth}
            store.state.put_journal(job.name, JOURNAL, entry)

    return save


def settle_export(store: Store, job: str) -> str | None:
    """Finish or take back what an export run of `job` left (see engine.writers.commit);
    what was done, or None when nothing was left."""
    entry = store.state.get_journal(job, JOURNAL)
    if entry is None:
        return None
    auth = store.authorization(entry["auth"]) if entry.get("auth") else None
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
            f"the export is complete ({_url(job.bucket, result.manifest)}), but its email was "
            f"not sent: {exc}"
        ) from None
