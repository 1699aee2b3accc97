"""What the export jobs share: the fields of how files are written (format, compression,
names, parts, email, formula guard), the run journal that lets the next run finish or take
back a stopped export, and the email with links to the files.

An export job type is a model made of `ExportSpec` and its own fields (what it exports, its
`format` and `filename`), with a `names(timestamp)` method: the keys of one run's files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BeforeValidator, WithJsonSchema, model_validator

if TYPE_CHECKING:
    from engine.auth import Authorization
    from engine.pgp import Recipients

from engine import codecs, mail
from engine.declared import Check, Kind, Problem
from engine.errors import ConfigError
from engine.storage.folders import Destination, folder
from engine.store import Store
from engine.writers import commit
from engine.writers.export import Result
from engine.writers.names import (
    DEFAULT_TIMESTAMP_FORMAT,
    FileNames,
    check_directory,
    check_template,
    check_timestamp_format,
    format_timestamp,
)
from pipelines.spec import InBucket, JobSpec, reworded

MAX_LINK_DAYS = 7
"""A presigned S3 link lives at most 7 days."""
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 1 << 10, "mib": 1 << 20}
_UNITS["gib"] = 1 << 30
MIN_FILE_SIZE = 1 << 20
_A_SIZE = 'must be a size like 104857600, "100MB" or "1GiB"'


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


class ExportSpec(InBucket, JobSpec):
    """How an export job writes its files (its type adds what it exports, `format` and
    `filename`)."""

    placeholders: ClassVar[tuple[str, ...]]
    """What `filename` may hold."""

    format: str
    filename: str
    headers: bool = True
    """Each CSV file (each part) starts with the header line."""
    compress: codecs.Codec | None = None
    """`none` (default for text), `gzip` or `zstd`; for Parquet the codec inside the file
    (default `zstd`)."""
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
    def _inside(self) -> ExportSpec:
        """The directory as the export writes it: a path every file system takes (this
        replaces InBucket's check, of a directory an import reads)."""
        try:
            check_directory(self.directory)
        except ConfigError as exc:
            raise Problem("directory", str(exc)) from None
        return self

    @model_validator(mode="after")
    def _writable(self) -> ExportSpec:
        try:
            check_template(self.filename, self.placeholders)
        except ConfigError:
            listed = ", ".join(f"{{{p}}}" for p in self.placeholders)
            raise Problem(
                "filename",
                f"must be a file name template of text and {listed}, with no '..', leading "
                "'/', backslash or control character",
            ) from None
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
        raise NotImplementedError


JOURNAL = "export"
"""The journal entry of an export run under way: its ledger (engine.writers.commit), and for
an event export the watermarks the run moves to once it is decided."""
WATERMARKS = "watermarks"
RUN = "record"
"""The (id, manifest URL) of the run whose ledger it is: it is marked succeeded with the
watermarks' move."""


def journal(store: Store, job: ExportSpec, **kept: Any) -> Callable[[dict[str, Any] | None], None]:
    """How an export run keeps its ledger; what `kept` holds goes in with it. A ledger with
    `watermarks` moves them when the run ends decided, in the transaction that drops it."""

    decided = False

    def save(ledger: dict[str, Any] | None) -> None:
        nonlocal decided
        if ledger is None:  # the run is over: decided and finished, or taken back
            moved = kept.get(WATERMARKS) if decided else None
            store.state.end_journal(job.name, JOURNAL, moved, run=kept.get(RUN) if moved else None)
        else:
            decided = ledger["phase"] == commit.COMMITTING
            entry = {**ledger, "bucket": job.root, "auth": job.auth, **kept}
            store.state.put_journal(job.name, JOURNAL, entry)

    return save


def settle_export(store: Store, job: str) -> str | None:
    """Finish or take back what an export run of `job` left (see engine.writers.commit);
    what was done, or None when nothing was left. A run that was decided moves its
    watermarks with it: its events are exported."""
    entry = store.state.get_journal(job, JOURNAL)
    if entry is None:
        return None
    auth = store.authorizations.get(entry["auth"]) if entry.get("auth") else None
    done = commit.settle(folder(entry["bucket"], auth), entry)
    if entry.get("phase") == commit.COMMITTING:
        record = entry.get(RUN)
        store.state.end_journal(
            job, JOURNAL, entry.get(WATERMARKS), run=None if record is None else tuple(record)
        )
    else:
        store.state.end_journal(job, JOURNAL)
    return done


def encryption(auth: Authorization | None) -> Recipients | None:
    """The keys an export under `auth` is encrypted to (None: not encrypted)."""
    if auth is None or not auth.encrypts:
        return None
    from engine.pgp import export_keys

    return export_keys(auth)


def url(bucket: str, key: str) -> str:
    return f"{bucket.rstrip('/')}/{key}"


def email(
    server: mail.SmtpServer,
    job: ExportSpec,
    destination: Destination,
    result: Result,
    what: str,
    counted: str,
    subject: str,
) -> None:
    """Email a link to each file and to the manifest; `what` says what was exported and
    `counted` how many (`5 users`)."""
    assert job.email_to is not None
    seconds = job.email_link_days * 86400
    keys = [f.key for f in result.files] + [result.manifest]
    links = "\n".join(f"{key}\n  {destination.link(key, seconds)}\n" for key in keys)
    body = (
        f"lakeport exported {what} (job '{job.name}'): {counted} in {len(result.files)} "
        f"file{'' if len(result.files) == 1 else 's'}, {result.bytes:,} bytes.\n\n"
        f"The links below work for {job.email_link_days} days. The manifest lists each file's "
        f"rows, bytes and SHA-256.\n\n{links}"
    )
    try:
        mail.send(server, job.email_to, subject, body)
    except mail.MailError as exc:
        raise mail.MailError(
            f"the export is complete ({url(job.root, result.manifest)}), but its email was "
            f"not sent: {exc}"
        ) from None
