"""JSON objects in, record batches of text fields out: newline-delimited JSON or one top-level
array of objects, streamed.

The first non-space byte tells the shape: `[` is one array of objects, `{` a sequence of objects
(one a line, as NDJSON has them; an object spread over several lines is read too). Each record
is parsed strictly (RFC 8259: no NaN or Infinity, no trailing commas, no comments, UTF-8 only)
and flattened:

- nested objects become dotted names (`user.address.city`); an empty object adds no field;
- arrays whose items are all strings, or all numbers, or all booleans (nulls allowed) become
  `list<string>`; other arrays (of objects, of arrays, of mixed kinds) are kept as compact JSON
  text in a string field;
- every scalar is text: a number in its shortest exact form (plain decimal notation, no
  exponent, no trailing fractional zeros, `-0` as `0`: `1.50` and `15e-1` both give `1.5`, and
  no digit is lost to a float), booleans `true`/`false`. Null is no value: a field that is null
  (or absent) in every record of a file is not created.

When one key appears twice in an object, the last value wins (as in JavaScript, Python and Go).
A field that holds lists in some records and single values in others is a list in all of them (a
single value becomes a one-item list), so a file's field types never conflict.

A record that is not an object, does not parse, nests deeper than `max_depth`, is larger than
`max_line_bytes` or has a string that is not valid Unicode is a bad row: the error names the
line where the record starts. A truncated file is an error.

The fields of a JSON file are only known as its records come. The reader announces the fields
of the first HEAD_ROWS records and streams the rest; a record with a field not announced
raises ReadAgain, and a reader made with `stage` reads the whole file first (staging it as
lz4-compressed Arrow streams in `spill`) and gives every field. Plain NDJSON chunks are parsed
by pyarrow (engine.readers.json_fast), which gives the same rows; the rest record by record, in
Python's C JSON scanner.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import json
import re
import tempfile
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from engine.errors import BadInput, ConfigError, LimitExceeded
from engine.executor import prefetch
from engine.readers.json_fast import FastChunks, plain
from engine.readers.rows import LINE, BadRow, ReadAgain, check_names
from engine.readers.source import Limits, TextSource

MAX_DEPTH = 64
BATCH_ROWS = 32 * 1024
HEAD_ROWS = 100_000
"""Records read before the first batch is given, to know the file's fields."""
CHUNK_BYTES = 8 << 20
"""NDJSON is read in chunks of whole lines about this large."""
_SPACE = re.compile(r"[ \t\r\n]*")
_LIST = pa.list_(pa.string())
_MAX_EXPONENT = 1000
"""Numbers beyond 10^±1000 are refused: their plain form would be thousands of digits."""


class _Number(str):
    """A number's text as written, until it is put in its shortest exact form."""

    __slots__ = ()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


_DECODER = json.JSONDecoder(
    parse_float=_Number, parse_int=_Number, parse_constant=_refuse_constant, strict=True
)


def shortest_number(text: str) -> str:
    """A JSON number in its shortest exact form; see the module docstring."""
    if "." not in text and "e" not in text and "E" not in text:
        return "0" if text == "-0" else text  # JSON has no leading zeros: already shortest
    try:
        value = Decimal(text)
    except InvalidOperation:  # an exponent past what Decimal holds
        value = Decimal("Infinity")
    if not value.is_finite() or abs(value.adjusted()) > _MAX_EXPONENT:
        raise ValueError(f"the number {text[:40]} is beyond 10^±{_MAX_EXPONENT}")
    if value.is_zero():
        return "0"
    plain = format(value, "f")
    if "." in plain:
        plain = plain.rstrip("0").rstrip(".")
    return plain


def _scalar(value: Any) -> str | None:
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, _Number):
        return shortest_number(value)
    return str(value)


def _kind(value: Any) -> str:
    if isinstance(value, _Number):
        return "number"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    return "other"


def _json_text(value: Any) -> str:
    """Compact JSON text of a value, numbers in their shortest exact form."""
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}:{_json_text(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json_text(v) for v in value) + "]"
    if isinstance(value, _Number):
        return shortest_number(value)
    return json.dumps(value, ensure_ascii=False)


def _shown(record: Any) -> str:
    """A record's text for a message (cut to 200 characters by the message)."""
    try:
        return _json_text(record)[:200]
    except (RecursionError, UnicodeEncodeError, ValueError):
        return repr(record)[:200]


class _Record(Exception):
    """Why one record cannot be imported (and its text, when it did not parse)."""

    def __init__(self, reason: str, text: str = "") -> None:
        super().__init__(reason)
        self.text = text


class _Columns:
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
            kind = "an array" if isinstance(record, list) else f"a {_kind(record)} value"
            raise _Record(f"the record is {kind}, not an object")
        row = len(self.lines)
        added: list[str] = []
        try:
            self._flatten(record, "", row, 1, added)
        except BaseException as exc:
            for name in added:  # leave the columns as they were before this record
                del self.values[name][row:]
            if isinstance(exc, ValueError):  # a number beyond the limit
                raise _Record(str(exc)) from None
            raise
        self.lines.append(line)

    def _flatten(
        self, record: dict[str, Any], prefix: str, row: int, depth: int, added: list[str]
    ) -> None:
        if depth > self.max_depth:
            raise _Record(f"it nests deeper than {self.max_depth} levels (limit max_depth)")
        for key, value in record.items():
            name = prefix + key
            if isinstance(value, dict):
                self._flatten(value, name + ".", row, depth + 1, added)
                continue
            if isinstance(value, list):
                kinds = {_kind(v) for v in value if v is not None}
                if len(kinds) <= 1 and "other" not in kinds:
                    self.lists.add(name)
                    value = [_scalar(v) for v in value]
                else:
                    _check_depth(value, depth + 1, self.max_depth)
                    value = _json_text(value)
            else:
                value = _scalar(value)
                if value is None:
                    continue  # null is no value: it makes no field
            column = self.values.get(name)
            if column is None:
                if _not_unicode(name):
                    raise _Record(
                        f"the key {name!r} is not valid Unicode (a lone surrogate escape)"
                    )
                column = self.values[name] = []
            if len(column) > row:
                raise _Record(
                    f"the field '{name}' appears twice (a key with a dot, and a nested object)"
                )
            if len(column) < row:
                column.extend([None] * (row - len(column)))
            column.append(value)
            added.append(name)

    def batch(self) -> pa.RecordBatch:
        """The batch, with `_line`; raises _Record with the row that cannot be stored."""
        rows = len(self.lines)
        arrays, names = [], []
        for name, column in self.values.items():
            if len(column) < rows:
                column.extend([None] * (rows - len(column)))
            if name in self.lists:
                column = [v if v is None or isinstance(v, list) else [v] for v in column]
            try:
                arrays.append(pa.array(column, _LIST if name in self.lists else pa.string()))
            except (UnicodeEncodeError, pa.ArrowInvalid) as exc:
                raise _BadString(name, column, self.lines) from exc
            names.append(name)
        arrays.append(pa.array(self.lines, pa.int64()))
        names.append(LINE)
        return pa.RecordBatch.from_arrays(arrays, names=names)


class _BadString(Exception):
    """A string that is not valid Unicode (a lone surrogate): which row."""

    def __init__(self, name: str, column: list[Any], lines: list[int]) -> None:
        for at, value in enumerate(column):
            texts = value if isinstance(value, list) else [value]
            if any(t is not None and _not_unicode(t) for t in texts):
                self.row, self.line = at, lines[at]
                break
        else:  # pragma: no cover - pyarrow refused something else
            self.row, self.line = 0, lines[0]
        super().__init__(
            f"the field '{name}' has a string that is not valid Unicode "
            "(a lone surrogate escape such as \\ud800)"
        )


def _not_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_depth(value: Any, depth: int, limit: int) -> None:
    if depth > limit:
        raise _Record(f"it nests deeper than {limit} levels (limit max_depth)")
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for child in children:
        if isinstance(child, (dict, list)):
            _check_depth(child, depth + 1, limit)


class JsonReader:
    """One JSON object (file), read as record batches of text fields plus `_line`.

    Args:
        open_handle: Opens the object's bytes.
        name: The object's URL or key, for messages.
        spill: A folder for the staged records (removed as they are read back).
        fields: The fields to keep, in this order: dotted paths, or names of `mapping`
            (all fields when None). A path that names an object keeps every field under it.
        mapping: Field name → dotted source path, for fields to rename.
        limits: Sizes that protect the machine; a record may be `max_line_bytes` long.
        max_depth: How deeply objects and arrays may nest.
        on_bad_row: Receives each bad row; when None, the first bad row is an error.
        fast: Read plain NDJSON chunks with pyarrow (engine.readers.json_fast); False reads
            every record one by one, which gives the same rows.
        stage: Read the whole file before giving its first batch (its fields are then all
            known). Without it, the fields are those of the first HEAD_ROWS records, and the
            rest streams through.
    """

    def __init__(
        self,
        open_handle: Callable[[], IO[bytes]],
        *,
        name: str,
        spill: Path,
        fields: Sequence[str] | None = None,
        mapping: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        max_depth: int = MAX_DEPTH,
        on_bad_row: Callable[[BadRow], None] | None = None,
        fast: bool = True,
        stage: bool = False,
    ) -> None:
        self.name = name
        self.limits = limits or Limits()
        self.max_depth = max_depth
        self._on_bad_row = on_bad_row
        self._fast = fast
        self.rows_read = 0
        """Records read that were not bad."""
        self.rows_bad = 0
        self.rows_blank = 0
        """Always 0: whitespace between records is not a record."""
        self._source = TextSource(open_handle(), name=name, limits=self.limits)
        spill.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix="json-", dir=spill))
        self._staged: list[Path] = []
        self._found: dict[str, pa.DataType] = {}
        self._held: list[pa.RecordBatch] = []
        self._all_fields = fields is None
        self._produced = self._produce()
        try:
            self._columns = self._start(fields, mapping or {}, stage)
        except BaseException:
            self._close()
            raise
        self.fields = [out for out, _ in self._columns]
        try:
            check_names(name, None, self.fields, "rename it with `mapping` in the job")
        except BadInput:
            self._close()
            raise
        self.schema = pa.schema(
            [
                *(pa.field(out, self._found.get(src, pa.string())) for out, src in self._columns),
                (LINE, pa.int64()),
            ]
        )

    def _start(
        self, fields: Sequence[str] | None, mapping: Mapping[str, str], stage: bool
    ) -> list[tuple[str, str]]:
        """Read the head of the file (or all of it, staging it) to know its fields."""
        if not stage:
            for batch in self._produced:
                self._learn(batch)
                self._held.append(batch)
                if sum(b.num_rows for b in self._held) >= HEAD_ROWS:
                    break
            self.header = list(self._found)
            try:
                chosen = self._select(fields, mapping)
            except ConfigError:
                chosen = None  # a field may come later: read on, staging
            if chosen is not None and not self._expands(fields, mapping):
                self._streaming = True
                return chosen
        for batch in itertools.chain(self._held, self._produced):
            self._stage_batch(batch)
        self._held = []
        self._source.close()
        self._streaming = False
        self.header = list(self._found)
        """Every field of the file, in order of first appearance."""
        return self._select(fields, mapping)

    def _expands(self, fields: Sequence[str] | None, mapping: Mapping[str, str]) -> bool:
        """Whether a selected name stands for the fields under an object."""
        return fields is not None and any(
            out not in mapping and out not in self._found for out in fields
        )

    def close(self) -> None:
        """Let go of the object without reading its rows (`batches` does so when done)."""
        self._held = []
        self._close()

    def _close(self) -> None:
        self._produced.close()
        self._source.close()
        self._discard()

    @property
    def bytes_read(self) -> int:
        """Bytes read from the object so far (compressed, when it is)."""
        return self._source.bytes_in

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The records, in file order, with every selected field.

        Unless the file was staged, the fields are those of its first records; a later
        record with another field raises ReadAgain (before anything is committed): the
        caller reads the file again with `stage`.
        """
        try:
            if self._streaming:
                for batch in itertools.chain(self._held, self._produced):
                    self._check_known(batch)
                    yield self._conform(batch)
                return
            for path in self._staged:
                with pa.OSFile(str(path)) as source:
                    for batch in ipc.open_stream(source):
                        yield self._conform(batch)
                path.unlink()
        finally:
            self._held = []
            self._close()

    def _check_known(self, batch: pa.RecordBatch) -> None:
        selected = {source for _, source in self._columns}
        for field in _fields_of(batch):
            known = self._found.get(field.name)
            grew = known is None and (self._all_fields or field.name in selected)
            if grew or (field.name in selected and known != _LIST and field.type == _LIST):
                raise ReadAgain(
                    f"{self.name}: the field '{field.name}' first appears, or first holds a "
                    f"list, at line {_lines(batch)[0].as_py()} or after"
                )

    # Selection

    def _select(
        self, fields: Sequence[str] | None, mapping: Mapping[str, str]
    ) -> list[tuple[str, str]]:
        """(output name, source field) pairs."""
        if fields is None:
            return [(name, name) for name in self.header]
        chosen: list[tuple[str, str]] = []
        missing = []
        for out in fields:
            source = mapping.get(out, out)
            under = [name for name in self.header if name.startswith(source + ".")]
            if source in self._found:
                chosen.append((out, source))
            elif under and out not in mapping:
                chosen += [(name, name) for name in under]
            elif under:
                missing.append(f"{source} (an object: map its fields one by one)")
            else:
                missing.append(source)
        if missing:
            known = ", ".join(self.header) or "none"
            raise ConfigError(
                f"{self.name} has no field {', '.join(missing)}: its fields are {known}"
            )
        # A field named on its own and under an object named too (`event.time` and `event`)
        # is read once.
        return list(dict.fromkeys(chosen))

    def _conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        arrays = []
        for _, source in self._columns:
            wanted = self._found[source]
            # A field of the file named like the line column is the first of the two.
            index = batch.schema.names.index(source) if source in batch.schema.names else -1
            if index < 0:
                arrays.append(pa.nulls(batch.num_rows, wanted))
                continue
            values = batch.column(index)
            if values.type != wanted:  # text in this batch, lists elsewhere in the file
                values = pa.array([None if v is None else [v] for v in values.to_pylist()], wanted)
            arrays.append(values)
        arrays.append(_lines(batch))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    # Reading

    def _produce(self) -> Generator[pa.RecordBatch, None, None]:
        """The file's records as batches of text fields and `_line`, in file order."""
        head = bytes(self._source.peek(1 << 16)).lstrip()
        if head.startswith(b"["):
            text = _Text(self._source, self.name, self.limits.max_line_bytes)
            yield from self._slow_batches(self._array(text, text.skip_space(0) + 1))
            return
        fast = FastChunks(self.max_depth)
        content = False
        line = 1
        carry = b""
        # Chunks are cut and parsed by pyarrow in a thread while the last one is converted
        # and handed on here.
        for piece, lines, last, table in prefetch(self._parsed(fast), depth=2):
            chunk: bytes | bytearray = piece
            content = content or (bool(chunk) and not chunk.isspace())
            if carry:  # the last chunk's cut-off record, and what follows it
                chunk, table = carry + chunk, None
                lines += carry.count(b"\n")
            batches = None if table is None else fast.convert(table, line)
            if batches is not None:
                for batch in batches:
                    yield self._counted(batch)
                carry = b""
            else:
                found: list[bytes] = []
                yield from self._slow_chunk(chunk, line, last, found)
                carry = found[0] if found else b""
                if len(carry) > self.limits.max_line_bytes:
                    raise BadInput(
                        self.name,
                        line + lines - carry.count(b"\n"),
                        f"a record is larger than {self.limits.max_line_bytes:,} bytes "
                        "(limit max_line_bytes), or never ends",
                    )
                lines -= carry.count(b"\n")
            line += lines
        if not content:
            raise BadInput(self.name, None, "is empty: it has no JSON records")

    def _parsed(self, fast: FastChunks) -> Iterator[tuple[bytearray, int, bool, pa.Table | None]]:
        """(chunk of whole lines, its lines, whether it is the last, pyarrow's reading of it or
        None), in file order. The chunks are cut in a thread of their own, so that pyarrow
        always has the next one to parse."""
        for chunk, lines, final, fit in prefetch(self._chunks(), depth=2):
            yield chunk, lines, final, fast.parse(chunk, lines) if fit else None

    def _chunks(self) -> Iterator[tuple[bytearray, int, bool, bool]]:
        """(chunk of whole lines, its lines, whether it is the last, whether pyarrow may read
        it), in file order."""
        held = bytearray()  # read, not yet cut: whole lines are cut off its front
        final = False
        line = 1
        while not final or held:
            if not final:
                final = self._fill(held, CHUNK_BYTES)
            cut = len(held) if final else held.rfind(b"\n") + 1
            if cut == 0:  # one line longer than the chunk: read on (the limit stops it)
                if len(held) > self.limits.max_line_bytes:
                    raise BadInput(
                        self.name,
                        line,
                        f"a record is larger than {self.limits.max_line_bytes:,} bytes "
                        "(limit max_line_bytes), or never ends",
                    )
                final = self._fill(held, len(held) + CHUNK_BYTES)
                continue
            # The chunk is `held` itself, cut short (no copy); the rest of its last line
            # starts the next.
            chunk, held = held, held[cut:]
            del chunk[cut:]
            breaks = chunk.count(b"\n")
            lines = breaks + (0 if chunk.endswith(b"\n") or not chunk else 1)
            line += breaks
            yield chunk, lines, final and not held, self._fast and plain(chunk)

    def _fill(self, held: bytearray, size: int) -> bool:
        """Read until `held` has `size` bytes; whether the object ended first."""
        while len(held) < size:
            data = self._source.read(size - len(held))
            if not len(data):
                return True
            held += data
        return False

    def _slow_chunk(
        self, chunk: bytes | bytearray, first_line: int, final: bool, carry: list[bytes]
    ) -> Iterator[pa.RecordBatch]:
        """A chunk read record by record; the bytes of a record it cuts off go to `carry`,
        to be read again with the next chunk."""
        text = _Text(_Bytes(chunk), self.name, self.limits.max_line_bytes, first_line)
        yield from self._slow_batches(self._sequence(text, text.skip_space(0), final, carry))

    def _slow_batches(self, records: Iterator[tuple[Any, int]]) -> Iterator[pa.RecordBatch]:
        columns = _Columns(self.max_depth)
        for record, line in records:
            if isinstance(record, _Record):
                self._bad(line, str(record), record.text)
                continue
            try:
                columns.add(record, line)
            except _Record as exc:
                self._bad(line, str(exc), _shown(record))
                continue
            except RecursionError:
                self._bad(
                    line, f"it nests deeper than {self.max_depth} levels (limit max_depth)", ""
                )
                continue
            if len(columns) >= BATCH_ROWS:
                yield from self._columns_batch(columns)
                columns = _Columns(self.max_depth)
        yield from self._columns_batch(columns)

    def _columns_batch(self, columns: _Columns) -> Iterator[pa.RecordBatch]:
        while len(columns):
            try:
                batch = columns.batch()
            except _BadString as exc:
                self._bad(exc.line, str(exc), "")
                for column in columns.values.values():
                    del column[exc.row]
                del columns.lines[exc.row]
                continue
            yield self._counted(batch)
            return

    def _counted(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        self._check_field_sizes(batch)
        self.rows_read += batch.num_rows
        return batch

    def _learn(self, batch: pa.RecordBatch) -> None:
        """Note the batch's fields and types (a field that is a list anywhere is a list)."""
        for field in _fields_of(batch):
            if self._found.get(field.name) != _LIST:
                self._found[field.name] = field.type

    def _stage_batch(self, batch: pa.RecordBatch) -> None:
        self._learn(batch)
        path = self._staging / f"{len(self._staged):06d}.arrow"
        options = ipc.IpcWriteOptions(compression="lz4")
        with ipc.new_stream(str(path), batch.schema, options=options) as writer:
            writer.write_batch(batch)
        self._staged.append(path)

    def _check_field_sizes(self, batch: pa.RecordBatch) -> None:
        limit = self.limits.max_field_bytes
        for field, column in zip(_fields_of(batch), batch.columns, strict=False):
            if len(column) == 0:
                continue
            rows = None
            if pa.types.is_list(field.type):
                rows, column = pc.list_parent_indices(column), column.flatten()
                if len(column) == 0:
                    continue
            sizes = pc.binary_length(column)
            if (pc.max(sizes).as_py() or 0) > limit:
                at = pc.index(pc.greater(sizes, limit), True).as_py()
                row = at if rows is None else rows[at].as_py()
                raise LimitExceeded(
                    f"{self.name}, line {_lines(batch)[row].as_py()}: field "
                    f"'{field.name}' is longer than {limit:,} bytes (limit max_field_bytes): "
                    "raise the limit in the job if such fields are expected"
                )

    def _bad(self, line: int, reason: str, text: str) -> None:
        row = BadRow(line, reason, text)
        if self._on_bad_row is None:
            raise row.error(self.name)
        self.rows_bad += 1
        self._on_bad_row(row)

    def _sequence(
        self, text: _Text, at: int, final: bool, carry: list[bytes]
    ) -> Iterator[tuple[Any, int]]:
        """Records one after another (NDJSON). When the text is not the object's last and a
        record runs past its end, the record's bytes go to `carry`."""
        while not text.at_end(at):
            line = text.line(at)
            found = text.decode(at)
            if isinstance(found, _Fault):
                if found.fatal and not final:
                    carry.append(text.rest(at).encode("utf-8"))
                    return
                if found.fatal:
                    raise BadInput(self.name, line, found.reason)
                yield _Record(found.reason, text.line_text(at)), line
                at = text.next_line(at)
            else:
                record, at = found
                yield record, line
                end = text.skip_space(at)
                if end == at and not text.at_end(at):
                    yield (
                        _Record(
                            f"after the record comes {text.snippet(at)!r}, not a line break",
                            text.line_text(at),
                        ),
                        text.line(at),
                    )
                    at = text.next_line(at)
                else:
                    at = end
            at = text.skip_space(at)
            text.forget(at)

    def _array(self, text: _Text, at: int) -> Iterator[tuple[Any, int]]:
        at = text.skip_space(at)
        if not text.at_end(at) and text.char(at) == "]":
            yield from self._after_array(text, at + 1)
            return
        while True:
            if text.at_end(at):
                raise self._truncated_array(text, at)
            line = text.line(at)
            found = text.decode(at)
            if isinstance(found, _Fault):
                # Inside an array, a broken element leaves no safe place to go on from.
                raise BadInput(self.name, line, found.reason)
            record, at = found
            yield record, line
            at = text.skip_space(at)
            text.forget(at)
            if text.at_end(at):
                raise self._truncated_array(text, at)
            separator = text.char(at)
            if separator == "]":
                yield from self._after_array(text, at + 1)
                return
            if separator != ",":
                raise BadInput(
                    self.name,
                    text.line(at),
                    f"expected ',' or ']' after a record of the array, found {text.snippet(at)!r}",
                )
            at = text.skip_space(at + 1)
            if not text.at_end(at) and text.char(at) == "]":
                raise BadInput(
                    self.name,
                    text.line(at),
                    "has a trailing comma before ']', which JSON does not allow",
                )

    def _truncated_array(self, text: _Text, at: int) -> BadInput:
        return BadInput(
            self.name, text.line(at), "ends inside the top-level array: the file is truncated"
        )

    def _after_array(self, text: _Text, at: int) -> Iterator[tuple[Any, int]]:
        at = text.skip_space(at)
        if not text.at_end(at):
            raise BadInput(
                self.name, text.line(at), f"has {text.snippet(at)!r} after the top-level array"
            )
        return
        yield  # a generator

    def _discard(self) -> None:
        for path in self._staged:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._staging.rmdir()


class _Fault:
    """A record that does not parse: why, and whether reading can go on after it."""

    def __init__(self, reason: str, fatal: bool) -> None:
        self.reason = reason
        self.fatal = fatal


def _cut_off(text: str, start: int, exc: json.JSONDecodeError) -> bool:
    """Whether the record starting at `start` fails only because the text ends."""
    last = start + len(text[start:].rstrip()) - 1
    if exc.msg.startswith("Unterminated string"):
        return "\n" not in text[exc.pos :]
    return exc.pos > last


class _Readable(Protocol):
    def read(self, size: int) -> Any: ...


class _Bytes:
    """Bytes already in memory, read like an object."""

    def __init__(self, data: bytes | bytearray) -> None:
        self._data = memoryview(data)
        self._at = 0

    def read(self, size: int) -> memoryview:
        out = self._data[self._at : self._at + size]
        self._at += len(out)
        return out


class _Text:
    """The decoded text of the object, held from the record being read onwards.

    Positions are absolute (characters from the start of the object). Lines are counted
    incrementally, and consumed text is dropped in large pieces, so each character is scanned
    a bounded number of times.
    """

    def __init__(self, source: _Readable, name: str, max_record: int, first_line: int = 1) -> None:
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
            end = _SPACE.match(self.buffer, at - self._offset).end()  # type: ignore[union-attr]
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

    def decode(self, at: int) -> tuple[Any, int] | _Fault:
        """The JSON value starting at `at` and where it ends, reading more text as needed."""
        while True:
            local = at - self._offset
            try:
                value, end = _DECODER.raw_decode(self.buffer, local)
            except json.JSONDecodeError as exc:
                # The record may only be cut off by the end of the text held so far.
                if not self._eof and len(self.buffer) - local <= self._max:
                    self._more()
                    continue
                if self._eof and _cut_off(self.buffer, local, exc):
                    return _Fault(
                        f"the file ends inside a record: it is truncated ({exc.msg})", fatal=True
                    )
                return _Fault(
                    f"invalid JSON at character {exc.pos - local + 1} of the record: {exc.msg}",
                    fatal=False,
                )
            except ValueError as exc:  # NaN, Infinity, an integer too long for Python
                return _Fault(f"invalid JSON: {exc}", fatal=False)
            except RecursionError:
                return _Fault("it nests too deeply to parse (limit max_depth)", fatal=False)
            if end - local > self._max:
                return _Fault(
                    f"the record is larger than {self._max:,} bytes (limit max_line_bytes)",
                    fatal=False,
                )
            return value, self._offset + end


def _fields_of(batch: pa.RecordBatch) -> list[pa.Field]:
    """The batch's fields from the file: all but the last, the line column every batch ends
    with (a field of the file may have its name too)."""
    return list(batch.schema)[:-1]


def _lines(batch: pa.RecordBatch) -> pa.Array:
    """The batch's line column: its last."""
    return batch.column(batch.num_columns - 1)
