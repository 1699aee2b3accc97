"""The parts of the JSON reader that read records: Python's strict decoder with numbers kept as
written, their shortest exact form, flattening a record into columns, the decoded text of an
object with its line numbers, and why a record does not parse. `engine.readers.json` streams
files through them; `engine.readers.json_fast` shares the number form."""

from __future__ import annotations

import codecs
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import pyarrow as pa

from engine.errors import BadInput
from engine.readers.rows import LINE

SPACE = re.compile(r"[ \t\r\n]*")
LIST = pa.list_(pa.string())
MAX_EXPONENT = 1000
"""Numbers beyond 10^±1000 are refused: their plain form would be thousands of digits."""


class Number(str):
    """A number's text as written, until it is put in its shortest exact form."""

    __slots__ = ()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


DECODER = json.JSONDecoder(
    parse_float=Number, parse_int=Number, parse_constant=_refuse_constant, strict=True
)


def shortest_number(text: str) -> str:
    """A JSON number in its shortest exact form; see the module docstring."""
    if "." not in text and "e" not in text and "E" not in text:
        return "0" if text == "-0" else text  # JSON has no leading zeros: already shortest
    try:
        value = Decimal(text)
    except InvalidOperation:  # an exponent past what Decimal holds
        value = Decimal("Infinity")
    if not value.is_finite() or abs(value.adjusted()) > MAX_EXPONENT:
        raise ValueError(f"the number {text[:40]} is beyond 10^±{MAX_EXPONENT}")
    if value.is_zero():
        return "0"
    plain = format(value, "f")
    if "." in plain:
        plain = plain.rstrip("0").rstrip(".")
    return plain


def scalar(value: Any) -> str | None:
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Number):
        return shortest_number(value)
    return str(value)


def kind_of(value: Any) -> str:
    if isinstance(value, Number):
        return "number"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    return "other"


def json_text(value: Any) -> str:
    """Compact JSON text of a value, numbers in their shortest exact form."""
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}:{json_text(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    if isinstance(value, Number):
        return shortest_number(value)
    return json.dumps(value, ensure_ascii=False)


def shown(record: Any) -> str:
    """A record's text for a message (cut to 200 characters by the message)."""
    try:
        return json_text(record)[:200]
    except (RecursionError, UnicodeEncodeError, ValueError):
        return repr(record)[:200]


class Record(Exception):
    """Why one record cannot be imported (and its text, when it did not parse)."""

    def __init__(self, reason: str, text: str = "") -> None:
        super().__init__(reason)
        self.text = text


class Columns:
    """Flattened records, column by column, for one batch."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.values: dict[str, list[Any]] = {}
        self.lists: set[str] = set()
        self.lines: list[int] = []

    def __len__(self) -> int:
        return len(self.lines)

    def add(self, record: Any, line: int) -> None:
        if not isinstance(record, dict):
            kind = "an array" if isinstance(record, list) else f"a {kind_of(record)} value"
            raise Record(f"the record is {kind}, not an object")
        row = len(self.lines)
        added: list[str] = []
        try:
            self._flatten(record, "", row, 1, added)
        except BaseException as exc:
            for name in added:  # leave the columns as they were before this record
                del self.values[name][row:]
            if isinstance(exc, ValueError):  # a number beyond the limit
                raise Record(str(exc)) from None
            raise
        self.lines.append(line)

    def _flatten(
        self, record: dict[str, Any], prefix: str, row: int, depth: int, added: list[str]
    ) -> None:
        if depth > self.max_depth:
            raise Record(f"it nests deeper than {self.max_depth} levels (limit max_depth)")
        for key, value in record.items():
            name = prefix + key
            if isinstance(value, dict):
                self._flatten(value, name + ".", row, depth + 1, added)
                continue
            if isinstance(value, list):
                kinds = {kind_of(v) for v in value if v is not None}
                if len(kinds) <= 1 and "other" not in kinds:
                    self.lists.add(name)
                    value = [scalar(v) for v in value]
                else:
                    check_depth(value, depth + 1, self.max_depth)
                    value = json_text(value)
            else:
                value = scalar(value)
                if value is None:
                    continue  # null is no value: it makes no field
            column = self.values.get(name)
            if column is None:
                if not_unicode(name):
                    raise Record(f"the key {name!r} is not valid Unicode (a lone surrogate escape)")
                column = self.values[name] = []
            if len(column) > row:
                raise Record(
                    f"the field '{name}' appears twice (a key with a dot, and a nested object)"
                )
            if len(column) < row:
                column.extend([None] * (row - len(column)))
            column.append(value)
            added.append(name)

    def batch(self) -> pa.RecordBatch:
        """The batch, with `_line`; raises Record with the row that cannot be stored."""
        rows = len(self.lines)
        arrays, names = [], []
        for name, column in self.values.items():
            if len(column) < rows:
                column.extend([None] * (rows - len(column)))
            if name in self.lists:
                column = [v if v is None or isinstance(v, list) else [v] for v in column]
            try:
                arrays.append(pa.array(column, LIST if name in self.lists else pa.string()))
            except (UnicodeEncodeError, pa.ArrowInvalid) as exc:
                raise BadString(name, column, self.lines) from exc
            names.append(name)
        arrays.append(pa.array(self.lines, pa.int64()))
        names.append(LINE)
        return pa.RecordBatch.from_arrays(arrays, names=names)


class BadString(Exception):
    """A string that is not valid Unicode (a lone surrogate): which row."""

    def __init__(self, name: str, column: list[Any], lines: list[int]) -> None:
        for at, value in enumerate(column):
            texts = value if isinstance(value, list) else [value]
            if any(t is not None and not_unicode(t) for t in texts):
                self.row, self.line = at, lines[at]
                break
        else:  # pragma: no cover - pyarrow refused something else
            self.row, self.line = 0, lines[0]
        super().__init__(
            f"the field '{name}' has a string that is not valid Unicode "
            "(a lone surrogate escape such as \\ud800)"
        )


def not_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_depth(value: Any, depth: int, limit: int) -> None:
    if depth > limit:
        raise Record(f"it nests deeper than {limit} levels (limit max_depth)")
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for child in children:
        if isinstance(child, (dict, list)):
            check_depth(child, depth + 1, limit)


class Fault:
    """A record that does not parse: why, and whether reading can go on after it."""

    def __init__(self, reason: str, fatal: bool) -> None:
        self.reason = reason
        self.fatal = fatal


def cut_off(text: str, start: int, exc: json.JSONDecodeError) -> bool:
    """Whether the record starting at `start` fails only because the text ends."""
    last = start + len(text[start:].rstrip()) - 1
    if exc.msg.startswith("Unterminated string"):
        return "\n" not in text[exc.pos :]
    return exc.pos > last


class Readable(Protocol):
    def read(self, size: int) -> Any: ...


class Bytes:
    """Bytes already in memory, read like an object."""

    def __init__(self, data: bytes | bytearray) -> None:
        self._data = memoryview(data)
        self._at = 0

    def read(self, size: int) -> memoryview:
        out = self._data[self._at : self._at + size]
        self._at += len(out)
        return out


class Text:
    """The decoded text of the object, held from the record being read onwards.

    Positions are absolute (characters from the start of the object). Lines are counted
    incrementally, and consumed text is dropped in large pieces, so each character is scanned
    a bounded number of times.
    """

    def __init__(self, source: Readable, name: str, max_record: int, first_line: int = 1) -> None:
        self._source = source
        self._name = name
        self._max = max_record
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self.buffer = ""
        self._offset = 0
        """Characters of the object before `buffer`."""
        self._counted = (0, first_line)
        """(position, line at that position): where line counting goes on from."""
        self._eof = False

    def _more(self) -> bool:
        if self._eof:
            return False
        chunk = bytes(self._source.read(1 << 20))
        try:
            text = self._decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            end = self._offset + len(self.buffer)
            line = self.line(end) + chunk[: exc.start].count(b"\n")
            bad = chunk[exc.start : exc.start + 4].hex(" ")
            raise BadInput(
                self._name, line, f"is not valid UTF-8 (bytes {bad}): JSON files must be UTF-8"
            ) from None
        if not chunk:
            self._eof = True
        self.buffer += text
        return bool(chunk)

    def forget(self, at: int) -> None:
        """The text before `at` will not be needed again."""
        cut = at - self._offset
        if cut > (1 << 20):
            self.line(at)  # count the lines of what goes
            self.buffer = self.buffer[cut:]
            self._offset = at

    def at_end(self, at: int) -> bool:
        while at - self._offset >= len(self.buffer):
            if not self._more():
                return True
        return False

    def char(self, at: int) -> str:
        return self.buffer[at - self._offset]

    def snippet(self, at: int) -> str:
        self.at_end(at + 20)
        return self.buffer[at - self._offset : at - self._offset + 20]

    def line(self, at: int) -> int:
        """The line of position `at`, which is never before a position already asked for."""
        position, line = self._counted
        line += self.buffer.count("\n", position - self._offset, at - self._offset)
        self._counted = (at, line)
        return line

    def skip_space(self, at: int) -> int:
        while True:
            end = SPACE.match(self.buffer, at - self._offset).end()  # type: ignore[union-attr]
            if end < len(self.buffer) or not self._more():
                return self._offset + end

    def rest(self, at: int) -> str:
        """All the text from `at` on."""
        while self._more():
            pass
        return self.buffer[at - self._offset :]

    def line_text(self, at: int) -> str:
        """The text from `at` to the end of its line (at most 200 characters)."""
        self.at_end(at + 200)
        local = at - self._offset
        return self.buffer[local : local + 200].split("\n", 1)[0]

    def next_line(self, at: int) -> int:
        while True:
            found = self.buffer.find("\n", at - self._offset)
            if found >= 0:
                return self._offset + found + 1
            if not self._more():
                return self._offset + len(self.buffer)

    def decode(self, at: int) -> tuple[Any, int] | Fault:
        """The JSON value starting at `at` and where it ends, reading more text as needed."""
        while True:
            local = at - self._offset
            try:
                value, end = DECODER.raw_decode(self.buffer, local)
            except json.JSONDecodeError as exc:
                # The record may only be cut off by the end of the text held so far.
                if not self._eof and len(self.buffer) - local <= self._max:
                    self._more()
                    continue
                if self._eof and cut_off(self.buffer, local, exc):
                    return Fault(
                        f"the file ends inside a record: it is truncated ({exc.msg})", fatal=True
                    )
                return Fault(
                    f"invalid JSON at character {exc.pos - local + 1} of the record: {exc.msg}",
                    fatal=False,
                )
            except ValueError as exc:  # NaN, Infinity, an integer too long for Python
                return Fault(f"invalid JSON: {exc}", fatal=False)
            except RecursionError:
                return Fault("it nests too deeply to parse (limit max_depth)", fatal=False)
            if end - local > self._max:
                return Fault(
                    f"the record is larger than {self._max:,} bytes (limit max_line_bytes)",
                    fatal=False,
                )
            return value, self._offset + end


def fields_of(batch: pa.RecordBatch) -> list[pa.Field]:
    """The batch's fields from the file: all but the last, the line column every batch ends
    with (a field of the file may have its name too)."""
    return list(batch.schema)[:-1]


def lines_of(batch: pa.RecordBatch) -> pa.Array:
    """The batch's line column: its last."""
    return batch.column(batch.num_columns - 1)
