"""Encoders: rows of profiles in, bytes of a text format out, a batch at a time.

- CSV: a header line (unless `headers` is off), then one line per user; fields as
  engine.writers.cells writes them; RFC 4180 quoting (a cell with a comma, a quote or a line
  break is quoted, quotes doubled); lines end with `\\n`.
- JSON: newline-delimited, one user per line; lists as arrays, maps as objects, times as
  ISO 8601 UTC text like the CSV cells, numbers and booleans as JSON numbers and booleans.

Both are Polars' writers over vectorized expressions: no per-row Python. What they return is
a view of the encoded bytes (no copy), valid until it is dropped.
"""

from __future__ import annotations

import io
from typing import Protocol, TypeAlias

import polars as pl
import pyarrow as pa

from engine.writers.cells import cells, text

Rows: TypeAlias = pa.RecordBatch | pl.DataFrame


class Encoder(Protocol):
    header: bytes
    """What each file starts with (empty for formats without a header)."""

    def encode(self, rows: Rows) -> memoryview:
        """The rows, encoded."""
        ...


def _frame(rows: Rows) -> pl.DataFrame:
    return rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows)


def _schema(schema: pa.Schema | pl.Schema) -> pl.Schema:
    if isinstance(schema, pa.Schema):
        return pl.DataFrame(schema.empty_table()).schema
    return schema


class CsvEncoder:
    def __init__(
        self, schema: pa.Schema | pl.Schema, *, headers: bool = True, formula_guard: bool = True
    ):
        frame = pl.DataFrame(schema=_schema(schema))
        self._cells = cells(frame.schema, formula_guard=formula_guard)
        self.header = (
            frame.select(self._cells).write_csv(include_header=True).encode() if headers else b""
        )

    def encode(self, rows: Rows) -> memoryview:
        out = io.BytesIO()
        _frame(rows).select(self._cells).write_csv(out, include_header=False)
        return out.getbuffer()


class JsonEncoder:
    header = b""

    def __init__(self, schema: pa.Schema | pl.Schema) -> None:
        self._columns = [
            text(pl.col(name), kind).alias(name)
            if isinstance(kind, pl.Datetime | pl.Date)
            else pl.col(name)
            for name, kind in _schema(schema).items()
        ]

    def encode(self, rows: Rows) -> memoryview:
        out = io.BytesIO()
        _frame(rows).select(self._columns).write_ndjson(out)
        return out.getbuffer()
