"""The end of an export's pipeline: encoded chunks in, finished files out.

A `FileSink` compresses the chunks it is given (none, gzip or zstd: each file one gzip member or
one zstd frame, which every `gzip -d` / `zstd -d` reads), hashes and counts what it writes,
starts a new numbered part when a file would pass `max_file_size`, and makes each file appear
under its name only once it is complete: a failed export leaves no file behind. Files go to a
`Destination`: a local folder here (written under a hidden name, then renamed), or an S3 prefix
(engine.storage.upload.S3Folder: one multipart upload a file).
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine.errors import ConfigError

CODECS = ("none", "gzip", "zstd")


class Target(Protocol):
    """One file being written: it exists under its name only after `complete`."""

    def write(self, data: bytes | memoryview) -> Any: ...

    def complete(self) -> None: ...

    def abort(self) -> None: ...


class Destination(Protocol):
    """Where an export's files go."""

    def open(self, key: str) -> Target: ...

    def remove(self, key: str) -> None:
        """Remove a completed file (an export that fails takes back what it wrote)."""
        ...

    def size(self, key: str) -> int | None:
        """The size of a completed file as the destination reports it (None: no such file)."""
        ...

    def link(self, key: str, seconds: int) -> str:
        """Where a reader gets the file: a link valid for `seconds` (presigned, in S3)."""
        ...


class LocalFolder:
    """A local folder as a destination."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def open(self, key: str) -> Target:
        return _LocalFile(self.folder / key)

    def remove(self, key: str) -> None:
        (self.folder / key).unlink(missing_ok=True)

    def size(self, key: str) -> int | None:
        path = self.folder / key
        return path.stat().st_size if path.is_file() else None

    def link(self, key: str, seconds: int) -> str:
        return (self.folder / key).resolve().as_uri()


class _LocalFile:
    def __init__(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self.target = target
        self.path = target.with_name(f".{target.name}.part-{os.getpid()}")
        self.handle = self.path.open("wb")

    def write(self, data: bytes | memoryview) -> int:
        return self.handle.write(data)

    def complete(self) -> None:
        self.handle.close()
        self.path.replace(self.target)

    def abort(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class WrittenFile:
    """One finished file, as the manifest lists it."""

    key: str
    rows: int
    bytes: int
    sha256: str


class _Compressor:
    def __init__(self, codec: str) -> None:
        if codec not in CODECS:
            raise ConfigError(f"compress {codec!r}: one of {', '.join(CODECS)}")
        self.codec = codec
        self._zlib: Any = None
        self._zstd: Any = None
        if codec == "gzip":
            self._zlib = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip member
        elif codec == "zstd":
            import zstandard

            self._zstd = zstandard.ZstdCompressor(level=3).compressobj()

    def feed(self, data: bytes | memoryview) -> bytes | memoryview:
        """The chunk compressed, flushed to the end of a block: the file's size is then known
        after every chunk (a few bytes a chunk; chunks are megabytes)."""
        if self._zlib is not None:
            out: bytes = self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
            return out
        if self._zstd is not None:
            import zstandard

            out = self._zstd.compress(data) + self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            return out
        return data

    def finish(self) -> bytes:
        if self._zlib is not None:
            out: bytes = self._zlib.flush()
            return out
        if self._zstd is not None:
            out = self._zstd.flush()
            return out
        return b""


@dataclass
class _Open:
    key: str
    target: Target
    compressor: _Compressor
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    raw: int = 0
    rows: int = 0


class FileSink:
    """Writes the chunks of one export table to `destination`, in parts of at most
    `max_file_size` bytes (compressed), named by `key_of(part)` (part None when not split).

    A part ends only between chunks: a chunk is written whole, with its rows, and a new part
    begins with `header` (the CSV header; empty for formats without one).
    """

    def __init__(
        self,
        destination: Destination,
        key_of: Callable[[int | None], str],
        *,
        compress: str = "none",
        max_file_size: int | None = None,
        header: bytes = b"",
    ) -> None:
        self.destination = destination
        self.key_of = key_of
        self.compress = compress
        self.max_file_size = max_file_size
        self.header = header
        self.files: list[WrittenFile] = []
        self._open: _Open | None = None
        self._part = 0
        _Compressor(compress)  # the codec is checked now, not at the first chunk

    def write(self, chunk: bytes | memoryview, rows: int) -> None:
        """Add an encoded chunk of `rows` rows."""
        current = self._open
        if (
            current is not None
            and self.max_file_size is not None
            and current.raw > len(self.header)
            and current.size + _estimate(chunk, current) > self.max_file_size
        ):
            self._close()
            current = None
        if current is None:
            current = self._start()
            self._put(current, self.header)
        self._put(current, chunk)
        current.rows += rows

    def finish(self) -> list[WrittenFile]:
        """Close the last file (an export of no rows still writes one, with its header)."""
        if self._open is None:
            self._put(self._start(), self.header)
        self._close()
        return self.files

    def abort(self) -> None:
        """Remove what is half-written, and the parts already finished."""
        if self._open is not None:
            self._open.target.abort()
            self._open = None
        for done in self.files:
            self.destination.remove(done.key)
        self.files = []

    def _start(self) -> _Open:
        self._part += 1
        split = self.max_file_size is not None
        key = self.key_of(self._part if split else None)
        self._open = _Open(key, self.destination.open(key), _Compressor(self.compress))
        return self._open

    def _put(self, current: _Open, data: bytes | memoryview) -> None:
        current.raw += len(data)
        packed = current.compressor.feed(data)
        current.target.write(packed)
        current.digest.update(packed)
        current.size += len(packed)

    def _close(self) -> None:
        current = self._open
        assert current is not None
        tail = current.compressor.finish()
        current.target.write(tail)
        current.digest.update(tail)
        current.size += len(tail)
        current.target.complete()
        self.files.append(
            WrittenFile(current.key, current.rows, current.size, current.digest.hexdigest())
        )
        self._open = None


def _estimate(chunk: bytes | memoryview, current: _Open) -> int:
    """How many bytes the chunk will add to the file, from the file's compression so far."""
    if current.raw == 0:
        return len(chunk)
    return max(1, len(chunk) * max(current.size, 1) // current.raw)


class _HashingFile:
    """A target as a binary file (for Parquet's writer), hashing and counting what is written."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        view = memoryview(data)  # Parquet's writer hands over buffers: no copy of them
        self.target.write(view)
        self.digest.update(view)
        self.size += len(view)
        return len(view)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def tell(self) -> int:
        return self.size


class ParquetSink:
    """Writes record batches as Parquet files (zstd inside by default: `compression` is
    Parquet's codec; the profile schema as it is), in
    parts of about `max_file_size` bytes: a part ends after the row group that passes it. The
    same guarantees as FileSink: a file appears under its name only when complete."""

    def __init__(
        self,
        destination: Destination,
        key_of: Callable[[int | None], str],
        schema: Any,
        *,
        max_file_size: int | None = None,
        row_group_rows: int = 128 * 1024,
        compression: str = "zstd",
    ) -> None:
        self.compression = compression
        self.destination = destination
        self.key_of = key_of
        self.schema = schema
        self.max_file_size = max_file_size
        self.row_group_rows = row_group_rows
        self.files: list[WrittenFile] = []
        self._part = 0
        self._current: tuple[str, _HashingFile, Any] | None = None
        self._rows = 0

    def write(self, batch: Any) -> None:
        if self._current is None:
            self._start()
        assert self._current is not None
        _, sink, writer = self._current
        writer.write_batch(batch, row_group_size=self.row_group_rows)
        self._rows += batch.num_rows
        if self.max_file_size is not None and sink.size >= self.max_file_size:
            self._close()

    def finish(self) -> list[WrittenFile]:
        if self._current is None and not self.files:
            self._start()  # no rows: one file with the schema
        if self._current is not None:
            self._close()
        return self.files

    def abort(self) -> None:
        if self._current is not None:
            self._current[1].target.abort()
            self._current = None
        for done in self.files:
            self.destination.remove(done.key)
        self.files = []

    def _start(self) -> None:
        import pyarrow.parquet as pq

        self._part += 1
        key = self.key_of(self._part if self.max_file_size is not None else None)
        sink = _HashingFile(self.destination.open(key))
        writer = pq.ParquetWriter(sink, self.schema, compression=self.compression)
        self._current = (key, sink, writer)
        self._rows = 0

    def _close(self) -> None:
        assert self._current is not None
        key, sink, writer = self._current
        writer.close()
        sink.target.complete()
        self.files.append(WrittenFile(key, self._rows, sink.size, sink.digest.hexdigest()))
        self._current = None
