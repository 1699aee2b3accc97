"""Encoders: rows of profiles in, bytes of a text format out, a batch at a time.

- CSV: a header line (unless `headers` is off), then one line per user; fields as
  engine.writers.cells writes them; RFC 4180 quoting by Arrow's writer: every text cell (and
  header name) is quoted, quotes doubled; numbers, booleans and nulls are not; lines end with
  `\\n`.
- JSON: newline-delimited, one user per line; lists as arrays, maps as objects, times as
  ISO 8601 UTC text like the CSV cells, numbers and booleans as JSON numbers and booleans.

Both are Polars' writers over vectorized expressions: no per-row Python. What they return is
a view of the encoded bytes (no copy), valid until it is dropped.
"""

from __future__ import annotations

import io
from typing import Protocol

import polars as pl
import pyarrow as pa

from engine.writers.cells import CsvCells, iso


class Encoder(Protocol):
    header: bytes
    """What each file starts with (empty for formats without a header)."""

    def encode(self, rows: pa.RecordBatch) -> memoryview:
        """The rows, encoded."""
        ...


class CsvEncoder:
    def __init__(self, schema: pa.Schema, *, headers: bool = True, formula_guard: bool = True):
        self._cells = CsvCells(formula_guard=formula_guard)
        empty = pa.table({name: pa.array([], pa.string()) for name in schema.names})
        self.header = _csv(empty, header=True).to_pybytes() if headers else b""

    def encode(self, rows: pa.RecordBatch) -> memoryview:
        return memoryview(_csv(self._cells.batch(rows), header=False))


def _csv(rows: pa.RecordBatch | pa.Table, *, header: bool) -> pa.Buffer:
    """RFC 4180, by Arrow's writer: text quoted (quotes doubled), numbers and nulls not."""
    import pyarrow.csv as pcsv

    out = pa.BufferOutputStream()
    options = pcsv.WriteOptions(include_header=header, quoting_style="needed")
    pcsv.write_csv(rows, out, options)
    return out.getvalue()


class JsonEncoder:
    header = b""

    def encode(self, rows: pa.RecordBatch) -> memoryview:
        timed = [
            iso(column)
            if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type)
            else column
            for column in rows.columns
        ]
        out = io.BytesIO()
        frame = pl.DataFrame(pa.RecordBatch.from_arrays(timed, names=rows.schema.names))
        frame.write_ndjson(out)
        return out.getbuffer()
