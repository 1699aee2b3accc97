"""The store: a folder of Delta tables (streams, profiles), diff snapshots and `state.db`.

Layout (created on first use)::

    <store>/streams/<name>/     one Delta table per stream
    <store>/profiles/           the profiles Delta table
    <store>/snapshots/<job>/    Parquet snapshots of the previous import, for diffs
    <store>/tmp/                spill space for DuckDB and Polars
    <store>/secrets/            0700 folder holding the 0600 secrets file
    <store>/state.db            SQLite: authorizations, jobs, runs, watermarks, appends

The tables (`streams/`, `profiles/`, `snapshots/`) may live in S3 instead (`tables=`); state.db,
secrets and tmp/ always stay in the local folder.

This is the only module that talks to deltalake.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa

from engine import storage
from engine.auth import Authorization, Authorizations
from engine.duck import TableScan
from engine.errors import ConfigError, LakeportError, StoreError
from engine.lease import Lease
from engine.secrets import SecretsFile
from engine.state import StateDB
from engine.store_rows import (
    CountingReader,
    as_reader,
    first_line,
    row_count,
    with_engine_fields,
)
from engine.store_rows import Source as Source

DEFAULT_STORE = "lakeport-data"
STORE_ENV = "LAKEPORT_STORE"

if TYPE_CHECKING:
    import polars as pl

    from engine.profiles.config import ProfilesConfig

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
class AppendResult:
    stream: str
    rows: int
    """Rows written by this call; 0 when the source had already been committed."""
    version: int
    """The stream's Delta table version after the append."""
    already_committed: bool
    """True when this (job, source, ETag) was committed before: nothing was written."""


@dataclass(frozen=True)
class Changes:
    """The events a stream took between two of its versions: its files added after `after`,
    up to `version` (pinned when they were asked for: later commits are not in them)."""

    stream: str
    after: int | None
    """The version the events follow (None: from the first)."""
    version: int
    scan: TableScan
    """The added files (their schema is the stream's at `version`)."""
    files: int


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
    """A lakeport store: `state.db` and secrets in a local folder, tables there or in S3.

    Args:
        path: The local folder (default `$LAKEPORT_STORE` or `./lakeport-data`).
        tables: Where the Delta tables live, when not in `path`: `s3://BUCKET/PREFIX`. Given
            once, it is remembered in `state.db`; a store cannot move its tables later.
        tables_auth: The name of the authorization (in this store) for `tables`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        tables: str | None = None,
        tables_auth: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        try:
            (self.path / "tmp").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store at {self.path}: {exc.strerror}; pass --store PATH "
                f"or set {STORE_ENV} to a folder you can write"
            ) from exc
        self.state = StateDB(self.path / "state.db")
        """The catalog: jobs, runs, leases, watermarks, audiences, settings."""
        self.secrets = SecretsFile(self.path / "secrets")
        """The secrets file: authorizations' secret keys, the SMTP password."""
        self.authorizations = Authorizations(self.state, self.secrets)
        """How lakeport gets into buckets, with their secrets."""
        self.tables, self._tables_auth = self._tables_location(tables, tables_auth)
        if self._tables_auth is not None:
            self.authorizations.in_use[self._tables_auth] = (
                f"this store's tables ({self.tables.url})"
            )
        if self.tables.scheme == "file":
            for folder in ("streams", "profiles", "snapshots"):
                (Path(self.tables.key) / folder).mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, tables={self.tables.url!r})"

    def _tables_location(
        self, tables: str | None, tables_auth: str | None
    ) -> tuple[storage.Location, str | None]:
        stored = self.state.get_setting("tables")
        stored_auth = self.state.get_setting("tables_auth")
        if tables is None:
            if tables_auth is not None:
                raise ConfigError("tables_auth is for tables kept in S3: give tables too")
            return storage.parse_url(stored or str(self.path.resolve())), stored_auth
        location = storage.parse_url(tables)
        if stored is not None and (stored != location.url or stored_auth != tables_auth):
            raise ConfigError(
                f"the store {self.path} keeps its tables at {stored}"
                + (f" (authorization '{stored_auth}')" if stored_auth else "")
                + f", not {location.url}: open it without tables=, or use another store folder"
            )
        if stored is None:
            if location.scheme == "s3":
                if tables_auth is None:
                    raise ConfigError(f"tables in {location.url} need tables_auth=NAME")
                self.authorizations.get(tables_auth)  # it must exist now, not at the first append
                self._drop_empty_local_layout(location)
            storage.table_options(location, self._auth_or_none(tables_auth))
            self.state.set_setting("tables", location.url)
            if tables_auth is not None:
                self.state.set_setting("tables_auth", tables_auth)
        return location, tables_auth

    def _drop_empty_local_layout(self, moving_to: storage.Location) -> None:
        for name in ("streams", "profiles", "snapshots"):
            folder = self.path / name
            if folder.is_dir() and any(folder.iterdir()):
                raise ConfigError(
                    f"the store {self.path} has tables in {folder} already: it cannot put its "
                    f"tables in {moving_to.url}; use a new store folder"
                )
            if folder.is_dir():
                folder.rmdir()

    def _auth_or_none(self, name: str | None) -> Authorization | None:
        return None if name is None else self.authorizations.get(name)

    # Streams

    def stream_url(self, name: str) -> str:
        """Where the stream's Delta table is: a local path or an s3:// URL."""
        return self.tables.child(f"streams/{check_stream_name(name)}").url

    def rejected_url(self, stream: str) -> str:
        """Where the stream's rejected rows are kept (a Delta table beside the streams)."""
        return self.tables.child(f"rejected/{check_stream_name(stream)}").url

    def snapshots_path(self, job: str) -> Path:
        """The local folder of a job's diff snapshots."""
        return self.path / "snapshots" / check_stream_name(job)

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
        return self._append(self.stream_url(stream), stream, batches, source=source, job=job)

    def append_rejected(
        self,
        stream: str,
        rows: pa.RecordBatchReader | Iterable[pa.RecordBatch],
        *,
        source: Source,
        job: str,
    ) -> AppendResult:
        """Append a source's rejected rows (line, reason, text) to the stream's rejected table."""
        rejected = Source(source.key, (source.etag or "") + ":rejected")
        return self._append(self.rejected_url(stream), stream, rows, source=rejected, job=job)

    def rejected(self, stream: str) -> pl.LazyFrame:
        """The rows rejected from a stream's imports, with their line and reason."""
        uri = self.rejected_url(stream)
        if self._table(uri) is None:
            raise StoreError(f"stream '{stream}' has no rejected rows")
        return self._scan(uri)

    # Profiles

    def profiles_url(self) -> str:
        """Where the profiles Delta table is."""
        return self.tables.child("profiles").url

    def profiles_scan(self) -> TableScan | None:
        """The profiles for DuckDB to read, or None before the first build."""
        table = self._table(self.profiles_url())
        return None if table is None else self._scan_of(table)

    def replace_profiles(self, rows: pa.RecordBatchReader, config: str) -> int:
        """Write a build's profiles in place of the last ones (one Delta commit; readers see
        the old or the new) and keep its config (JSON) with them; the rows written."""
        from deltalake import CommitProperties, write_deltalake

        counted = CountingReader(rows)
        with counted.failing_first(), self._delta_errors("cannot write the profiles"):
            write_deltalake(
                self.profiles_url(),
                counted.reader(),
                mode="overwrite",
                schema_mode="overwrite",
                storage_options=self._options(),
                commit_properties=CommitProperties(custom_metadata={"lakeport.profiles": config}),
            )
        self.state.set_setting("profiles", config)
        return counted.rows

    def profiles_config(self) -> ProfilesConfig:
        """The rules the profiles were made by (for a load: its identity fields only)."""
        from engine.profiles.config import ProfilesConfig

        text = self.state.get_setting("profiles")
        if text is None:
            raise self._no_profiles()
        return ProfilesConfig.from_json(text)

    def profiles(self) -> pl.LazyFrame:
        """The profiles as a Polars LazyFrame."""
        uri = self.profiles_url()
        if self._table(uri) is None:
            raise self._no_profiles()
        return self._scan(uri)

    def existing_profiles(self) -> TableScan:
        """The profiles for DuckDB to read; a StoreError before the first build."""
        found = self.profiles_scan()
        if found is None:
            raise self._no_profiles()
        return found

    def _no_profiles(self) -> StoreError:
        return StoreError(
            f"there are no profiles in {self.tables.url} yet: build them with "
            "`lakeport profiles build PROFILES.toml` or `lakeport profiles load FILE --by ...`"
        )

    def _append(
        self,
        uri: str,
        stream: str,
        batches: pa.RecordBatchReader | Iterable[pa.RecordBatch],
        *,
        source: Source,
        job: str,
    ) -> AppendResult:
        app_id = append_id(job, source)
        # The Delta writer retries a commit that meets another one without looking at their
        # application transactions: two appends of one source at once would both land. The
        # lease makes the second wait for the first, then find the source committed.
        with Lease(self.state, f"{_WRITER}{uri}|{app_id}", wait=None):
            return self._append_alone(uri, app_id, stream, batches, source=source, job=job)

    def _append_alone(
        self,
        uri: str,
        app_id: str,
        stream: str,
        batches: pa.RecordBatchReader | Iterable[pa.RecordBatch],
        *,
        source: Source,
        job: str,
    ) -> AppendResult:
        from deltalake import CommitProperties, Transaction, write_deltalake

        table = self._table(uri)
        if table is not None and table.transaction_version(app_id) is not None:
            return self._already_committed(table, app_id, stream, job, source)

        reader = with_engine_fields(as_reader(batches), source=source, job=job)
        _check_case(reader.schema, None if table is None else pa.schema(table.schema()), source)
        counted = CountingReader(reader)
        try:
            with (
                counted.failing_first(),
                self._delta_errors(f"cannot append {source.key} to stream '{stream}'"),
            ):
                write_deltalake(
                    uri,
                    counted.reader(),
                    mode="append",
                    schema_mode="merge",
                    storage_options=self._options(),
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(app_id, 1)],
                        custom_metadata={"lakeport.job": job, "lakeport.source": source.key},
                    ),
                )
                version = self._open(uri).version()
        except BaseException as exc:
            if exc is counted.error or not isinstance(exc, StoreError):
                raise
            # Another process committing the same source at the same time wins the Delta
            # commit; this one then finds the source committed, which is what it wanted.
            table = self._table(uri)
            if table is None or table.transaction_version(app_id) is None:
                raise
            return self._already_committed(table, app_id, stream, job, source)
        logger.info(
            "appended %d rows of %s to stream %s (version %d)",
            counted.rows,
            source.key,
            stream,
            version,
        )
        self._record(app_id, stream, job, source, rows=counted.rows, version=version)
        return AppendResult(stream, counted.rows, version, already_committed=False)

    def _already_committed(
        self, table: Any, app_id: str, stream: str, job: str, source: Source
    ) -> AppendResult:
        logger.info("%s from job %s is already in stream %s", source.key, job, stream)
        version: int = table.version()
        self._record(app_id, stream, job, source, rows=None, version=version)
        return AppendResult(stream, 0, version, already_committed=True)

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

    def remove_unreferenced(self, stream: str) -> list[str]:
        """Delete the stream's data files (and its rejected rows') that no Delta commit
        references: what an append that died before its commit wrote. Files of appends under
        way now are kept. The URLs removed."""
        removed = []
        for uri in (self.stream_url(stream), self.rejected_url(stream)):
            removed += self._remove_unreferenced(uri)
        if removed:
            logger.info("removed %d unreferenced files of stream %s", len(removed), stream)
        return removed

    def _remove_unreferenced(self, uri: str) -> list[str]:
        auth = self._auth()
        # An append under way has written files that no commit references yet: keep every
        # file (and upload) that is not older than the oldest live writer of the table.
        writers = [h for h in self.state.leases(f"{_WRITER}{uri}|") if h.alive()]
        cutoff = min((datetime.fromisoformat(h.started_at) for h in writers), default=None)
        if cutoff is not None:
            cutoff -= _CLOCK_MARGIN

        def old(info: storage.FileInfo) -> bool:
            return cutoff is None or (
                info.last_modified is not None and info.last_modified < cutoff
            )

        files = [
            f
            for f in storage.walk_files(uri, auth)
            if "/_delta_log/" not in f.url and not f.name.startswith(("_", ".")) and old(f)
        ]
        # In S3, a writer that died mid-file leaves a multipart upload that was never
        # completed: its parts are stored (and billed) until aborted.
        uploads = [u for u in storage.open_uploads(uri, auth) if old(u)]
        storage.abort_uploads(uploads, auth)
        if not files:
            return [f"{u.url} (unfinished upload)" for u in uploads]
        table = self._table(uri)
        referenced: set[str] = set()
        if table is not None:
            with self._delta_errors(f"cannot read the table at {uri}"):
                # Tombstones (files an OPTIMIZE took out) are still referenced by the log.
                removed = table.vacuum(0, True, False, full=False)
                kept = {*table.file_uris(), *(f"{uri.rstrip('/')}/{path}" for path in removed)}
            referenced = {_plain(u) for u in kept}
        unreferenced = [f.url for f in files if _plain(f.url) not in referenced]
        storage.remove_files(unreferenced, auth)
        return unreferenced + [f"{u.url} (unfinished upload)" for u in uploads]

    def is_committed(self, stream: str, job: str, source: Source) -> bool:
        """Whether this (job, source, ETag) is already in the stream."""
        table = self._table(self.stream_url(stream))
        return table is not None and table.transaction_version(append_id(job, source)) is not None

    def stream(self, name: str) -> pl.LazyFrame:
        """The stream as a Polars LazyFrame (filters and projections are pushed down)."""
        return self._scan(self._existing_stream(name))

    def stream_dataset(self, name: str) -> Any:
        """The stream as a `pyarrow.dataset.Dataset`."""
        return self._open(self._existing_stream(name)).to_pyarrow_dataset()

    def stream_scan(self, name: str) -> TableScan:
        """The stream for DuckDB to read."""
        return self._scan_of(self._open(self._existing_stream(name)))

    def _scan_of(self, table: Any, only: list[str] | None = None) -> TableScan:
        """What DuckDB reads: the table, or `only` its files of these paths (in this order).
        Local tables written by lakeport have no deletion vectors or column mapping: their
        files are the table. Tables in S3 are read through Arrow (DuckDB has no S3 here)."""
        import pyarrow.dataset as pds

        schema = pa.schema(table.schema())
        dataset = table.to_pyarrow_dataset()
        if only is None:
            files = tuple(table.file_uris()) if self.tables.scheme == "file" else ()
            return TableScan(schema, dataset, files)
        fragments = {f.path.rsplit("/", 1)[-1]: f for f in dataset.get_fragments()}
        chosen = [fragments[_unquoted_name(path)] for path in only]
        dataset = pds.FileSystemDataset(chosen, dataset.schema, dataset.format, dataset.filesystem)
        files = ()
        if self.tables.scheme == "file":
            root = _plain(table.table_uri).rstrip("/")
            files = tuple(f"{root}/{unquote(path)}" for path in only)
        return TableScan(schema, dataset, files)

    def stream_changes(self, name: str, after: int | None) -> Changes | None:
        """The events committed to the stream after version `after` (every event when None),
        up to its version now; None when the stream's folder holds no table (a first append
        died). Streams only grow, so these are the files of the version now that were not in
        `after`; a stream rewritten in between (an OPTIMIZE or DELETE by another tool) is
        refused, since its old events would come again."""
        uri = self.stream_url(name)
        table = self._table(uri)
        if table is None:
            return None
        version = table.version()
        added = _added_files(table)
        if after is not None:
            if after > version:
                raise StoreError(
                    f"stream '{name}' is at version {version}, behind the version {after} an "
                    "earlier export reached (was it removed and made again?): run the export "
                    "with --restart to export every event of it again"
                )
            with self._delta_errors(
                f"cannot read version {after} of stream '{name}', which an earlier export "
                "reached (its log may have been cleaned up by another tool): run the export "
                "with --restart to export every event of it again; the error was"
            ):
                earlier = self._open(uri)
                earlier.load_as_version(after)
            before = set(_added_files(earlier))
            if not before <= set(added):
                raise StoreError(
                    f"stream '{name}' was rewritten after version {after} (its files were "
                    "compacted or deleted by another tool): lakeport cannot tell its new "
                    "events from the old; run the export with --restart to export every "
                    "event of it again"
                )
            added = [path for path in added if path not in before]
        return Changes(name, after, version, self._scan_of(table, added), len(added))

    def stream_names(self) -> list[str]:
        """The names of the streams' folders, a table in each (or, after a first append that
        died, only files that no commit references)."""
        folder = self.tables.child("streams/").url
        with self._delta_errors(f"cannot list the streams in {folder}"):
            listing = storage.list_directory(folder, self._auth())
        return sorted(d.rstrip("/") for d in listing.directories)

    def streams(self) -> list[StreamInfo]:
        """Every stream with its row count (from the Delta log), fields and version."""
        found = []
        for name in self.stream_names():
            table = self._table(self.stream_url(name))
            if table is None:
                continue
            schema = pa.schema(table.schema())
            found.append(
                StreamInfo(
                    name=name,
                    rows=row_count(table),
                    fields={f.name: str(f.type) for f in schema},
                    version=table.version(),
                )
            )
        return found

    def _existing_stream(self, name: str) -> str:
        uri = self.stream_url(name)
        if self._table(uri) is None:
            known = ", ".join(s.name for s in self.streams()) or "none yet"
            raise StoreError(f"no stream named '{name}' in {self.tables.url} (streams: {known})")
        return uri

    # Delta tables

    def _auth(self) -> Authorization | None:
        return self._auth_or_none(self._tables_auth)

    def _options(self) -> dict[str, str]:
        return storage.table_options(self.tables, self._auth())

    def _table(self, uri: str) -> Any:
        """The Delta table at `uri`, or None when there is none yet."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        # Not DeltaTable.is_deltatable: it holds the GIL for the whole S3 request, which stalls
        # every other thread of the process (an upload, a progress bar, an in-process server).
        with self._delta_errors(f"cannot read the table at {uri}"):
            try:
                return DeltaTable(uri, storage_options=self._options())
            except TableNotFoundError:
                return None

    def _scan(self, uri: str) -> pl.LazyFrame:
        import polars as pl

        options = self._options()
        return pl.scan_delta(
            uri, storage_options=options or None, credential_provider=None if options else "auto"
        )

    def _open(self, uri: str) -> Any:
        from deltalake import DeltaTable

        return DeltaTable(uri, storage_options=self._options())

    @contextmanager
    def _delta_errors(self, what: str) -> Iterator[None]:
        from deltalake.exceptions import DeltaError

        try:
            yield
        except LakeportError:
            raise
        except (DeltaError, OSError) as exc:
            raise StoreError(f"{what}: {first_line(exc)}") from exc


_WRITER = "append:"
"""The lease name of an append in progress: `append:TABLE_URI|APP_ID`."""
_CLOCK_MARGIN = timedelta(minutes=2)
"""How far an object store's clock may be from this machine's."""


def _added_files(table: Any) -> list[str]:
    """The paths of a table version's files, in the order they were added."""
    actions = pa.table(table.get_add_actions(flatten=False))
    rows = zip(
        actions.column("modification_time").to_pylist(),
        actions.column("path").to_pylist(),
        strict=True,
    )
    return [str(path) for _, path in sorted(rows)]


def _unquoted_name(path: str) -> str:
    return unquote(path).rsplit("/", 1)[-1]


def _plain(url: str) -> str:
    """A file's URL or path in one spelling, to compare the log's with a listing's."""
    return unquote(url.removeprefix("file://")).removeprefix("s3://")


def _check_case(schema: pa.Schema, stream: pa.Schema | None, source: Source) -> None:
    """Refuse field names that a stream cannot hold apart: Delta's field names are
    case-insensitive, so `id` beside `Id` (in the rows, or in the stream already) would end in
    the writer's own error."""
    seen = {n.casefold(): (n, "the stream's field") for n in (stream.names if stream else [])}
    for name in schema.names:
        other, where = seen.setdefault(name.casefold(), (name, "the field"))
        if other != name:
            raise StoreError(
                f"the field '{name}' of {source.key} differs only in case from {where} "
                f"'{other}' (a stream's field names are case-insensitive): rename it in the "
                "import (a json-import's `mapping`), or give it the stream's spelling"
            )
