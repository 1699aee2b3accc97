"""How the store shapes the rows it appends: the fields the engine adds to every event, the
checks on raw fields, and a reader that counts rows and keeps its source's error."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import StoreError
from engine.readers.rows import LINE
from engine.state import now


@dataclass(frozen=True)
class Source:
    """The object a batch of rows came from: its URL or key and its version (ETag)."""

    key: str
    etag: str | None = None


TS = "_ts"
INGESTED_AT = "_ingested_at"
SOURCE = "_source"
JOB = "_job"
TIMESTAMP = pa.timestamp("us", tz="UTC")


def row_count(table: Any) -> int:
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0
    return int(pc.sum(actions.column("num_records")).as_py() or 0)


def as_reader(batches: pa.RecordBatchReader | Iterable[pa.RecordBatch]) -> pa.RecordBatchReader:
    if isinstance(batches, pa.RecordBatchReader):
        return batches
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise StoreError("nothing to append: the batches are empty and carry no schema")

    def chained() -> Iterator[pa.RecordBatch]:
        yield first
        yield from iterator

    return pa.RecordBatchReader.from_batches(first.schema, chained())


def with_engine_fields(
    reader: pa.RecordBatchReader, *, source: Source, job: str
) -> pa.RecordBatchReader:
    schema = reader.schema
    taken = [name for name in (INGESTED_AT, SOURCE, JOB) if name in schema.names]
    if taken:
        raise StoreError(
            f"the rows from {source.key} already have the field(s) {', '.join(taken)}, which "
            "the store sets: rename them in the import"
        )
    has_ts = TS in schema.names
    if has_ts and schema.field(TS).type != TIMESTAMP:
        raise StoreError(f"field _ts must be {TIMESTAMP}, got {schema.field(TS).type}")
    for field in schema:
        if field.name not in (TS, LINE) and not is_text(field.type):
            raise StoreError(
                f"field '{field.name}' from {source.key} is {field.type}: raw event fields are "
                "stored as text (string or list<string>), so stream schemas only grow; cast it "
                "to string in the reader"
            )
    if LINE in schema.names and not pa.types.is_integer(schema.field(LINE).type):
        raise StoreError(f"field _line must be an integer, got {schema.field(LINE).type}")
    out_fields = [f for f in schema if f.name != TS]
    out_schema = pa.schema(
        [
            pa.field(TS, TIMESTAMP),
            *out_fields,
            pa.field(INGESTED_AT, TIMESTAMP),
            # One value per append: dictionary-encoded, so the writer's buffers hold it once
            # (Delta stores it as a plain string column).
            pa.field(SOURCE, _CONSTANT_TEXT),
            pa.field(JOB, _CONSTANT_TEXT),
        ]
    )
    ingested: datetime = now()

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            n = batch.num_rows
            stamp = pa.repeat(pa.scalar(ingested, TIMESTAMP), n)
            yield pa.record_batch(
                [
                    batch.column(TS) if has_ts else stamp,
                    *(batch.column(f.name) for f in out_fields),
                    stamp,
                    constant_text(source.key, n),
                    constant_text(job, n),
                ],
                schema=out_schema,
            )

    return pa.RecordBatchReader.from_batches(out_schema, batches())


_CONSTANT_TEXT = pa.dictionary(pa.int32(), pa.string())


def constant_text(value: str, rows: int) -> pa.DictionaryArray:
    indices = pa.repeat(pa.scalar(0, pa.int32()), rows)
    return pa.DictionaryArray.from_arrays(indices, pa.array([value], pa.string()))


def is_text(kind: pa.DataType) -> bool:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return is_text(kind.value_type)
    return False


class CountingReader:
    """Counts rows as the Delta writer pulls them."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self._source = reader
        self.rows = 0
        self.error: BaseException | None = None
        """What the source raised: the Delta writer reports it only as text in its own error."""

    def reader(self) -> pa.RecordBatchReader:
        def counted() -> Iterator[pa.RecordBatch]:
            try:
                for batch in self._source:
                    self.rows += batch.num_rows
                    yield batch
            except BaseException as exc:
                self.error = exc
                raise

        return pa.RecordBatchReader.from_batches(self._source.schema, counted())

    @contextmanager
    def failing_first(self) -> Iterator[None]:
        """When the rows failed (so nothing was committed), raise their own error, as it is,
        in place of the writer's, which carries it only as text."""
        try:
            yield
        except BaseException as exc:
            if self.error is not None and self.error is not exc:
                raise self.error from None
            raise


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
