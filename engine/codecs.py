"""gzip and zstd, both ways: the one place that knows the codecs.

Writing, `compress(codec, data)` makes `data` one whole gzip member or zstd frame. Members and
frames written one after another make a file that every `gzip -d` / `zstd -d` reads whole, so an
export's chunks are compressed apart, in parallel threads (both libraries release the GIL).

Reading, `detect(name, head)` says how an object is compressed (its first bytes win over its
name), and a `Decompressor` gives its bytes back member after member, frame after frame, at
most a given number of bytes at a time: a bomb is stopped before it is in memory, and a cut
stream is an error, never a short read.
"""

from __future__ import annotations

import io
import zlib
from typing import IO, Any, Literal, get_args

from engine.errors import BadInput, ConfigError

Codec = Literal["none", "gzip", "zstd"]
NAMES: tuple[str, ...] = get_args(Codec)
SUFFIXES: dict[str, str] = dict(zip(NAMES, ("", ".gz", ".zst"), strict=True))
"""Each codec, and the suffix it adds to a file's name."""

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

GZIP_LEVEL = 6
ZSTD_LEVEL = 3

RAW_PIECE = 256 << 10
"""Compressed bytes read from the object at a time."""


def check(codec: str) -> str:
    """`codec` if lakeport has it; a ConfigError naming the choices if not."""
    if codec not in SUFFIXES:
        raise ConfigError(f"compress {codec!r}: one of {', '.join(NAMES)}")
    return codec


def compress(codec: str, data: bytes | memoryview) -> bytes | memoryview:
    """`data` compressed on its own: one whole gzip member or zstd frame (`none`: as it is)."""
    if codec == "gzip":
        packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: a gzip member
        packed: bytes = packer.compress(data) + packer.flush()
        return packed
    if codec == "zstd":
        import zstandard

        packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
        return packed
    check(codec)
    return data


def detect(name: str, head: bytes) -> str | None:
    """`gzip`, `zstd` or None (not compressed), from the object's name and its first bytes,
    which win: a name that promises a codec the bytes do not have is an error."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    lowered = name.lower()
    if lowered.endswith((".gz", ".gzip")):
        raise BadInput(name, None, "is named as gzip but is not a gzip stream (wrong magic bytes)")
    if lowered.endswith((".zst", ".zstd")):
        raise BadInput(name, None, "is named as zstd but is not a zstd stream (wrong magic bytes)")
    return None


def decompressed(name: str, data: bytes) -> bytes:
    """A small object's bytes, decompressed as its magic bytes say (for a look at them)."""
    kind = detect(name, data[:4])
    if kind is None:
        return data
    reader = Decompressor(kind, Counted(io.BytesIO(data), b""), name)
    return b"".join(iter(lambda: reader.read(RAW_PIECE), b""))


class Counted(io.RawIOBase):
    """An object's bytes as stored, `head` (already read, to sniff) first; counts what it
    hands on."""

    def __init__(self, handle: IO[bytes], head: bytes) -> None:
        super().__init__()
        self._handle = handle
        self._head = head
        self.bytes = 0
        """Bytes handed on so far."""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
        else:
            data = bytes(self._handle.read(size))
        self.bytes += len(data)
        return data


class Decompressor:
    """gzip or zstd, member after member / frame after frame, pulled from `raw` at most `size`
    bytes of output at a time; knows when a stream is cut.

    gzip is zlib's, told the most it may give each call. zstd is Arrow's streaming decoder
    (zstandard's decompressobj gives a call's whole output, however large, and its stream
    reader does not notice a cut stream)."""

    def __init__(self, kind: str, raw: Counted, name: str) -> None:
        self.kind = kind
        self.name = name
        self._raw = raw
        self._obj: Any = zlib.decompressobj(wbits=31)
        self._zstd: Any = None
        if kind == "zstd":
            import pyarrow as pa

            self._zstd = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "zstd")
        self._started = False
        self._pending = b""
        self._raw_eof = False

    @property
    def consumed(self) -> int:
        """Compressed bytes taken so far."""
        return self._raw.bytes - len(self._pending)

    def read(self, size: int) -> bytes:
        """Up to `size` decompressed bytes (fewer only at the end); empty at the end."""
        if self._zstd is not None:
            return self._read_zstd(size)
        out: list[bytes] = []
        got = 0
        while got < size:
            if not self._pending:
                if self._raw_eof:
                    break
                self._pending = self._raw.read(RAW_PIECE)
                if not self._pending:
                    self._raw_eof = True
                    break
            self._started = True
            try:
                piece: bytes = self._obj.decompress(self._pending, size - got)
            except zlib.error as exc:
                raise BadInput(self.name, None, f"is not a valid gzip stream ({exc})") from None
            self._pending = self._obj.unconsumed_tail
            if self._obj.eof:  # the member ends: another may follow
                # What follows the member is in unused_data (zlib leaves it in the tail too).
                self._pending = self._obj.unused_data
                self._obj = zlib.decompressobj(wbits=31)
                self._started = False
            out.append(piece)
            got += len(piece)
        if not got and self._raw_eof and self._started:
            raise self._truncated()
        return b"".join(out)

    def _read_zstd(self, size: int) -> bytes:
        import pyarrow as pa

        out: list[bytes] = []
        got = 0
        try:
            while got < size and (piece := self._zstd.read(size - got)):
                out.append(piece)
                got += len(piece)
        except (pa.ArrowInvalid, OSError) as exc:
            if "runcated" in str(exc):
                raise self._truncated() from None
            raise BadInput(self.name, None, f"is not a valid zstd stream ({exc})") from None
        return b"".join(out)

    def _truncated(self) -> BadInput:
        return BadInput(
            self.name, None, f"the {self.kind} stream is truncated (it ends mid-stream)"
        )
