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

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from engine import mail
from engine.audiences import Audiences
from engine.declared import Check, Kind
from engine.errors import ConfigError
from engine.storage.folders import folder
from engine.store import Store
from engine.writers.export import Format, Options, Result, export
from engine.writers.names import DEFAULT_TEMPLATE, FileNames, format_timestamp
from pipelines.exporting import ExportSpec, email, encryption, journal, settle_export, url
from pipelines.runs import RunRecord, recorded
from pipelines.spec import FieldNames, JobType

SEGMENTS = "segments"


def _user_limit(value: int) -> int:
    if value < 1:
        raise ValueError("must be a whole number of users, 1 or more")
    return value


class AudienceExportJob(ExportSpec):
    """An `audience-export` job file."""

    placeholders = ("TIMESTAMP", "AUDIENCE", "JOB", "PART")

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
    filename: str = DEFAULT_TEMPLATE
    """The name without its extension: text and `{TIMESTAMP}`, `{AUDIENCE}`, `{JOB}`, `{PART}`."""

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
        encrypt=encryption(auth),
    )
    result = export(
        rows,
        destination,
        names,
        options,
        run_id=f"{job.name}-{record.run_id}",
        started=started,
        progress=progress,
        save=journal(store, job),
    )
    record.users = result.rows
    record.bytes = result.bytes
    record.files = [f.key for f in result.files] + [result.manifest]
    record.object = url(job.root, result.manifest)
    notes = [settled] if settled else []
    if broken:
        notes.append(
            "segments leave out the broken audience(s) "
            + ", ".join(f"{name} ({reason})" for name, reason in broken.items())
        )
    if server is not None and job.email_to:
        email(
            server,
            job,
            destination,
            result,
            f"the audience '{job.audience}'",
            f"{result.rows:,} users",
            f"lakeport: audience '{job.audience}' exported ({result.rows:,} users)",
        )
        notes.append(f"emailed links to {', '.join(job.email_to)}")
    record.note = "; ".join(notes) or None
    return result


JOB = JobType("audience-export", AudienceExportJob, run)
