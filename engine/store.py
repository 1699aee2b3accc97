"""The store: a folder of Delta tables (streams, profiles), diff snapshots and `state.db`.

Layout (created on first use)::

    <store>/streams/<name>/     one Delta table per stream
    <store>/profiles/           the profiles Delta table
    <store>/snapshots/<job>/    Parquet snapshots of the previous import, for diffs
    <store>/tmp/                spill space for DuckDB and Polars
    <store>/secrets/            0700 folder holding the 0600 secrets file
    <store>/state.db            SQLite: authorizations, jobs, runs, watermarks, appends

This is the only module that talks to deltalake.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine.auth import Authorization, check_name, from_stored
from engine.errors import ConfigError, StoreError
from engine.secrets import Secret, SecretsFile
from engine.state import StateDB, now

DEFAULT_STORE = "lakeport-data"
STORE_ENV = "LAKEPORT_STORE"

TS = "_ts"
INGESTED_AT = "_ingested_at"
SOURCE = "_source"
JOB = "_job"
LINE = "_line"
TIMESTAMP = pa.timestamp("us", tz="UTC")
ENGINE_FIELDS = (TS, INGESTED_AT, SOURCE, JOB)
"""Fields the store adds to every row. Readers may set `_ts` and `_line`; the rest are the
store's."""

logger = logging.getLogger(__name__)

_STREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_stream_name(name: str) -> str:
    if not _STREAM_NAME.match(name) or ".." in name:
        raise ConfigError(
            f"'{name}' is not a valid stream name: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def default_store_path() -> Path:
    """`$LAKEPORT_STORE`, or `./lakeport-data`."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


@dataclass(frozen=True)
class Source:
    """The object a batch of rows came from: its URL or key and its version (ETag)."""

    key: str
    etag: str | None = None


@dataclass(frozen=True)
class AppendResult:
    stream: str
    rows: int
    """Rows written by this call; 0 when the source had already been committed."""
    version: int
    """The stream's Delta table version after the append."""
    already_committed: bool
    """True when this (job, source, ETag) was committed before: nothing was written."""


@dataclass(frozen=True)
class StreamInfo:
    name: str
    rows: int
    fields: dict[str, str]
    version: int


def append_id(job: str, source: Source) -> str:
    """The Delta application-transaction id of one (job, source object, ETag)."""
    identity = "\0".join((job, source.key, source.etag or ""))
    return "lakeport-" + hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


class Store:
    """A lakeport store in a local folder."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        try:
            for folder in ("streams", "profiles", "snapshots", "tmp"):
                (self.path / folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store at {self.path}: {exc.strerror}; pass --store PATH "
                f"or set {STORE_ENV} to a folder you can write"
            ) from exc
        self.state = StateDB(self.path / "state.db")
        self.secrets = SecretsFile(self.path / "secrets")

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # Authorizations

    def add_authorization(self, auth: Authorization) -> Authorization:
        """Save an authorization; secrets typed in are moved to the secrets file first."""
        check_name(auth.name)
        if self.state.get_authorization(auth.name) is not None:
            raise ConfigError(
                f"an authorization named '{auth.name}' exists already: remove it first "
                f"(`lakeport auth remove {auth.name}`) or choose another name"
            )
        refs: dict[str, str] = {}
        stored: dict[str, Secret] = {}
        try:
            for field, secret in auth.secrets().items():
                kept = secret if secret.ref is not None else self.secrets.put(secret)
                refs[field] = kept.ref or ""
                stored[field] = kept
            self.state.put_authorization(auth.name, auth.kind, auth.settings(), refs)
        except BaseException:
            for ref in refs.values():
                self.secrets.delete(ref)
            raise
        return from_stored(auth.name, auth.kind, auth.settings(), stored)

    def authorization(self, name: str) -> Authorization:
        row = self.state.get_authorization(name)
        if row is None:
            known = ", ".join(a.name for a in self.state.list_authorizations()) or "none yet"
            raise ConfigError(
                f"no authorization named '{name}' in {self.path} (known: {known}): "
                "add it with `lakeport auth add`"
            )
        secrets = {field: self.secrets.load(ref) for field, ref in row.secret_refs.items()}
        return from_stored(row.name, row.kind, row.settings, secrets)

    def authorizations(self) -> list[Authorization]:
        return [self.authorization(row.name) for row in self.state.list_authorizations()]

    def remove_authorization(self, name: str) -> None:
        row = self.state.get_authorization(name)
        if row is None:
            raise ConfigError(f"no authorization named '{name}' in {self.path}")
        self.state.delete_authorization(name)
        for ref in row.secret_refs.values():
            self.secrets.delete(ref)

    # Streams

    def stream_path(self, name: str) -> Path:
        return self.path / "streams" / check_stream_name(name)

    def append(
        self,
        stream: str,
        batches: pa.RecordBatchReader | Iterable[pa.RecordBatch],
        *,
        source: Source,
        job: str,
    ) -> AppendResult:
        """Append record batches to a stream, at most once per (job, source key, ETag).

        The batches are streamed into the Delta table, never gathered in memory. The store adds
        `_ts` (when the batches have none: the ingestion time), `_ingested_at`, `_source` and
        `_job`. New fields grow the stream's schema. The commit carries a Delta application
        transaction for (job, source, ETag), so a second append of the same source, even after a
        crash between the commit and the state update, writes nothing.
        """
        from deltalake import CommitProperties, Transaction, write_deltalake
        from deltalake.exceptions import DeltaError

        uri = self.stream_path(stream)
        app_id = append_id(job, source)
        committed = self._transaction_version(uri, app_id)
        if committed is not None:
            logger.info("%s from job %s is already in stream %s", source.key, job, stream)
            version = self._version(uri)
            self._record(app_id, stream, job, source, rows=None, version=version)
            return AppendResult(stream, 0, version, already_committed=True)

        reader = _with_engine_fields(_reader(batches), source=source, job=job)
        counted = _CountingReader(reader)
        try:
            write_deltalake(
                str(uri),
                counted.reader(),
                mode="append",
                schema_mode="merge",
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(app_id, 1)],
                    custom_metadata={"lakeport.job": job, "lakeport.source": source.key},
                ),
            )
        except DeltaError as exc:
            raise StoreError(
                f"cannot append {source.key} to stream '{stream}': {_first_line(exc)}"
            ) from exc
        version = self._version(uri)
        logger.info(
            "appended %d rows of %s to stream %s (version %d)",
            counted.rows,
            source.key,
            stream,
            version,
        )
        self._record(app_id, stream, job, source, rows=counted.rows, version=version)
        return AppendResult(stream, counted.rows, version, already_committed=False)

    def _record(
        self, app_id: str, stream: str, job: str, source: Source, *, rows: int | None, version: int
    ) -> None:
        # After the Delta commit: if the process dies here, the table's transaction already
        # says the source is in, and the next append of it repairs this record.
        self.state.record_append(
            app_id,
            stream=stream,
            job=job,
            source=source.key,
            etag=source.etag,
            rows=rows,
            table_version=version,
        )

    def is_committed(self, stream: str, job: str, source: Source) -> bool:
        """Whether this (job, source, ETag) is already in the stream."""
        return (
            self._transaction_version(self.stream_path(stream), append_id(job, source)) is not None
        )

    def stream(self, name: str) -> pl.LazyFrame:
        """The stream as a Polars LazyFrame (filters and projections are pushed down)."""
        return pl.scan_delta(str(self._existing_stream(name)))

    def stream_dataset(self, name: str) -> Any:
        """The stream as a `pyarrow.dataset.Dataset`."""
        from deltalake import DeltaTable

        return DeltaTable(str(self._existing_stream(name))).to_pyarrow_dataset()

    def streams(self) -> list[StreamInfo]:
        """Every stream with its row count (from the Delta log), fields and version."""
        from deltalake import DeltaTable

        found = []
        for folder in sorted((self.path / "streams").iterdir()):
            if not DeltaTable.is_deltatable(str(folder)):
                continue
            table = DeltaTable(str(folder))
            schema = pa.schema(table.schema())
            found.append(
                StreamInfo(
                    name=folder.name,
                    rows=_row_count(table),
                    fields={f.name: str(f.type) for f in schema},
                    version=table.version(),
                )
            )
        return found

    def _existing_stream(self, name: str) -> Path:
        from deltalake import DeltaTable

        path = self.stream_path(name)
        if not DeltaTable.is_deltatable(str(path)):
            known = ", ".join(s.name for s in self.streams()) or "none yet"
            raise StoreError(f"no stream named '{name}' in {self.path} (streams: {known})")
        return path

    @staticmethod
    def _transaction_version(uri: Path, app_id: str) -> int | None:
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(str(uri)):
            return None
        version: int | None = DeltaTable(str(uri)).transaction_version(app_id)
        return version

    @staticmethod
    def _version(uri: Path) -> int:
        from deltalake import DeltaTable

        return DeltaTable(str(uri)).version()


def _row_count(table: Any) -> int:
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0
    return int(pc.sum(actions.column("num_records")).as_py() or 0)


def _reader(batches: pa.RecordBatchReader | Iterable[pa.RecordBatch]) -> pa.RecordBatchReader:
    if isinstance(batches, pa.RecordBatchReader):
        return batches
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise StoreError("nothing to append: the batches are empty and carry no schema")

    def chained() -> Iterator[pa.RecordBatch]:
        yield first
        yield from iterator

    return pa.RecordBatchReader.from_batches(first.schema, chained())


def _with_engine_fields(
    reader: pa.RecordBatchReader, *, source: Source, job: str
) -> pa.RecordBatchReader:
    schema = reader.schema
    taken = [name for name in (INGESTED_AT, SOURCE, JOB) if name in schema.names]
    if taken:
        raise StoreError(
            f"the rows from {source.key} already have the field(s) {', '.join(taken)}, which "
            "the store sets: rename them in the import"
        )
    has_ts = TS in schema.names
    if has_ts and schema.field(TS).type != TIMESTAMP:
        raise StoreError(f"field _ts must be {TIMESTAMP}, got {schema.field(TS).type}")
    for field in schema:
        if field.name not in (TS, LINE) and not _is_text(field.type):
            raise StoreError(
                f"field '{field.name}' from {source.key} is {field.type}: raw event fields are "
                "stored as text (string or list<string>), so stream schemas only grow; cast it "
                "to string in the reader"
            )
    if LINE in schema.names and not pa.types.is_integer(schema.field(LINE).type):
        raise StoreError(f"field _line must be an integer, got {schema.field(LINE).type}")
    out_fields = [f for f in schema if f.name != TS]
    out_schema = pa.schema(
        [
            pa.field(TS, TIMESTAMP),
            *out_fields,
            pa.field(INGESTED_AT, TIMESTAMP),
            pa.field(SOURCE, pa.string()),
            pa.field(JOB, pa.string()),
        ]
    )
    ingested: datetime = now()

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            n = batch.num_rows
            stamp = pa.repeat(pa.scalar(ingested, TIMESTAMP), n)
            yield pa.record_batch(
                [
                    batch.column(TS) if has_ts else stamp,
                    *(batch.column(f.name) for f in out_fields),
                    stamp,
                    pa.repeat(pa.scalar(source.key, pa.string()), n),
                    pa.repeat(pa.scalar(job, pa.string()), n),
                ],
                schema=out_schema,
            )

    return pa.RecordBatchReader.from_batches(out_schema, batches())


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _is_text(kind.value_type)
    return False


class _CountingReader:
    """Counts rows as the Delta writer pulls them."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self._source = reader
        self.rows = 0

    def reader(self) -> pa.RecordBatchReader:
        def counted() -> Iterator[pa.RecordBatch]:
            for batch in self._source:
                self.rows += batch.num_rows
                yield batch

        return pa.RecordBatchReader.from_batches(self._source.schema, counted())


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
