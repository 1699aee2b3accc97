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

import contextlib
import itertools
import tempfile
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from engine.errors import BadInput, ConfigError, LimitExceeded
from engine.executor import prefetch
from engine.readers.json_fast import FastChunks, plain
from engine.readers.json_records import (
    LIST,
    BadString,
    Bytes,
    Columns,
    Fault,
    Record,
    Text,
    fields_of,
    lines_of,
    shown,
)
from engine.readers.rows import LINE, BadRow, ReadAgain, check_names
from engine.readers.source import Limits, TextSource

MAX_DEPTH = 64
BATCH_ROWS = 32 * 1024
HEAD_ROWS = 100_000
"""Records read before the first batch is given, to know the file's fields."""
CHUNK_BYTES = 8 << 20
"""NDJSON is read in chunks of whole lines about this large."""


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
        for field in fields_of(batch):
            known = self._found.get(field.name)
            grew = known is None and (self._all_fields or field.name in selected)
            if grew or (field.name in selected and known != LIST and field.type == LIST):
                raise ReadAgain(
                    f"{self.name}: the field '{field.name}' first appears, or first holds a "
                    f"list, at line {lines_of(batch)[0].as_py()} or after"
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
        names = batch.schema.names
        for _, source in self._columns:
            wanted = self._found[source]
            # A field of the file named like the line column is the first of the two.
            index = names.index(source) if source in names else -1
            if index < 0:
                arrays.append(pa.nulls(batch.num_rows, wanted))
                continue
            values = batch.column(index)
            if values.type != wanted:  # text in this batch, lists elsewhere in the file
                values = pa.array([None if v is None else [v] for v in values.to_pylist()], wanted)
            arrays.append(values)
        arrays.append(lines_of(batch))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    # Reading

    def _produce(self) -> Generator[pa.RecordBatch, None, None]:
        """The file's records as batches of text fields and `_line`, in file order."""
        head = bytes(self._source.peek(1 << 16)).lstrip()
        if head.startswith(b"["):
            text = Text(self._source, self.name, self.limits.max_line_bytes)
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
        text = Text(Bytes(chunk), self.name, self.limits.max_line_bytes, first_line)
        yield from self._slow_batches(self._sequence(text, text.skip_space(0), final, carry))

    def _slow_batches(self, records: Iterator[tuple[Any, int]]) -> Iterator[pa.RecordBatch]:
        columns = Columns(self.max_depth)
        for record, line in records:
            if isinstance(record, Record):
                self._bad(line, str(record), record.text)
                continue
            try:
                columns.add(record, line)
            except Record as exc:
                self._bad(line, str(exc), shown(record))
                continue
            except RecursionError:
                self._bad(
                    line, f"it nests deeper than {self.max_depth} levels (limit max_depth)", ""
                )
                continue
            if len(columns) >= BATCH_ROWS:
                yield from self._columns_batch(columns)
                columns = Columns(self.max_depth)
        yield from self._columns_batch(columns)

    def _columns_batch(self, columns: Columns) -> Iterator[pa.RecordBatch]:
        while len(columns):
            try:
                batch = columns.batch()
            except BadString as exc:
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
        for field in fields_of(batch):
            if self._found.get(field.name) != LIST:
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
        for field, column in zip(fields_of(batch), batch.columns, strict=False):
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
                    f"{self.name}, line {lines_of(batch)[row].as_py()}: field "
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
        self, text: Text, at: int, final: bool, carry: list[bytes]
    ) -> Iterator[tuple[Any, int]]:
        """Records one after another (NDJSON). When the text is not the object's last and a
        record runs past its end, the record's bytes go to `carry`."""
        while not text.at_end(at):
            line = text.line(at)
            found = text.decode(at)
            if isinstance(found, Fault):
                if found.fatal and not final:
                    carry.append(text.rest(at).encode("utf-8"))
                    return
                if found.fatal:
                    raise BadInput(self.name, line, found.reason)
                yield Record(found.reason, text.line_text(at)), line
                at = text.next_line(at)
            else:
                record, at = found
                yield record, line
                end = text.skip_space(at)
                if end == at and not text.at_end(at):
                    yield (
                        Record(
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

    def _array(self, text: Text, at: int) -> Iterator[tuple[Any, int]]:
        at = text.skip_space(at)
        if not text.at_end(at) and text.char(at) == "]":
            yield from self._after_array(text, at + 1)
            return
        while True:
            if text.at_end(at):
                raise self._truncated_array(text, at)
            line = text.line(at)
            found = text.decode(at)
            if isinstance(found, Fault):
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

    def _truncated_array(self, text: Text, at: int) -> BadInput:
        return BadInput(
            self.name, text.line(at), "ends inside the top-level array: the file is truncated"
        )

    def _after_array(self, text: Text, at: int) -> Iterator[tuple[Any, int]]:
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
