"""How an export writes a profile field as one CSV cell: Arrow kernels over whole columns (and
over the flat items of lists and maps); no per-row Python.

- Text as it is; numbers as Arrow's CSV writer writes them (`1.5`, `-3`); booleans `true` /
  `false`; times ISO 8601 in UTC (`2026-11-01T09:00:00Z`; a fraction of a second in the time's
  unit when it is not zero); dates `2026-11-01`; a struct as a JSON object; null empty.
- A list: its items, each written as above, percent-encoded, joined by `&`.
- A map: `key=value` pairs, key and value percent-encoded, joined by `&`.
- Percent-encoding turns `%` into `%25`, `&` into `%26` and `=` into `%3D`, so that `split_list`
  and `split_map` give back exactly what was written. An empty list, a null list and a list
  holding one empty text are all an empty cell; a null item or map value is written empty.
- The formula guard (on by default in exports) puts `'` before a text cell that starts with
  `=`, `+`, `-`, `@`, a tab or a carriage return, so that a spreadsheet does not run it; cells
  of number fields, and text that is a plain number (`-5`, `+1.5e3`), are left as they are.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import numpy as np
import polars as pl
import pyarrow as pa

JOIN = "&"
_ENCODE = (("%", "%25"), ("&", "%26"), ("=", "%3D"))
_RISKY = np.zeros(256, dtype=bool)
_RISKY[[ord(c) for c in "=+-@\t\r"]] = True
"""The first bytes that make a cell risky (all ASCII: a UTF-8 text starts with them only when
its first character is one)."""
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


class CsvCells:
    """Writes record batches as CSV cells: Arrow kernels over whole columns, no per-row work.

    Lists and maps become text over their flat items (percent-encoded only when some item
    holds `%`, `&` or `=`, then joined by `&`); times become ISO text; numbers and booleans
    stay as they are for the CSV writer. The formula guard runs only on the text columns with
    a risky first character in this batch (most have none).
    """

    def __init__(self, *, formula_guard: bool = True) -> None:
        self.formula_guard = formula_guard

    def batch(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        columns = [self._cell(column) for column in rows.columns]
        return pa.RecordBatch.from_arrays(columns, names=rows.schema.names)

    def _cell(self, column: pa.Array) -> pa.Array:
        import pyarrow.compute as pc

        kind = column.type
        if _nested(kind):
            written = pc.binary_join(_items(column), JOIN)
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            return column
        elif pa.types.is_boolean(kind):
            return column  # the CSV writer writes true / false
        elif pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            return iso(column)
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            written = column.cast(pa.string())
        else:
            written = _polars_text(column)
        return _guarded(written) if self.formula_guard else written


def iso(column: pa.Array) -> pa.Array:
    """Times as ISO 8601 in UTC (`2026-11-01T09:00:00Z`, `2026-11-01T09:00:00.250000Z`: the
    fraction in the time's unit, when it is not zero), dates as `2026-11-01`."""
    import pyarrow.compute as pc

    if pa.types.is_date(column.type):
        return pc.cast(column, pa.string())
    unit = column.type.unit
    naive = column.cast(pa.timestamp(unit))  # the same instants, in UTC, without the zone
    written = pc.replace_substring(pc.cast(naive, pa.string()), " ", "T", max_replacements=1)
    written = pc.binary_join_element_wise(written, pa.scalar("Z"), "")
    if unit == "s":
        return written
    zero = "." + "0" * {"ms": 3, "us": 6, "ns": 9}[unit]
    return pc.replace_substring(written, zero + "Z", "Z")


def _polars_text(column: pa.Array) -> pa.Array:
    """Any other type as text: a struct as a JSON object, the rest as Polars casts it."""
    series = pl.Series("value", column)
    if isinstance(series.dtype, pl.Struct):
        series = series.struct.json_encode()
    return series.cast(pl.String).to_arrow().cast(pa.string())


def _first_bytes(written: pa.Array) -> Any:
    """The first byte of each text (0 for an empty or null one), from Arrow's buffers."""
    import numpy as np

    first = np.zeros(len(written), dtype=np.uint8)
    _, offsets_buffer, data = written.buffers()
    if data is None or len(written) == 0:
        return first
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[
        written.offset : written.offset + len(written) + 1
    ]
    filled = offsets[1:] > offsets[:-1]
    first[filled] = np.frombuffer(data, dtype=np.uint8)[offsets[:-1][filled]]
    return first


def _guarded(written: pa.Array) -> pa.Array:
    """`'` before each risky cell that is not a number."""
    import pyarrow.compute as pc

    first = _first_bytes(written)
    if not _RISKY[first].any():
        return written
    risky = pc.and_(pa.array(_RISKY[first]), pc.invert(pc.match_substring_regex(written, _NUMBER)))
    quoted = pc.binary_join_element_wise(pa.scalar("'"), written, "")
    return pc.if_else(risky, quoted, written)


def _nested(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_map(kind))


def _items(column: pa.Array) -> pa.Array:
    """A list or map column as a list of text items (no per-row work: the flat items)."""
    import pyarrow.compute as pc

    listed = rebased(column)
    if pa.types.is_map(column.type):
        keys, values = listed.values.flatten()
        flat = pc.binary_join_element_wise(_items_text(keys), _items_text(values), "=")
    else:
        flat = _items_text(listed.values)
    return type(listed).from_arrays(listed.offsets, flat, mask=column.is_null())


def rebased(column: pa.Array) -> pa.ListArray | pa.LargeListArray:
    """A list or map column (a map as a list of key/value entries) whose offsets start at 0
    and whose values are exactly its items, however it was sliced."""
    import pyarrow.compute as pc

    offsets = column.offsets
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    items = column.values.slice(start, end - start)
    shifted = pc.subtract(offsets, pa.scalar(start, offsets.type))
    lists = pa.LargeListArray if pa.types.is_large_list(column.type) else pa.ListArray
    return lists.from_arrays(shifted, items, mask=column.is_null())


def _items_text(items: pa.Array) -> pa.Array:
    """List items as percent-encoded text; a null item is empty."""
    import pyarrow.compute as pc

    kind = items.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return pc.fill_null(pc.cast(items, pa.string()), "")  # nothing to encode
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return pc.fill_null(iso(items), "")
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        items = _polars_text(items)
    items = items.cast(pa.string())
    if _has_special(items):
        for raw, code in _ENCODE:
            items = pc.replace_substring(items, raw, code)
    return pc.fill_null(items, "")


def _has_special(items: pa.Array) -> bool:
    """Whether any text holds `%`, `&` or `=`: a scan of the character data (which may hold
    more than these items: then at worst they are encoded needlessly, which changes nothing)."""
    import numpy as np

    data = items.buffers()[2]
    if data is None:
        return False
    chars = np.frombuffer(data, dtype=np.uint8)
    return bool((chars == 37).any() or (chars == 38).any() or (chars == 61).any())


def split_list(written: str) -> list[str]:
    """The items of a list cell, decoded (an empty cell is an empty list)."""
    return [] if written == "" else [unquote(item) for item in written.split(JOIN)]


def split_map(written: str) -> dict[str, str]:
    """The entries of a map cell, decoded."""
    pairs = (item.split("=", 1) for item in ([] if written == "" else written.split(JOIN)))
    return {unquote(key): unquote(value) for key, value in pairs}
