"""Encoders: record batches of profiles in, bytes of a text format out, a batch at a time.

- CSV: a header line (unless `headers` is off), then one line per user; fields as
  engine.writers.cells writes them; RFC 4180 quoting (a cell with a comma, a quote or a line
  break is quoted, quotes doubled); lines end with `\\n`.
- JSON: newline-delimited, one user per line; lists as arrays, maps as objects, times as
  ISO 8601 UTC text like the CSV cells, numbers and booleans as JSON numbers and booleans.

Both are Polars' writers over vectorized expressions: no per-row Python.
"""

from __future__ import annotations

from typing import Protocol

import polars as pl
import pyarrow as pa

from engine.writers.cells import cells, text


class Encoder(Protocol):
    header: bytes
    """What each file starts with (empty for formats without a header)."""

    def encode(self, batch: pa.RecordBatch) -> bytes:
        """The batch's rows, encoded."""
        ...


class CsvEncoder:
    def __init__(self, schema: pa.Schema, *, headers: bool = True, formula_guard: bool = True):
        frame = pl.DataFrame(schema.empty_table())
        self._cells = cells(frame.schema, formula_guard=formula_guard)
        self.header = (
            frame.select(self._cells).write_csv(include_header=True).encode() if headers else b""
        )

    def encode(self, batch: pa.RecordBatch) -> bytes:
        frame = pl.DataFrame(batch).select(self._cells)
        return frame.write_csv(include_header=False).encode()


class JsonEncoder:
    header = b""

    def __init__(self, schema: pa.Schema) -> None:
        frame = pl.DataFrame(schema.empty_table())
        self._columns = [
            text(pl.col(name), kind).alias(name)
            if isinstance(kind, pl.Datetime | pl.Date)
            else pl.col(name)
            for name, kind in frame.schema.items()
        ]

    def encode(self, batch: pa.RecordBatch) -> bytes:
        return pl.DataFrame(batch).select(self._columns).write_ndjson().encode()
