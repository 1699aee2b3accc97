"""How an export writes a profile field as one CSV cell: Polars expressions, no per-row Python.

- Text as it is; numbers in Polars' shortest form; booleans `true` / `false`; times ISO 8601 in
  UTC (`2026-11-01T09:00:00Z`, fractions of a second only when there are some); null empty.
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

import polars as pl

JOIN = "&"
_ENCODE = (("%", "%25"), ("&", "%26"), ("=", "%3D"))
_FORMULA = r"^[=+\-@\t\r]"
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def text(value: pl.Expr, kind: Any) -> pl.Expr:
    """A scalar field as text (null stays null)."""
    if kind == pl.Boolean:
        return pl.when(value).then(pl.lit("true")).when(~value).then(pl.lit("false"))
    if isinstance(kind, pl.Datetime):
        utc = (
            value.dt.convert_time_zone("UTC")
            if kind.time_zone
            else value.dt.replace_time_zone("UTC")
        )
        return utc.dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")
    if kind == pl.Date:
        return value.dt.strftime("%Y-%m-%d")
    if isinstance(kind, pl.Struct):
        return value.struct.json_encode()
    return value.cast(pl.String)


def _encoded(value: pl.Expr) -> pl.Expr:
    for raw, code in _ENCODE:
        value = value.str.replace_all(raw, code, literal=True)
    return value


def cell(name: str, kind: pl.DataType, *, formula_guard: bool = True) -> pl.Expr:
    """The CSV cell of the field `name` (of type `kind`)."""
    column = pl.col(name)
    if isinstance(kind, pl.List):
        item = _encoded(text(pl.element(), kind.inner)).fill_null("")
        written = column.list.eval(item).list.join(JOIN)
    elif isinstance(kind, pl.Map):
        entry = pl.element().struct
        pair = (
            _encoded(text(entry.field("key"), kind.key))
            + pl.lit("=")
            + _encoded(text(entry.field("value"), kind.value)).fill_null("")
        )
        written = column.map.entries().list.eval(pair).list.join(JOIN)
    else:
        written = text(column, kind)
        if kind.is_numeric():
            return written.alias(name)
    if formula_guard:
        risky = written.str.contains(_FORMULA) & ~written.str.contains(_NUMBER)
        written = pl.when(risky).then(pl.lit("'") + written).otherwise(written)
    return written.alias(name)


def cells(schema: Any, *, formula_guard: bool = True) -> list[pl.Expr]:
    """Every field of a Polars schema as CSV cells, in order."""
    return [cell(name, kind, formula_guard=formula_guard) for name, kind in schema.items()]


def split_list(written: str) -> list[str]:
    """The items of a list cell, decoded (an empty cell is an empty list)."""
    return [] if written == "" else [unquote(item) for item in written.split(JOIN)]


def split_map(written: str) -> dict[str, str]:
    """The entries of a map cell, decoded."""
    pairs = (item.split("=", 1) for item in ([] if written == "" else written.split(JOIN)))
    return {unquote(key): unquote(value) for key, value in pairs}
