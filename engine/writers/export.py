"""Writing an export: record batches in, finished files and their manifest out.

The pipeline, each step in its own thread with a bounded queue between them:

    read (the caller's batches) ──▶ encode (Polars: CSV / NDJSON, or Parquet as it is)
        ──▶ compress + hash (sink) ──▶ upload (parts in parallel, in the destination)

When every data file is complete, each is checked at the destination (a HEAD in S3: the size it
reports must be the size written), and the export is committed (engine.writers.commit): staged
files put in place, the manifest written last, then the previous export's files it does not
list removed. If anything fails before, every file begun or finished is taken back and the
previous export is as it was: an export is whole or absent.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

import pyarrow as pa

from engine.crash import crash_point
from engine.errors import StorageError
from engine.executor import ordered_map, prefetch
from engine.storage.folders import Destination
from engine.writers import multi
from engine.writers.commit import Save, Staging
from engine.writers.encode import CsvEncoder, Encoder, JsonEncoder
from engine.writers.manifest import manifest
from engine.writers.names import FileNames
from engine.writers.sink import FileSink, ParquetSink, Seal, WrittenFile

if TYPE_CHECKING:
    from engine.pgp import Recipients

Format = Literal["csv", "multi-csv", "json", "parquet"]
FORMATS: tuple[Format, ...] = get_args(Format)
logger = logging.getLogger("engine.writers")


@dataclass(frozen=True)
class Options:
    """How an export is written."""

    format: str = "csv"
    compress: str = "none"
    headers: bool = True
    formula_guard: bool = True
    max_file_size: int | None = None
    """Split into numbered parts of at most this many bytes (None: one file a table)."""
    by: tuple[str, ...] = ()
    """The identity fields, for multi-CSV's join_key."""
    hidden: tuple[str, ...] = ()
    """Fields read for the join_key only, not written."""
    encrypt: Recipients | None = None
    """Encrypt each file to these OpenPGP keys (after compressing it)."""


@dataclass
class Result:
    """What an export wrote."""

    files: list[WrittenFile]
    manifest: str
    rows: int
    """Rows of the main table (users, events), whatever the other tables hold."""
    started: datetime
    finished: datetime

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)


FileSets = Iterable[tuple[FileNames, pa.RecordBatchReader]]
"""An export's sets of files, each with its names and its rows (the names of an event
export's streams, each split into files of its own)."""


def export(
    rows: pa.RecordBatchReader | FileSets,
    destination: Destination,
    names: FileNames,
    options: Options,
    *,
    run_id: str,
    started: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    save: Save | None = None,
    about: Mapping[str, Any] | None = None,
) -> Result:
    """Write `rows` as the files of one export (see the module): under `names`, or as file
    sets, each under its own names and of the same columns, with one manifest (of `names`).
    `progress(bytes, 0)` is called as chunks are written (the total is not known ahead).
    `save` keeps the run's ledger (engine.writers.commit) where the next run finds it, before
    each step is taken. `about` says in the manifest what was exported (default: the audience
    of `names`)."""
    started = started or datetime.now(UTC)
    sets = [(names, rows)] if isinstance(rows, pa.RecordBatchReader) else rows
    with contextlib.ExitStack() as stack:
        seal = None
        if options.encrypt is not None:
            seal = options.encrypt.seal(stack.enter_context(options.encrypt.keyring()))
        return _export(
            sets, destination, names, options, seal, run_id, started, progress, save, about
        )


def _export(
    sets: FileSets,
    destination: Destination,
    names: FileNames,
    options: Options,
    seal: Seal | None,
    run_id: str,
    started: datetime,
    progress: Callable[[int, int], None] | None,
    save: Save | None,
    about: Mapping[str, Any] | None,
) -> Result:
    staging = Staging(destination, run_id, names.manifest(), save or (lambda _: None))
    writers: list[_Writer] = []
    files: list[WrittenFile] = []
    total = 0
    try:
        for set_names, batches in sets:
            if seal is not None:
                set_names = replace(set_names, encrypted=True)
            writer = _Writer(
                batches.schema, staging, set_names, options, _after(progress, files), seal
            )
            writers.append(writer)
            total += writer.write(batches)
            files += writer.finish()
        if not writers:
            raise ValueError("an export needs a set of files")
        _confirm(staging, files)
        finished = datetime.now(UTC)
        text = manifest(
            files,
            writers[0].schema,
            run_id=run_id,
            job=names.job,
            about={"audience": names.audience} if about is None else about,
            started=started,
            finished=finished,
            details=writers[0].details(),
        )
        staging.stage_manifest(text)
        crash_point("export-before-commit")
    except BaseException:
        for writer in writers:
            writer.abort()
        staging.abandon()
        raise
    staging.commit()
    return Result(files, names.manifest(), total, started, finished)


def _after(
    progress: Callable[[int, int], None] | None, done: list[WrittenFile]
) -> Callable[[int, int], None] | None:
    """A file set's progress, counted after the bytes of the sets before it."""
    if progress is None:
        return None
    base = sum(f.bytes for f in done)
    return lambda written, total: progress(base + written, total)


def _confirm(destination: Destination, files: Iterable[WrittenFile]) -> None:
    """Each file is at the destination with the size written (a HEAD of each S3 object)."""
    for written in files:
        found = destination.size(written.key)
        if found != written.bytes:
            raise StorageError(
                f"the export file {written.key} is "
                + ("missing" if found is None else f"{found:,} bytes")
                + f" at the destination after {written.bytes:,} bytes were written to it: "
                "something else changed it; run the export again"
            )


class _Writer:
    """The sinks of one export, by table (`None`: the only one), and how batches reach them."""

    def __init__(
        self,
        schema: pa.Schema,
        destination: Destination,
        names: FileNames,
        options: Options,
        progress: Callable[[int, int], None] | None = None,
        seal: Seal | None = None,
    ) -> None:
        self.progress = progress
        self.seal = seal
        self.options = options
        self.destination = destination
        self.names = names
        self.schema = pa.schema([f for f in schema if f.name not in options.hidden])
        self.sinks: dict[str | None, Any] = {}
        self.encoders: dict[str | None, Encoder] = {}
        self.tables: dict[str, Any] = {}
        self._row_bytes: float | None = None
        if options.format == "parquet":
            self.sinks[None] = ParquetSink(
                destination,
                names.data,
                self.schema,
                max_file_size=options.max_file_size,
                compression=options.compress,
                seal=seal,
            )
        elif options.format == "multi-csv":
            self.tables = multi.tables(schema, list(options.by), options.hidden)
            for table, columns in self.tables.items():
                self.encoders[table] = CsvEncoder(
                    columns, headers=options.headers, formula_guard=options.formula_guard
                )
                self.sinks[table] = self._file_sink(table, self.encoders[table].header)
        else:
            self.encoders[None] = (
                JsonEncoder()
                if options.format == "json"
                else CsvEncoder(
                    self.schema, headers=options.headers, formula_guard=options.formula_guard
                )
            )
            self.sinks[None] = self._file_sink(None, self.encoders[None].header)

    def _file_sink(self, table: str | None, header: bytes) -> FileSink:
        return FileSink(
            self.destination,
            lambda part: self.names.data(part, table),
            compress=self.options.compress,
            max_file_size=self.options.max_file_size,
            header=header,
            seal=self.seal,
            overhead=(lambda _: 0)
            if self.options.encrypt is None
            else self.options.encrypt.overhead,
        )

    def write(self, batches: Iterable[pa.RecordBatch]) -> int:
        """Write every batch; the users written."""
        users = 0
        if self.options.format == "parquet":
            sink: ParquetSink = self.sinks[None]
            hidden = list(self.options.hidden)

            def kept() -> Iterator[pa.RecordBatch]:
                for batch in batches:
                    yield batch.drop_columns(hidden) if hidden else batch
                    if self.progress is not None:
                        self.progress(sink.bytes_written, 0)

            rows: int = sink.write_all(prefetch(kept(), depth=2))
            if self.progress is not None:
                self.progress(sink.bytes_written, 0)
            return rows
        written = 0
        for pieces in self._encoded(prefetch(iter(batches), depth=2)):
            for table, packed, rows in pieces:
                self.sinks[table].write_packed(packed, rows)
                written += len(packed)
            users += pieces[0][2]
            if self.progress is not None:
                self.progress(written, 0)
        return users

    def _encoded(
        self, batches: Iterator[pa.RecordBatch]
    ) -> Iterator[list[tuple[str | None, Any, int]]]:
        """Each batch encoded, table by table (the first piece is the users')."""
        pieces = (piece for batch in batches for piece in self._pieces(batch))
        yield from ordered_map(self._encode, pieces, workers=2, depth=4)

    def _encode(self, rows: pa.RecordBatch) -> list[tuple[str | None, Any, int]]:
        """The rows encoded and compressed (in a worker thread), table by table."""
        return [
            (table, self.sinks[table].pack(self.encoders[table].encode(part)), part.num_rows)
            for table, part in self._tables(rows).items()
        ]

    def _tables(self, rows: pa.RecordBatch) -> dict[str | None, pa.RecordBatch]:
        """The rows of each table: multi-CSV's, or the rows as they are."""
        if self.options.format == "multi-csv":
            tables = multi.explode(rows, list(self.options.by), self.options.hidden)
            return {name: part for name, part in tables.items()}
        return {None: rows}

    def _pieces(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        """The batch in slices small enough for parts of `max_file_size`: a part ends only
        between chunks, so a chunk is kept to about a sixteenth of a part (learned from the
        bytes a row took so far)."""
        if batch.num_rows == 0:
            return
        limit = self.options.max_file_size
        if limit is None:
            yield batch
            return
        if self._row_bytes is None:
            probe = batch.slice(0, min(batch.num_rows, 1024))
            encoded = sum(len(self.encoders[t].encode(p)) for t, p in self._tables(probe).items())
            self._row_bytes = max(1.0, encoded / probe.num_rows)
        rows = max(1, int(limit / 16 / self._row_bytes))
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)

    def finish(self) -> list[WrittenFile]:
        files: list[WrittenFile] = []
        for sink in self.sinks.values():
            files += sink.finish()
        return files

    def abort(self) -> None:
        """Take back every file begun or finished, as far as the destination lets us: the error
        that made the export fail is the one to report, not a second one met on the way back
        (that one is logged)."""
        for sink in self.sinks.values():
            try:
                sink.abort()
            except Exception as exc:  # the original error is being raised
                logger.warning("could not take back all the files of a failed export: %s", exc)

    def details(self) -> dict[str, Any]:
        """What the manifest says of the format, beyond the rows' schema."""
        shown: dict[str, Any] = {
            "format": self.options.format,
            "compress": self.options.compress,
        }
        if self.options.format != "parquet" and self.options.compress in ("gzip", "zstd"):
            # Chunks are compressed apart, in parallel: a reader must read past the first.
            unit = "member" if self.options.compress == "gzip" else "frame"
            shown["compressed_as"] = f"one {self.options.compress} {unit} per chunk, concatenated"
        if self.tables:
            shown["tables"] = {table: columns.names for table, columns in self.tables.items()}
        if self.options.encrypt is not None:
            shown["encryption"] = {
                "type": "openpgp",
                "recipients": list(self.options.encrypt.fingerprints),
                "order": "compressed, then encrypted",
                "sha256_of": "each file as it is at the destination (encrypted)",
            }
        return shown
