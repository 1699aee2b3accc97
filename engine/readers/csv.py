"""CSV objects as Arrow record batches of text fields, each row with its line number.

pyarrow's streaming CSV reader does the parsing (single-threaded, which is also the fastest way
to stream it). Around it, this module is strict where pyarrow and Python's `csv` are lenient:

- the header is checked: an empty file, blank or duplicate names, a header that reads as one
  field while another delimiter is obvious (the error suggests it), JSON named `.csv`;
- a row with too few or too many fields is a bad row, never padded or cut; bad rows fail the
  read, or go to `on_bad_row` (the quarantine);
- an unterminated quote, invalid UTF-8, a NUL byte, a field or record over its limit: errors;
- a row whose fields are all empty (a blank line) is skipped.

Every row carries `_line`, the 1-based line of the file where the row starts (quoted line breaks
counted), and every error names the object and the line.
"""

from __future__ import annotations

import codecs
import csv as pycsv
import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.errors import BadInput, ConfigError, LimitExceeded
from engine.readers.rows import LINE, BadRow, check_names
from engine.readers.source import MAX_RECORD_BYTES, Limits, NulByte, TextSource, not_encoded

_BREAK = r"\r\n|\r|\n"
_BREAK_RE = re.compile(_BREAK)
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
"""The delimiters a file is sniffed for, and what each is called."""


@dataclass(frozen=True)
class CsvDialect:
    delimiter: str = ","
    quote_char: str | None = '"'
    """None: quotes are ordinary characters."""
    encoding: str = "utf-8"
    header: bool = True
    """False: the first line is data; the fields are `columns`, or column_1, column_2..."""
    columns: tuple[str, ...] | None = None
    """The field names of a file without a header line."""
    comment: str | None = None
    """Lines that start with this character are skipped (inside a quoted value that spans
    lines too)."""

    def source(self, handle: IO[bytes], **options: Any) -> TextSource:
        """The object's text, as this dialect reads it."""
        comment = self.comment.encode() if self.comment else None
        return TextSource(handle, encoding=self.encoding, comment=comment, **options)


def _breaks(text: str) -> int:
    """Line breaks in a text: CR LF, CR or LF each count once."""
    return len(_BREAK_RE.findall(text))


class CsvReader:
    """One CSV object, read as record batches of its (selected) fields plus `_line`.

    Args:
        open_handle: Opens the object's bytes; called again only to diagnose invalid UTF-8.
        name: The object's URL or key, for messages.
        dialect: Delimiter, quote character and encoding.
        fields: The fields to keep, in this order (all when None).
        limits: Sizes that protect the machine.
        on_bad_row: Receives each bad row; when None, the first bad row is an error.
    """

    def __init__(
        self,
        open_handle: Callable[[], IO[bytes]],
        *,
        name: str,
        dialect: CsvDialect | None = None,
        fields: Sequence[str] | None = None,
        limits: Limits | None = None,
        on_bad_row: Callable[[BadRow], None] | None = None,
    ) -> None:
        self.name = name
        self.dialect = dialect or CsvDialect()
        self.limits = limits or Limits()
        self._open_handle = open_handle
        self._on_bad_row = on_bad_row
        check_dialect(self.dialect)
        quote = self.dialect.quote_char
        self._source = self.dialect.source(
            open_handle(),
            name=name,
            limits=self.limits,
            watch_byte=quote.encode() if quote else None,
        )
        self._header_line = 1
        self._no_rows = False
        self.header, header_breaks = self._read_header()
        self.fields = self._select(fields)
        self.schema = pa.schema(
            [*(pa.field(f, pa.string()) for f in self.fields), (LINE, pa.int64())]
        )
        self.rows_read = 0
        """Rows read that were not blank and not bad."""
        self.rows_blank = 0
        """Rows whose fields were all empty (blank lines): skipped."""
        self.rows_bad = 0
        """Rows with the wrong number of fields."""
        self._next_line = self._header_line + 1 + header_breaks
        # pyarrow numbers records from 1: the header, when there is one.
        self._next_record = 2 if self.dialect.header else 1
        self._invalid: dict[int, tuple[str, str]] = {}
        self._last_value: str | None = None
        self._last_line = 0

    @property
    def bytes_read(self) -> int:
        """Bytes read from the object so far (compressed, when it is)."""
        return self._source.bytes_in

    def close(self) -> None:
        """Let go of the object without reading its rows (`batches` does so when done)."""
        self._source.close()

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows, in file order, in record batches."""
        if self._no_rows:
            self._source.close()
            return
        stream = self._open_arrow()
        try:
            while True:
                try:
                    batch = stream.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as exc:
                    raise self._parse_error(exc) from exc
                except NulByte as exc:
                    raise self._with_line(exc) from None
                out = self._process(batch)
                if out.num_rows:
                    yield out
            self._flush_invalid(all_remaining=True)
            self._check_unterminated_quote()
        finally:
            self._source.close()

    # The header

    def _read_header(self) -> tuple[list[str], int]:
        """The header's field names and the line breaks inside it (-1 without a header line:
        the rows start on its line). Blank lines before it are skipped (and counted); its
        bytes must be valid UTF-8 (after `encoding`)."""
        size = 64 << 10
        while True:
            try:
                head = self._source.peek(size)
            except NulByte as exc:
                raise self._with_line(exc) from None
            whole = len(head) < size
            blanks = len(head) - len(head.lstrip(b"\r\n"))
            if blanks == len(head) and whole:
                what = "holds only blank lines" if head else "is empty"
                needs = "a header line" if self.dialect.header else "a line of data"
                raise BadInput(self.name, None, f"{what}: a CSV file needs {needs}")
            text, bad_at = _decode_prefix(head[blanks:], whole)
            end = _record_end(text, self.dialect.quote_char)
            if end is None and bad_at is not None:
                line = 1 + _breaks(head[:blanks].decode())
                raise not_encoded(self.name, line, "utf-8", head[blanks:], bad_at)
            if end is not None or whole:
                break
            if size >= self.limits.max_line_bytes:
                raise LimitExceeded(
                    f"{self.name}: the header line is longer than {self.limits.max_line_bytes:,} "
                    "bytes (limit max_line_bytes), or a quote in it is never closed"
                )
            size *= 4
        if blanks:
            self._source.read(blanks)  # the parser starts at the header
        self._header_line = 1 + _breaks(head[:blanks].decode())
        record = text[:end] if end is not None else text
        stripped = record.lstrip()
        if stripped.startswith(("{", "[")):
            raise BadInput(
                self.name,
                self._header_line,
                "looks like JSON, not CSV: import it with a json-import job",
            )
        self._check_delimiter(text, whole)
        names = _parse_header(record, self.dialect, self.name)
        self._check_header_sizes(names)
        if not self.dialect.header:  # the first record is data: it only counts the fields
            names = list(self.dialect.columns or (f"column_{i}" for i in range(1, len(names) + 1)))
            self._check_header(names)
            return names, -1  # the rows start on the first line
        self._check_header(names)
        # A header alone, with or without its line break, is a file of no rows.
        self._no_rows = whole and (end is None or not text[end:].strip("\r\n"))
        return names, _breaks(record.rstrip("\r\n"))

    def _check_header_sizes(self, names: list[str]) -> None:
        limit = self.limits.max_field_bytes
        for position, name in enumerate(names, start=1):
            if len(name.encode()) > limit:
                what = "header field" if self.dialect.header else "field"
                raise LimitExceeded(
                    f"{self.name}, line {self._header_line}: {what} {position} is longer than "
                    f"{limit:,} bytes (limit max_field_bytes): raise the limit in the job if "
                    "such fields are expected"
                )

    def _check_delimiter(self, sample: str, whole: bool) -> None:
        """Refuse a delimiter that does not split the first records when another does."""
        line = self._header_line
        quote = self.dialect.quote_char
        if not _splits(field_counts(sample, self.dialect.delimiter, quote, whole=whole)):
            # One field a row, or rows that disagree: another delimiter may split them all.
            guessed = guess_delimiter(sample, quote, whole=whole)
            found = field_counts(sample, guessed, quote, whole=whole)
            if guessed != self.dialect.delimiter and _splits(found):
                shown = "t" if guessed == "\t" else guessed
                raise BadInput(
                    self.name,
                    line,
                    f"the rows do not split into fields with delimiter "
                    f"{self.dialect.delimiter!r}, but the file looks "
                    f'{DELIMITERS[guessed]}-delimited: set delimiter = "{shown}" in the job',
                )

    def _check_header(self, names: list[str]) -> None:
        line = self._header_line
        for position, name in enumerate(names, start=1):
            if not name.strip():
                raise BadInput(
                    self.name, line, f"header field {position} is blank: every column needs a name"
                )
        seen: dict[str, int] = {}
        for position, name in enumerate(names, start=1):
            if name in seen:
                raise BadInput(
                    self.name,
                    line,
                    f"the header names '{name}' twice (fields {seen[name]} and {position}): "
                    "rename one of them",
                )
            seen[name] = position

    def _select(self, fields: Sequence[str] | None) -> list[str]:
        if fields is None:
            chosen = list(self.header)
        else:
            unknown = [f for f in fields if f not in self.header]
            if unknown:
                raise ConfigError(
                    f"field(s) {', '.join(repr(f) for f in unknown)} are not in {self.name}: "
                    f"the fields are {', '.join(self.header)}"
                )
            chosen = list(dict.fromkeys(fields))
        fix = "rename the field in the header, or leave it out with `fields` in the job"
        check_names(self.name, self._header_line, chosen, fix)
        return chosen

    # Parsing

    def _open_arrow(self) -> Any:
        quote = self.dialect.quote_char
        try:
            return pacsv.open_csv(
                self._source,
                read_options=pacsv.ReadOptions(
                    use_threads=False,
                    block_size=self.limits.max_line_bytes,
                    autogenerate_column_names=False,
                    column_names=None if self.dialect.header else self.header,
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=self.dialect.delimiter,
                    quote_char=quote if quote else False,
                    double_quote=True,
                    escape_char=False,
                    newlines_in_values=True,
                    ignore_empty_lines=False,
                    invalid_row_handler=self._invalid_row,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(self.header, pa.string()),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                    check_utf8=True,
                ),
            )
        except pa.ArrowInvalid as exc:
            raise self._parse_error(exc) from exc

    def _invalid_row(self, row: Any) -> str:
        if row.number is None:  # pyarrow knows it when single-threaded; say so if not
            raise BadInput(self.name, None, f"has a bad row: {row.text[:200]!r}")
        self._invalid[row.number] = (
            f"expected {row.expected_columns} fields, found {row.actual_columns}",
            row.text,
        )
        return "skip"

    def _process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        spans = self._spans(batch)
        last = self._next_record + n + len(self._invalid)
        if self._invalid and min(self._invalid) < last:
            lines = self._lines_around_bad_rows(spans)
        else:
            steps = pc.add(spans, 1)
            ends = pc.cumulative_sum(steps)
            lines = pc.add(pc.subtract(ends, steps), self._next_line)
            self._next_line += int(ends[-1].as_py()) if n else 0
            self._next_record += n
        if n:
            self._last_line = int(lines[-1].as_py())
            self._last_value = batch.column(batch.num_columns - 1)[-1].as_py()
        selected = [batch.column(name) for name in self.fields]
        self._check_field_sizes(selected, lines)
        out = pa.record_batch([*selected, lines], schema=self.schema)
        blank = _all_empty(batch)
        if blank is not None:
            out = out.filter(pc.invert(blank))
            self.rows_blank += n - out.num_rows
        self.rows_read += out.num_rows
        return out

    def _spans(self, batch: pa.RecordBatch) -> pa.Array:
        """Line breaks inside each row's values (0 for almost every row)."""
        total: pa.Array | None = None
        # Only a quoted value can hold a line break: with no quote in the file so far, none does.
        quoted = self._source.saw_watched
        for column in batch.columns if quoted else ():
            if not _may_hold_line_breaks(column):
                continue
            counts = pc.count_substring_regex(column, _BREAK)
            total = counts if total is None else pc.add(total, counts)
        if total is None:
            return pa.repeat(pa.scalar(0, pa.int64()), batch.num_rows)
        return pc.cast(total, pa.int64())

    def _lines_around_bad_rows(self, spans: pa.Array) -> pa.Array:
        lines = []
        for span in spans.to_pylist():
            self._flush_invalid()
            lines.append(self._next_line)
            self._next_line += 1 + span
            self._next_record += 1
        self._flush_invalid()
        return pa.array(lines, pa.int64())

    def _flush_invalid(self, *, all_remaining: bool = False) -> None:
        """Account for the bad rows that come next in the file (or all that are left)."""
        while self._invalid:
            number = min(self._invalid)
            if number != self._next_record and not all_remaining:
                return
            reason, text = self._invalid.pop(number)
            self._next_record = number + 1
            quote = self.dialect.quote_char
            if quote and text.count(quote) % 2 == 1:
                # The parser read from an opening quote to the end of the file: one record.
                raise self._unterminated(self._next_line)
            bad = BadRow(self._next_line, reason, text)
            self._next_line += 1 + _breaks(text)
            self.rows_bad += 1
            if self._on_bad_row is None:
                raise bad.error(self.name)
            self._on_bad_row(bad)

    def _check_field_sizes(self, columns: list[pa.Array], lines: pa.Array) -> None:
        limit = self.limits.max_field_bytes
        for name, column in zip(self.fields, columns, strict=True):
            if len(column) == 0:
                continue
            sizes = pc.binary_length(column)
            if (pc.max(sizes).as_py() or 0) > limit:
                at = pc.index(pc.greater(sizes, limit), True).as_py()
                raise LimitExceeded(
                    f"{self.name}, line {lines[at].as_py()}: field '{name}' is longer than "
                    f"{limit:,} bytes (limit max_field_bytes): raise the limit in the job if "
                    "such fields are expected"
                )

    def _check_unterminated_quote(self) -> None:
        # pyarrow reads an unclosed quote to the end of the file as one value: when the last
        # value holds a line break, count the quotes (a second pass, on this rare path only).
        quote = self.dialect.quote_char
        last = self._last_value
        if not quote or last is None or ("\n" not in last and "\r" not in last):
            return
        if self._count(quote.encode()) % 2 == 1:
            raise self._unterminated(self._last_line)

    def _unterminated(self, line: int) -> BadInput:
        quote = self.dialect.quote_char
        return BadInput(
            self.name,
            line,
            f"the quote ({quote}) opened on this line is never closed: close it, or set "
            'quote_char = "" in the job if quotes are plain text in this file',
        )

    def _count(self, byte: bytes) -> int:
        source = self.dialect.source(self._open_handle(), name=self.name, limits=self.limits)
        total = 0
        try:
            while len(chunk := source.read(4 << 20)):
                total += bytes(chunk).count(byte)
        finally:
            source.close()
        return total

    def _parse_error(self, exc: pa.ArrowInvalid) -> Exception:
        message = str(exc)
        if "invalid UTF8" in message:
            return self._find_invalid_utf8()
        if "straddling" in message:
            return LimitExceeded(
                f"{self.name}, after line {self._next_line - 1}: a record is longer than "
                f"{self.limits.max_line_bytes:,} bytes (limit max_line_bytes), or a quote is "
                "never closed"
            )
        return BadInput(self.name, self._next_line, f"cannot be parsed as CSV: {message}")

    def _find_invalid_utf8(self) -> Exception:
        """Read the object again, validating as it goes, to name the line of the bad bytes."""
        return self._second_pass(validate_utf8=True) or BadInput(
            self.name, None, "is not valid UTF-8 (set `encoding` in the job)"
        )

    def _with_line(self, error: NulByte) -> BadInput:
        """The error with its line, found by a second pass when the first did not count lines."""
        return (self._second_pass() if error.line is None else None) or error

    def _second_pass(self, *, validate_utf8: bool = False) -> BadInput | None:
        """Read the object again, counting lines (and validating): the first error, or None.

        The first pass does not count lines, which would cost a scan of every byte; an error
        found there is named by line here.
        """
        checked = self.dialect.source(
            self._open_handle(),
            name=self.name,
            limits=self.limits,
            count_lines=True,
            validate_utf8=validate_utf8,
        )
        try:
            while len(checked.read(4 << 20)):
                pass
        except BadInput as found:
            return found
        finally:
            checked.close()
        return None


def guess_delimiter(text: str, quote: str | None = '"', *, whole: bool = False) -> str:
    """The delimiter that splits the first records of `text` into the same number of fields
    (2 or more), quotes and every kind of line end respected: the most consistent, then the
    one with most fields; a comma when none does."""
    best, best_score = ",", -1
    for candidate in DELIMITERS:
        counts = field_counts(text, candidate, quote, whole=whole)
        if not counts or counts[0] < 2:
            continue
        consistent = sum(1 for c in counts if c == counts[0])
        score = consistent * 1000 + counts[0]
        if score > best_score:
            best, best_score = candidate, score
    return best


def field_counts(text: str, delimiter: str, quote: str | None, *, whole: bool = False) -> list[int]:
    """The number of fields in each of the first 20 records of `text`; unless it is the
    `whole` text, the last record may be cut, and is left out."""
    options: dict[str, Any] = {"delimiter": delimiter, "strict": False}
    if quote:
        options["quotechar"] = quote
    else:
        options["quoting"] = pycsv.QUOTE_NONE
    try:
        rows = pycsv.reader(io.StringIO(text, newline=""), **options)
        counts = [len(row) for _, row in zip(range(21), rows, strict=False) if row]
    except pycsv.Error:
        return []
    return counts[:-1] if len(counts) > 1 and not whole else counts


def _splits(counts: list[int]) -> bool:
    """Whether records split into the same number of fields, 2 or more."""
    return bool(counts) and counts[0] >= 2 and all(c == counts[0] for c in counts)


def _decode_prefix(data: bytes, whole: bool) -> tuple[str, int | None]:
    """`data` as UTF-8, up to the first invalid byte: the text, and where that byte is (None:
    all valid; an incomplete character at the end of a cut sample is not invalid)."""
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=whole), None
    except UnicodeDecodeError as exc:
        return data[: exc.start].decode("utf-8"), exc.start


def check_dialect(dialect: CsvDialect) -> None:
    """A ConfigError, whose message starts with the setting's name, for a dialect that cannot
    be read."""
    if len(dialect.delimiter) != 1 or dialect.delimiter in "\r\n":
        raise ConfigError(
            f"delimiter must be one character (not a line break), got {dialect.delimiter!r}"
        )
    if dialect.quote_char is not None and (
        len(dialect.quote_char) != 1 or dialect.quote_char == dialect.delimiter
    ):
        raise ConfigError(
            f"quote_char must be one character other than the delimiter, got {dialect.quote_char!r}"
        )
    if dialect.comment is not None and (
        len(dialect.comment) != 1
        or dialect.comment in "\r\n"
        or dialect.comment in (dialect.delimiter, dialect.quote_char)
    ):
        raise ConfigError(
            "comment must be one character other than the delimiter, the quote and a line "
            f"break, got {dialect.comment!r}"
        )
    if dialect.columns is not None and dialect.header:
        raise ConfigError("columns name the fields of a file without a header: set header = false")


def _record_end(text: str, quote: str | None) -> int | None:
    """The offset just past the first record's line break, quotes respected; None if unseen."""
    inside = False
    for at, char in enumerate(text):
        if quote and char == quote:
            inside = not inside
        elif char == "\n" and not inside:
            return at + 1
        elif char == "\r" and not inside:
            return at + 2 if text[at + 1 : at + 2] == "\n" else at + 1
    return None


# Python's csv module refuses fields past 128 KiB, a limit of its own: lakeport's are the job's
# max_line_bytes (the header is read up to it) and max_field_bytes (checked after).
pycsv.field_size_limit(MAX_RECORD_BYTES)


def _parse_header(record: str, dialect: CsvDialect, name: str) -> list[str]:
    options: dict[str, Any] = {"delimiter": dialect.delimiter, "strict": True}
    if dialect.quote_char:
        options.update(quotechar=dialect.quote_char, doublequote=True)
    else:
        options["quoting"] = pycsv.QUOTE_NONE
    try:
        rows = list(pycsv.reader(io.StringIO(record, newline=""), **options))
    except pycsv.Error as exc:
        raise BadInput(name, 1, f"the header cannot be parsed: {exc}") from None
    return rows[0] if rows else [""]


def _may_hold_line_breaks(column: pa.Array) -> bool:
    """Whether any value may contain CR or LF: a scan of the column's bytes at memchr speed.

    A string column keeps all its values in one data buffer; finding no CR or LF byte there
    settles it without looking at the values one by one.
    """
    if len(column) == 0:
        return False
    data = column.buffers()[2]
    if data is None:
        return False
    raw = data.to_pybytes()
    return b"\n" in raw or b"\r" in raw


def _all_empty(batch: pa.RecordBatch) -> pa.Array | None:
    """True where every field of the row is empty; None when no row is."""
    mask: pa.Array | None = None
    for column in batch.columns:
        empty = pc.equal(pc.binary_length(column), 0)
        mask = empty if mask is None else pc.and_(mask, empty)
        if not pc.any(mask).as_py():
            return None
    return mask
