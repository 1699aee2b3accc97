"""What happens to an import's rows between the reader and the store: the bad-row policy
(`Rejections`, which also stages the rejected rows as Parquet), the event time (`_ts` from a
column), and the steps' hooks (crash points, progress, a check once every row is read)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.crash import crash_point
from engine.errors import LimitExceeded
from engine.readers.rows import LINE, BadRow
from engine.store_rows import TS
from engine.timestamps import UTC_US, TimestampRule, parse

REJECTED_SCHEMA = pa.schema([(LINE, pa.int64()), ("reason", pa.string()), ("text", pa.string())])


class Rejections:
    """The bad-row policy: fail at the first bad row, or quarantine up to `max_rejected`."""

    def __init__(self, name: str, policy: str, max_rejected: int | float) -> None:
        self.name = name
        self.quarantine = policy == "quarantine"
        self.max_rejected = max_rejected
        self.rows: list[BadRow] = []

    @property
    def handler(self) -> Callable[[BadRow], None] | None:
        """What a reader calls with a bad row; None makes the reader fail at the first one."""
        return self.add if self.quarantine else None

    def add(self, row: BadRow) -> None:
        if not self.quarantine:
            raise row.error(self.name)
        self.rows.append(row)
        limit = self.max_rejected
        if isinstance(limit, int) and len(self.rows) > limit:
            raise LimitExceeded(self._too_many(f"more than {limit:,} rows were rejected"))

    def check(self, total: int) -> None:
        """At the end of the object, before anything is committed: `total` rows were read."""
        limit = self.max_rejected
        if isinstance(limit, float) and total and len(self.rows) / total > limit:
            share = len(self.rows) / total
            raise LimitExceeded(self._too_many(f"{share:.2%} of the rows were rejected"))

    def _too_many(self, what: str) -> str:
        first = self.rows[0]
        return (
            f"{self.name}: {what} (max_rejected = {self.max_rejected}); nothing was imported. "
            f"The first, line {first.line}: {first.reason}. Fix the file or raise max_rejected"
        )

    def stage(self, path: Path) -> None:
        """Write the rejected rows next to the job's snapshots, before the stream commit."""
        if not self.rows:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        batch = pa.record_batch(
            [
                pa.array([r.line for r in self.rows], pa.int64()),
                pa.array([r.reason for r in self.rows], pa.string()),
                pa.array([r.text for r in self.rows], pa.string()),
            ],
            schema=REJECTED_SCHEMA,
        )
        pq.write_table(pa.Table.from_batches([batch]), path)


def crashing(batches: Iterator[pa.RecordBatch], stage: str) -> Iterator[pa.RecordBatch]:
    """The batches, with the crash point `stage` after the first."""
    for batch in batches:
        yield batch
        crash_point(stage)


def with_event_time(
    batches: Iterator[pa.RecordBatch],
    rule: TimestampRule | None,
    rejections: Rejections,
    *,
    keep_column: bool,
) -> Iterator[pa.RecordBatch]:
    """Add `_ts` from the rule's column; rows whose time does not parse are bad rows."""
    if rule is None:
        yield from batches
        return
    for batch in batches:
        values = batch.column(rule.column)
        times, bad = parse(values, rule)
        if bad:
            lines = batch.column(LINE)
            for at in bad:
                value = values[at].as_py()
                rejections.add(
                    BadRow(
                        int(lines[at].as_py()),
                        f"field '{rule.column}' is not a timestamp: {value!r}"
                        + (f" (format {rule.format})" if rule.format else ""),
                        str(value),
                    )
                )
            keep = pc.invert(pc.is_null(times))
            batch, times = batch.filter(keep), times.filter(keep)
        if not keep_column:
            batch = batch.drop_columns([rule.column])
        yield batch.append_column(pa.field(TS, times.type), times)


def event_time_schema(
    schema: pa.Schema, rule: TimestampRule | None, keep_column: bool
) -> pa.Schema:
    if rule is None:
        return schema
    if not keep_column:
        schema = schema.remove(schema.get_field_index(rule.column))
    return schema.append(pa.field(TS, UTC_US))


def progress_every(
    batches: Iterator[pa.RecordBatch], report: Callable[[], None] | None
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if report is not None:
            report()
        yield batch


def after_all(
    batches: Iterator[pa.RecordBatch], check: Callable[[], Any]
) -> Iterator[pa.RecordBatch]:
    """Run `check` when the batches are done, before the consumer can commit them."""
    yield from batches
    check()


class RowReader(Protocol):
    """What `run_import` needs of a format's reader."""

    header: list[str]
    schema: pa.Schema
    rows_read: int
    rows_bad: int
    rows_blank: int

    @property
    def bytes_read(self) -> int: ...

    def batches(self) -> Iterator[pa.RecordBatch]: ...

    def close(self) -> None: ...
