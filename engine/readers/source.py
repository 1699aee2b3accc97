"""The bytes of one object, made ready for a parser: decompressed, transcoded to UTF-8, checked.

`TextSource(handle, name=..., encoding=...)` wraps a binary handle (an S3 object, a local file) in a
file-like `TextSource` whose `read(n)` gives UTF-8 bytes. It

- detects gzip and zstd by extension and by magic bytes, and decompresses them (concatenated gzip
  members and zstd frames too), refusing a truncated stream;
- enforces the limits that protect the machine: decompressed bytes per object and the
  decompression ratio (bombs);
- transcodes latin-1, cp1252 and utf-16 to UTF-8 and strips a UTF-8 byte-order mark;
- refuses NUL bytes, and, when asked (`validate_utf8`), invalid UTF-8, naming the line;
- counts lines as they pass, so every error can say where it is.

Nothing is held beyond one chunk.
"""

from __future__ import annotations

import codecs
import io
import math
import re
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from engine.codecs import Counted, Decompressor, detect
from engine.errors import BadInput, ConfigError, LimitExceeded

if TYPE_CHECKING:
    from engine.auth import Authorization
    from engine.storage.locations import FileInfo

UTF8_BOM = codecs.BOM_UTF8
CHUNK = 4 << 20

ENCODINGS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "latin-1": "latin-1",
    "latin1": "latin-1",
    "iso-8859-1": "latin-1",
    "cp1252": "cp1252",
    "windows-1252": "cp1252",
    "utf-16": "utf-16",
    "utf-16le": "utf-16-le",
    "utf-16be": "utf-16-be",
}

# Formats that are not text, by their first bytes: a clear error beats a page of parse noise.
_BINARY_MAGIC = {
    b"PAR1": "a Parquet file",
    b"PK\x03\x04": "a ZIP archive (or an Excel .xlsx file)",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"BZh": "a bzip2 stream (not supported: use gzip or zstd)",
    b"\xfd7zXZ": "an xz stream (not supported: use gzip or zstd)",
    b"ORC": "an ORC file",
    b"Obj\x01": "an Avro file",
}


MAX_RECORD_BYTES = 1 << 30
"""The largest max_line_bytes and max_field_bytes."""
MAX_OBJECT_BYTES = (1 << 63) - 1


@dataclass(frozen=True)
class Limits:
    """Limits that protect the machine from one object. Each is configurable per job."""

    max_bytes: int = 256 << 30
    """Decompressed bytes per object."""
    max_ratio: float = 1000.0
    """Decompressed bytes per compressed byte, checked once `ratio_after` bytes have come out."""
    ratio_after: int = 64 << 20
    """Small objects may compress very well; the ratio is checked past this many bytes."""
    max_line_bytes: int = 2 << 20
    """The longest record (line) a reader accepts. It is also the CSV parser's block size, and
    pyarrow reads a few dozen blocks ahead: memory grows with it."""
    max_field_bytes: int = 1 << 20
    """The longest single field a reader accepts."""

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_ratio", "ratio_after", "max_line_bytes", "max_field_bytes"):
            value = getattr(self, name)
            # NaN compares false with everything, so `not value > 0` refuses it too.
            if isinstance(value, bool) or not value > 0 or not math.isfinite(value):
                raise ConfigError(f"limit {name} must be a positive, finite number, not {value!r}")
        for name in ("max_line_bytes", "max_field_bytes"):
            # A record is parsed in blocks of max_line_bytes, which the parser counts in 32 bits.
            if getattr(self, name) > MAX_RECORD_BYTES:
                raise ConfigError(
                    f"limit {name} must be at most {MAX_RECORD_BYTES:,} bytes (1 GiB), not "
                    f"{getattr(self, name):,}"
                )
        if self.max_bytes > MAX_OBJECT_BYTES:
            raise ConfigError(
                f"limit max_bytes must be at most {MAX_OBJECT_BYTES:,} bytes (8 EiB), not "
                f"{self.max_bytes:,}"
            )


def check_encoding(name: str) -> str:
    """The canonical codec name for a job's `encoding` setting."""
    codec = ENCODINGS.get(name.strip().lower())
    if codec is None:
        raise ValueError(f"unknown encoding '{name}': use one of utf-8, latin-1, cp1252, utf-16")
    return codec


def guess_encoding(sample: bytes, *, whole: bool = True) -> str:
    """The encoding text most likely is in: a byte-order mark's, else UTF-8 if it decodes,
    else cp1252 (bytes 0x80-0x9F, which latin-1 keeps for control characters) or latin-1.
    `whole`: the sample is the whole text (else it may end mid-character)."""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=whole)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    return "cp1252" if any(0x80 <= b <= 0x9F for b in sample) else "latin-1"


def not_encoded(name: str, line: int | None, codec: str, data: bytes, at: int) -> BadInput:
    """The error of bytes that are not valid `codec` at offset `at` of `data`, with the
    encoding the bytes look like (what `lakeport inspect` suggests)."""
    bad = data[at : at + 4].hex(" ")
    guess = guess_encoding(data, whole=False)
    hint = (
        f'they look like {guess}: set encoding = "{guess}" in the job'
        if guess not in ("utf-8", codec)
        else "set `encoding` in the job (latin-1, cp1252 or utf-16)"
    )
    return BadInput(name, line, f"is not valid {codec} (bytes {bad}): {hint}, or fix the file")


def open_object(
    url: str, auth: Authorization | None = None, *, expected: FileInfo | None = None
) -> IO[bytes]:
    """An object's bytes for a reader: streamed (engine.storage.open_input), and decrypted
    with `auth`'s private key when it is an OpenPGP message (engine.pgp.plain); the reader
    then decompresses them."""
    from engine import pgp, storage

    return pgp.plain(storage.open_input(url, auth, expected=expected), name=url, auth=auth)


def peek_decompressed(handle: IO[bytes], *, name: str, size: int) -> tuple[bytes, str | None]:
    """Up to `size` bytes of the object as stored before any transcoding, and its compression."""
    head = handle.read(CHUNK)
    compression = detect(name, head)
    if compression is None:
        return head[:size], None
    return Decompressor(compression, Counted(handle, head), name).read(size), compression


class TextSource(io.RawIOBase):
    """UTF-8 bytes of one object, read in chunks; see the module docstring.

    `read` hands out views of the chunk it holds, so no byte is copied on the way to the parser.
    Counting lines costs a scan of every byte, so it is done only where it is needed: when the
    bytes are decoded anyway (`validate_utf8`, other encodings) or when asked (`count_lines`, for
    a second pass that names the line of an error found by the first).
    """

    def __init__(
        self,
        handle: IO[bytes],
        *,
        name: str,
        encoding: str = "utf-8",
        limits: Limits | None = None,
        validate_utf8: bool = False,
        count_lines: bool = False,
        watch_byte: bytes | None = None,
        comment: bytes | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.limits = limits or Limits()
        self._handle = handle
        self._codec = check_encoding(encoding)
        self._validate = validate_utf8 or self._codec != "utf-8"
        self._count_lines = count_lines or self._validate
        self._decoder = codecs.getincrementaldecoder(self._codec)(errors="strict")
        self._view = memoryview(b"")
        self._position = 0
        self._eof = False
        self._first = True
        self.bytes_out = 0
        """UTF-8 bytes produced so far (handed out, or held for the next read)."""
        self._lines_in_chunks = 0
        self._watch_byte = watch_byte
        self._comment = comment
        self._comments = (
            None
            if comment is None
            else (
                re.compile(rb"(?:\A|(?<=[\r\n]))" + re.escape(comment) + rb"[^\r\n]*"),
                re.compile(rb"(?<=[\r\n])" + re.escape(comment) + rb"[^\r\n]*"),
            )
        )
        self._line_start = True
        self._in_comment = False
        self.saw_watched = False
        """Whether `watch_byte` (a CSV reader watches for quotes) occurs in any chunk so far."""
        head = bytes(handle.read(CHUNK))
        self.compression = detect(name, head)
        self._raw = Counted(handle, head)
        self._decompressor = (
            None if self.compression is None else Decompressor(self.compression, self._raw, name)
        )

    @property
    def bytes_in(self) -> int:
        """Bytes read from the object (compressed, when it is)."""
        return self._raw.bytes

    # io.RawIOBase

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> Any:
        """`size` bytes (fewer only at the end), however the object's bytes arrived; empty at
        the end. A view of the chunk held when it holds them all, so most reads copy nothing.

        A parser may take a short read for the end of a block: pyarrow's CSV reader then
        makes a block of it, and a record longer than two such blocks fails as too long.
        """
        if size is None or size < 0:
            parts = []
            while chunk := self.read(CHUNK):
                parts.append(bytes(chunk))
            return b"".join(parts)
        while self._position >= len(self._view):
            if self._eof:
                return b""
            self._hold(self._next_chunk())
        if len(self._view) - self._position >= size:
            data = self._view[self._position : self._position + size]
            self._position += len(data)
            return data
        parts = [bytes(self._view[self._position :])]
        got = len(parts[0])
        self._hold(b"")
        while got < size and not self._eof:
            chunk = self._next_chunk()
            take = chunk[: size - got]
            parts.append(take)
            got += len(take)
            if len(take) < len(chunk):
                self._hold(chunk)
                self._position = len(take)
        return b"".join(parts)

    def peek(self, size: int) -> bytes:
        """Up to `size` bytes that the next `read` will return, without consuming them."""
        held = bytes(self._view[self._position :])
        if len(held) < size and not self._eof:
            parts = [held]
            while sum(map(len, parts)) < size and not self._eof:
                parts.append(self._next_chunk())
            self._hold(b"".join(parts))
            held = bytes(self._view)
        return held[:size]

    def close(self) -> None:
        try:
            self._handle.close()
        finally:
            super().close()

    def _hold(self, chunk: bytes) -> None:
        self._view = memoryview(chunk)
        self._position = 0

    # The pipeline: raw → decompressed → UTF-8 → checked

    def _next_chunk(self) -> bytes:
        if self._decompressor is not None:
            data = self._decompressor.read(CHUNK)
        else:
            data = self._raw.read(CHUNK)
            while data and len(data) < CHUNK and (more := self._raw.read(CHUNK - len(data))):
                data += more  # a network read may be short: chunks are whole but for the last
        if not data:
            self._eof = True
            tail = self._decoder.decode(b"", final=True) if self._validate else ""
            return self._produce(tail.encode("utf-8")) if tail else b""
        self._check_limits(len(data))
        if self._first and data:
            self._first = False
            data = self._sniff(data)
        if self._codec == "utf-8" and not self._validate:
            return self._produce(data)
        try:
            text = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise self._decode_error(data, exc) from None
        return self._produce(text.encode("utf-8"))

    def _produce(self, data: bytes) -> bytes:
        """Check a chunk on its way out and keep the counts."""
        if self._comments is not None and data:
            data = self._uncomment(data)
        at = data.find(b"\x00")
        if at >= 0:
            raise NulByte(self.name, self._line_at(data, at), self.bytes_out + at, self._codec)
        if self._watch_byte is not None and not self.saw_watched:
            self.saw_watched = data.find(self._watch_byte) >= 0
        self.bytes_out += len(data)
        if self._count_lines:
            self._lines_in_chunks += data.count(b"\n")
        return data

    def _uncomment(self, data: bytes) -> bytes:
        """The chunk with the text of each comment line taken out, its line break kept (the
        line is then blank, and line numbers stay true). A comment line may go on in the
        next chunk."""
        assert self._comment is not None
        assert self._comments is not None
        if self._in_comment:
            ends = [at for at in (data.find(b"\n"), data.find(b"\r")) if at >= 0]
            if not ends:
                return b""
            data, self._in_comment = data[min(ends) :], False
            self._line_start = False  # at a line break: the lookbehind sees it
        last = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        self._in_comment = data.startswith(self._comment, last) and (last > 0 or self._line_start)
        pattern = self._comments[0] if self._line_start else self._comments[1]
        self._line_start = data.endswith((b"\n", b"\r"))
        return pattern.sub(b"", data)

    def _sniff(self, data: bytes) -> bytes:
        for magic, what in _BINARY_MAGIC.items():
            if data.startswith(magic):
                raise BadInput(self.name, None, f"is {what}, not text")
        if self._codec == "utf-8" and data.startswith(UTF8_BOM):
            return data[len(UTF8_BOM) :]
        return data

    def _check_limits(self, more: int) -> None:
        produced = self.bytes_out + more
        if produced > self.limits.max_bytes:
            raise LimitExceeded(
                f"{self.name} decompresses to more than {self.limits.max_bytes:,} bytes "
                "(limit max_bytes): raise the limit in the job if the object is meant to be "
                "that large"
            )
        if (
            self._decompressor is not None
            and produced > self.limits.ratio_after
            and produced > self.limits.max_ratio * max(self._decompressor.consumed, 1)
        ):
            raise LimitExceeded(
                f"{self.name} decompresses more than {self.limits.max_ratio:g} times its "
                "compressed size (limit max_ratio): it looks like a decompression bomb; raise "
                "the limit in the job if the data really compresses that well"
            )

    def _line_at(self, data: bytes, offset: int) -> int | None:
        if not self._count_lines:
            return None
        return self._lines_in_chunks + data.count(b"\n", 0, offset) + 1

    def _decode_error(self, data: bytes, exc: UnicodeDecodeError) -> BadInput:
        return not_encoded(self.name, self._line_at(data, exc.start), self._codec, data, exc.start)


class NulByte(BadInput):
    """A NUL byte: the object is binary, or not in the encoding the job says."""

    def __init__(self, name: str, line: int | None, offset: int, codec: str) -> None:
        self.offset = offset
        """Where, in the decoded bytes: a second pass that counts lines can name the line."""
        super().__init__(
            name,
            line,
            "contains a NUL byte: the file is binary, or its encoding is not "
            f"{codec} (set `encoding` in the job)",
        )
