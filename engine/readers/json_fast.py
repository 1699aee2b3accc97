"""The fast way through plain NDJSON: pyarrow's threaded JSON reader, giving exactly what the
record-by-record reader (engine.readers.json) gives, or nothing.

A chunk of whole lines is read by pyarrow, and its result is taken only when it cannot differ
from the strict reader's: one object on every line (no blank lines), no field with objects or
arrays inside arrays, nesting within the limit, and no two fields that flatten to one name.
Everything pyarrow refuses (NaN is not among those: see below) sends the chunk to the strict
reader, which then names the line and the reason: invalid JSON, duplicate keys, lone
surrogates, a value that is an object in one record and a number in the next, mixed arrays...

Numbers stay exact: a field pyarrow reads as a float is read again as a decimal (pyarrow
converts decimals from the number's text, and refuses one with more digits than the decimal
holds, or NaN), so a float's text never passes through a double. Strings that look like times
are read again as strings. What was learnt about the fields is kept for the next chunks, so most
chunks are read once.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from engine.readers.json_records import shortest_number
from engine.readers.rows import LINE

EXACT = pa.decimal256(40, 18)
"""How floats are read: up to 22 digits before the point and 18 after; a number with more is
refused by pyarrow and goes to the strict reader."""
_EXACT_MAX = pa.scalar(Decimal("9" * 22 + "." + "9" * 18), EXACT)
"""pyarrow does not always refuse a number too large for the decimal: it may wrap it around to
a wrong value, which then lands beyond the decimal's precision (|v| > _EXACT_MAX) with a
probability of 1 - 10^-36 (measured: 1,623 of 20,000 random numbers wrapped, all beyond it).
A value beyond it sends the chunk to the strict reader."""
_SMALL = pa.scalar(Decimal("0.00001"), EXACT)
_BLOCK = 4 << 20
_LIST = pa.list_(pa.string())


class _NotPlain(Exception):
    """The chunk needs the strict reader."""


def _exact(kind: pa.DataType) -> tuple[pa.DataType, bool]:
    """The type to read a field as, and whether it differs from what pyarrow inferred."""
    if pa.types.is_floating(kind):
        return EXACT, True
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return pa.string(), True
    if pa.types.is_struct(kind):
        children = [(kind.field(i), *_exact(kind.field(i).type)) for i in range(kind.num_fields)]
        changed = any(c for _, _, c in children)
        return pa.struct([pa.field(f.name, t) for f, t, _ in children]), changed
    if pa.types.is_list(kind):
        item, changed = _exact(kind.value_type)
        return pa.list_(item), changed
    return kind, False


class FastChunks:
    """Reads chunks of NDJSON lines for one file (`parse`, in file order, then `convert`),
    learning its fields' types as it goes."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self._hints: dict[str, pa.DataType] = {}
        self._order: dict[str, int] = {}
        """Fields by first appearance: pyarrow puts the fields it is told about first."""

    def parse(self, chunk: bytes | bytearray, lines: int) -> pa.Table | None:
        """pyarrow's reading of a chunk of `lines` lines, or None if it cannot be used. Chunks
        are parsed in file order (what is learnt of the fields carries on), and only those
        that `plain` passed."""
        try:
            table = self._parse(chunk)
        except (_NotPlain, pa.ArrowException):
            return None
        if table.num_rows != lines:
            return None  # a blank line, or two objects on one line: lines would be wrong
        return table

    def convert(self, table: pa.Table, first_line: int) -> list[pa.RecordBatch] | None:
        """A parsed chunk as batches of text fields and `_line` (one a block pyarrow read:
        its columns are not copied into one), or None if it cannot be."""
        import numpy as np

        batches = []
        line = first_line
        try:
            for part in table.to_batches():
                columns: dict[str, pa.Array] = {}
                for name, values in zip(part.schema.names, part.columns, strict=True):
                    self._flatten(name, values, 1, columns)
                lines = np.arange(line, line + part.num_rows, dtype=np.int64)
                line += part.num_rows
                batches.append(
                    pa.RecordBatch.from_arrays(
                        [*columns.values(), pa.array(lines)], names=[*columns, LINE]
                    )
                )
        except (_NotPlain, pa.ArrowException):
            # pyarrow has its own corners (a list of nulls cannot always be combined): the
            # strict reader reads what the fast way cannot.
            return None
        return batches

    def _parse(self, chunk: bytes | bytearray) -> pa.Table:
        for _ in range(2):
            try:
                table = pj.read_json(
                    pa.BufferReader(chunk),  # no copy, and no calls back into Python
                    read_options=pj.ReadOptions(block_size=_BLOCK),
                    parse_options=pj.ParseOptions(
                        explicit_schema=pa.schema(list(self._hints.items()))
                        if self._hints
                        else None,
                        unexpected_field_behavior="infer",
                        newlines_in_values=False,
                    ),
                )
            except (pa.ArrowException, ValueError):
                raise _NotPlain from None
            if _may_underflow(table, chunk):
                raise _NotPlain
            for name in table.column_names:
                self._order.setdefault(name, len(self._order))
            learnt = False
            for field in table.schema:
                exact, changed = _exact(field.type)
                if changed:
                    self._hints[field.name] = exact
                    learnt = True
            if not learnt:
                return table.select(sorted(table.column_names, key=self._order.__getitem__))
        raise _NotPlain

    def _flatten(self, name: str, values: pa.Array, depth: int, out: dict[str, pa.Array]) -> None:
        kind = values.type
        if pa.types.is_struct(kind):
            if depth + 1 > self.max_depth:
                raise _NotPlain
            children = values.flatten()  # a null struct's children come out null
            for i in range(kind.num_fields):
                child = kind.field(i)
                self._flatten(
                    f"{name}.{child.name}",
                    children[i],
                    depth + 1,
                    out,
                )
            return
        if name in out:
            raise _NotPlain  # a key with a dot met a nested object of the same name
        if pa.types.is_list(kind):
            item = kind.value_type
            if not (_scalar(item) or pa.types.is_null(item)):
                raise _NotPlain  # objects or arrays in an array: kept as JSON text
            offsets = pc.subtract(values.offsets, values.offsets[0])
            items = _text(values.flatten())
            out[name] = pa.ListArray.from_arrays(offsets, items, mask=values.is_null()).cast(_LIST)
            return
        if pa.types.is_null(kind):
            return  # null is no value: it makes no field
        if not _scalar(kind):
            raise _NotPlain
        out[name] = _text(values)


_WINDOW = 8 << 10


def plain(chunk: bytes | bytearray) -> bool:
    """Whether pyarrow may be given a chunk at all: it starts with an object, and has neither
    a line of 16 KiB or more nor a number with a negative exponent of six digits or more."""
    starts = _OBJECT.match(chunk) is not None
    return starts and _short_lines(chunk) and not _tiny_exponent(chunk)


_OBJECT = re.compile(rb"[ \t\r\n]*\{")


def _as_text(chunk: bytes | bytearray) -> pa.Array:
    """The chunk as one Arrow binary value (no copy), for RE2's searches."""
    offsets = pa.array([0, len(chunk)], pa.int64()).buffers()[1]
    return pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(chunk)])


def _may_underflow(table: pa.Table, chunk: bytes | bytearray) -> bool:
    """Whether a number read as 0 may have been written with a negative exponent: pyarrow's
    decimal conversion turns some into 0 without an error (1.5171250727361972e-239 reads as
    0, though 1e-239 is refused), and a float can underflow to 0. Only chunks with a zero are
    searched, for a digit before `e-` (a case-blind search for `e-` first, about 2.5 ms for 8
    MiB)."""
    if not any(_has_zero(chunk_) for column in table.columns for chunk_ in column.chunks):
        return False
    text = _as_text(chunk)
    if not pc.match_substring(text, "e-", ignore_case=True)[0].as_py():
        return False
    return bool(pc.match_substring_regex(text, "[0-9][eE]-")[0].as_py())


def _has_zero(values: pa.Array) -> bool:
    kind = values.type
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return bool(pc.any(pc.equal(values, pa.scalar(0, kind))).as_py())
    if pa.types.is_struct(kind):
        return any(_has_zero(child) for child in values.flatten())
    if pa.types.is_list(kind):
        return _has_zero(values.flatten())
    return False


def _tiny_exponent(chunk: bytes | bytearray) -> bool:
    """Whether a number may have a negative exponent of six digits or more (`1e-3000000`):
    pyarrow's conversion of one to a decimal crashes the process (seen from about e-2000000;
    e-1000000 is refused cleanly). Positive ones it refuses as too large for a double.
    RE2 runs through the chunk at about 4 GB/s, skipping from one '-' to the next; the exact
    pattern is only looked for when the first finds something."""
    text = _as_text(chunk)
    if not pc.match_substring_regex(text, "-[0-9]{6}")[0].as_py():
        return False
    return bool(pc.match_substring_regex(text, "[eE]-[0-9]{6}")[0].as_py())


def _short_lines(chunk: bytes | bytearray) -> bool:
    """Whether every line is shorter than 16 KiB (every 8 KiB window holds a line break).

    pyarrow's reader crashes the process on some 30,000 levels of nesting, and a line that
    short cannot nest 8,000 deep: longer lines are left to the strict reader.
    """
    return all(
        chunk.find(b"\n", start, start + _WINDOW) >= 0
        for start in range(0, len(chunk) - _WINDOW, _WINDOW)
    )


def _scalar(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
    )


def _text(values: pa.Array) -> pa.Array:
    """Scalars as the strict reader writes them."""
    kind = values.type
    if pa.types.is_string(kind):
        return values
    if pa.types.is_null(kind):
        return pa.nulls(len(values), pa.string())
    if pa.types.is_decimal(kind):
        return _decimal_text(values)
    return values.cast(pa.string())  # integers: their digits; booleans: true / false


def _decimal_text(values: pa.Array) -> pa.Array:
    """Decimals in plain notation without trailing fractional zeros; zero as 0."""
    size = pc.abs(values)
    if pc.any(pc.greater(size, _EXACT_MAX)).as_py():
        raise _NotPlain
    text = values.cast(pa.string())
    text = pc.ascii_rtrim(pc.ascii_rtrim(text, "0"), ".")
    zero = pc.equal(values, pa.scalar(0, values.type))
    text = pc.if_else(zero, "0", text)  # Arrow writes it 0E-18
    # Arrow writes numbers below 10^-6 in scientific notation (1.0E-7): those below 10^-5
    # are written here one by one (rare).
    small = pc.and_(pc.less(size, _SMALL), pc.invert(zero))
    if pc.any(small).as_py():
        shown: list[Any] = text.to_pylist()
        for at, flag in enumerate(small.to_pylist()):
            if flag:
                shown[at] = shortest_number(str(values[at].as_py()))
        text = pa.array(shown, pa.string())
    return text
