"""The end of an export's pipeline: encoded chunks in, finished files out.

A `FileSink` writes chunks compressed apart (none, gzip or zstd: each chunk a whole gzip member
or zstd frame, which `gzip -d` / `zstd -d` read as one file), hashes and counts what it writes,
starts a new numbered part when a file would pass `max_file_size`, and makes each file appear
under its name only once it is complete: a failed export leaves no file behind. Files go to a
`Destination` (engine.storage.folders: a local folder, memory, an S3 prefix).

With `seal` (engine.pgp's encryption), each file's bytes pass through it on their way to the
destination: the size and SHA-256 of a file are always those of what reaches the destination.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pyarrow as pa

from engine import codecs
from engine.errors import ConfigError
from engine.storage.folders import Destination, Target


@dataclass(frozen=True)
class WrittenFile:
    """One finished file, as the manifest lists it."""

    key: str
    rows: int
    bytes: int
    sha256: str


Seal = Callable[[Target, str], Target]
"""A target that writes what it is given, transformed, to the target behind (of the key)."""


class Counted:
    """A target that hashes and counts what it passes to the one behind."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.target.write(data)
        self.digest.update(data)
        self.size += len(data)

    def complete(self) -> None:
        self.target.complete()

    def abort(self) -> None:
        self.target.abort()

    def written(self, key: str, rows: int) -> WrittenFile:
        return WrittenFile(key, rows, self.size, self.digest.hexdigest())


def opened(destination: Destination, key: str, seal: Seal | None) -> tuple[Target, Counted]:
    """The target to write `key` through, and what counts the bytes that reach it."""
    counted = Counted(destination.open(key))
    return (counted if seal is None else seal(counted, key)), counted


@dataclass
class _Open:
    key: str
    target: Target
    counted: Counted
    size: int = 0
    """Bytes given (before the seal: what `max_file_size` is checked against)."""
    rows: int = 0


class FileSink:
    """Writes the chunks of one export table to `destination`, in parts of at most
    `max_file_size` bytes (compressed), named by `key_of(part)` (part None when not split).

    Chunks come compressed (`pack`, which any thread may call) or are compressed here. A part
    ends only between chunks: a chunk is written whole, with its rows, and a new part begins
    with `header` (the CSV header; empty for formats without one).
    """

    def __init__(
        self,
        destination: Destination,
        key_of: Callable[[int | None], str],
        *,
        compress: str = "none",
        max_file_size: int | None = None,
        header: bytes = b"",
        seal: Seal | None = None,
        overhead: Callable[[int], int] = lambda _: 0,
    ) -> None:
        """`overhead(limit)`: how many bytes the seal may add to a file of `limit` bytes
        (kept free below `max_file_size`)."""
        self.destination = destination
        self.key_of = key_of
        self.compress = codecs.check(compress)
        self.seal = seal
        self.max_file_size = (
            None if max_file_size is None else max_file_size - overhead(max_file_size)
        )
        self.header = codecs.compress(compress, header) if header else b""
        self.files: list[WrittenFile] = []
        self._open: _Open | None = None
        self._part = 0

    def pack(self, chunk: bytes | memoryview) -> bytes | memoryview:
        return codecs.compress(self.compress, chunk)

    def write(self, chunk: bytes | memoryview, rows: int) -> None:
        """Add an encoded chunk of `rows` rows."""
        self.write_packed(self.pack(chunk), rows)

    def write_packed(self, packed: bytes | memoryview, rows: int) -> None:
        """Add a chunk of `rows` rows, compressed by `pack`."""
        current = self._open
        if (
            current is not None
            and self.max_file_size is not None
            and current.size > len(self.header)
            and current.size + len(packed) > self.max_file_size
        ):
            self._close()
            current = None
        if current is None:
            current = self._start()
            self._put(current, self.header)
        self._put(current, packed)
        current.rows += rows

    def finish(self) -> list[WrittenFile]:
        """Close the last file (an export of no rows still writes one, with its header)."""
        if self._open is None:
            self._put(self._start(), self.header)
        self._close()
        return self.files

    def abort(self) -> None:
        """Remove what is half-written, and the parts already finished."""
        current, self._open = self._open, None
        _take_back(self.destination, None if current is None else current.target, self.files)
        self.files = []

    def _start(self) -> _Open:
        self._part += 1
        split = self.max_file_size is not None
        key = self.key_of(self._part if split else None)
        self._open = _Open(key, *opened(self.destination, key, self.seal))
        return self._open

    def _put(self, current: _Open, packed: bytes | memoryview) -> None:
        if not len(packed):
            return
        current.target.write(packed)
        current.size += len(packed)

    def _close(self) -> None:
        current = self._open
        assert current is not None
        current.target.complete()
        self.files.append(current.counted.written(current.key, current.rows))
        self._open = None


def _take_back(destination: Destination, current: Target | None, files: list[WrittenFile]) -> None:
    """Abort the file being written and remove the finished ones, trying every one of them;
    the first failure is raised at the end."""
    failure: Exception | None = None
    steps: list[Callable[[], None]] = [] if current is None else [current.abort]
    steps += [functools.partial(destination.remove, done.key) for done in files]
    for step in steps:
        try:
            step()
        except Exception as exc:  # the others are still tried
            failure = failure or exc
    if failure is not None:
        raise failure


class _AsFile(io.RawIOBase):
    """A target as a binary file (for a Parquet writer), counting what is written (`counted`
    counts and hashes what reaches the destination). An error of the target is kept in
    `error`: the writer that called may report it as its own.
    """

    def __init__(self, target: Target, counted: Counted) -> None:
        super().__init__()
        self.target = target
        self.counted = counted
        self.size = 0
        self.error: BaseException | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")  # the writer's buffer, not a copy of it
        try:
            self.target.write(view)
        except BaseException as exc:
            self.error = exc
            raise
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size


class ParquetSink:
    """Writes record batches as Parquet files with Polars' streaming writer (its columns
    encoded in parallel; zstd inside by default: `compression` is Parquet's codec), in parts of
    about `max_file_size` bytes: each part holds as many rows as the parts before it took for
    that size (at first, as the first batch alone took). The same guarantees as FileSink: a
    file appears under its name only when complete.

    Lists and maps are Parquet's own LIST and MAP, times TIMESTAMP in UTC: the profile schema
    as it is (Polars notes its text as large_string in the file's Arrow schema).
    """

    def __init__(
        self,
        destination: Destination,
        key_of: Callable[[int | None], str],
        schema: Any,
        *,
        max_file_size: int | None = None,
        row_group_rows: int = 128 * 1024,
        compression: str = "zstd",
        seal: Seal | None = None,
    ) -> None:
        self.destination = destination
        self.seal = seal
        self.key_of = key_of
        self.schema = schema
        self.max_file_size = max_file_size
        self.row_group_rows = row_group_rows
        self.compression = compression
        self.files: list[WrittenFile] = []
        self._part = 0
        self._open: _AsFile | None = None

    def write_all(self, batches: Iterable[Any]) -> int:
        """Write every batch; the rows written."""
        source = iter(batches)
        total = 0
        first = next(source, None)
        while first is not None or not self.files:
            budget = None if first is None else self._rows_per_part(first)
            key, sink = self._start()
            rows, first = self._write_part(sink, first, source, budget)
            self._close(key, sink, rows)
            total += rows
        return total

    def _rows_per_part(self, batch: Any) -> int | None:
        """How many rows make a part of about `max_file_size`: from the parts written so far,
        or at first from the batch written alone (which compresses less: parts come out
        smaller than the limit rather than larger)."""
        import polars as pl

        if self.max_file_size is None:
            return None
        if self.files:
            rows = sum(f.rows for f in self.files)
            size = sum(f.bytes for f in self.files)
        else:
            probe = io.BytesIO()  # one batch's Parquet: small
            pl.DataFrame(batch).write_parquet(probe, compression=self._codec())
            rows, size = batch.num_rows, probe.getbuffer().nbytes
        return max(1, int(self.max_file_size * rows / max(size, 1)))

    def _write_part(
        self, sink: _AsFile, first: Any, source: Iterator[Any], budget: int | None
    ) -> tuple[int, Any]:
        """One part: batches from `first` on, `budget` rows at most; the rows written and
        what is left for the next part (None at the end)."""
        import polars as pl
        from polars.io.plugins import register_io_source

        state: dict[str, Any] = {"rows": 0, "next": None, "error": None}

        def frames(*_: Any) -> Iterator[pl.DataFrame]:
            batch = first
            try:
                while batch is not None:
                    if budget is not None and state["rows"] + batch.num_rows > budget:
                        room = budget - state["rows"]
                        batch, state["next"] = batch.slice(0, room), batch.slice(room)
                    state["rows"] += batch.num_rows
                    if batch.num_rows:
                        yield pl.DataFrame(batch)
                    if state["next"] is not None:
                        return
                    batch = next(source, None)
            except BaseException as exc:  # reported as itself below, not as Polars' error
                state["error"] = exc
                raise

        empty = pl.DataFrame(pa.RecordBatch.from_pylist([], self.schema))
        lazy = register_io_source(frames, schema=empty.schema)
        try:
            lazy.sink_parquet(
                cast(Any, sink), compression=self._codec(), row_group_size=self.row_group_rows
            )
        except Exception as exc:
            found = state["error"] or sink.error
            if found is not None:
                raise found from None
            raise ConfigError(f"cannot write Parquet: {exc}") from exc
        return state["rows"], state["next"]

    @property
    def bytes_written(self) -> int:
        """The bytes of the finished parts and of the one being written."""
        current = 0 if self._open is None else self._open.counted.size
        return current + sum(f.bytes for f in self.files)

    def _codec(self) -> Any:
        return {"none": "uncompressed"}.get(self.compression, self.compression)

    def finish(self) -> list[WrittenFile]:
        return self.files

    def abort(self) -> None:
        current, self._open = self._open, None
        _take_back(self.destination, None if current is None else current.target, self.files)
        self.files = []

    def _start(self) -> tuple[str, _AsFile]:
        self._part += 1
        key = self.key_of(self._part if self.max_file_size is not None else None)
        self._open = _AsFile(*opened(self.destination, key, self.seal))
        return key, self._open

    def _close(self, key: str, sink: _AsFile, rows: int) -> None:
        sink.target.complete()
        self._open = None
        self.files.append(sink.counted.written(key, rows))
