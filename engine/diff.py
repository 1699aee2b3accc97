"""Diff imports: keep only the rows that were not in the previous file of the same job.

The comparison is an anti-join on 128-bit fingerprints (engine.fingerprint) with multiset
semantics: a row whose fingerprint the previous file lacks is new, and rows that repeat are
numbered within their group of identical rows, a number beyond the group's count in the
previous file making the row new. So a row present twice now and once before is imported once.

A job's snapshot (`<folder>/current.parquet`) holds the fingerprints of its previous file. A run
fingerprints the new file (writing each row's fingerprint and line, 24 bytes a row, to a pending
snapshot next to the current one) while staging its rows in a compressed Arrow stream, and gives
back the staged rows whose lines are new. The pending snapshot becomes current only after the
stream commit, so a crash leaves the old one in place. Small files are compared in memory in
Polars; large ones in DuckDB, which spills to the store's tmp folder past its memory limit:
memory stays bounded however large the files.

This is the only module that talks to DuckDB.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from engine.errors import StoreError
from engine.fingerprint import FINGERPRINT_SCHEMA, SCHEME, fingerprints
from engine.readers.rows import LINE

CURRENT = "current.parquet"
MADE = "lakeport_fingerprint"
IN_MEMORY_ROWS = 4_000_000
"""Fingerprints (this file's and the previous one's) compared in memory, in Polars: 24 bytes
each, so at most about 100 MB and its hash tables; more go to DuckDB, which spills."""
GROUP = 256 * 1024
"""Rows per row group of a snapshot (24 bytes a row)."""


class NewLines:
    """Which rows of a file are new: their `_line` numbers (ascending), or all of them."""

    def __init__(self, lines: pa.Array | None, rows: int) -> None:
        self.rows = rows
        """Rows fingerprinted (the whole file)."""
        self.lines = lines
        """The new rows' lines, ascending; None when every row is new."""
        self.count = rows if lines is None else len(lines)
        """Rows that are new."""

    def keep(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The new rows of a batch whose `_line`s ascend, as the readers give them."""
        if self.lines is None or batch.num_rows == 0:
            return batch
        lines = batch.column(LINE)
        # Only the new lines within this batch's range are looked up: a membership test
        # against all of them would build a hash table of the whole file for every batch.
        start = _search(self.lines, lines[0].as_py(), right=False)
        stop = _search(self.lines, lines[-1].as_py(), right=True)
        return batch.filter(pc.is_in(lines, value_set=self.lines.slice(start, stop - start)))


def _search(values: pa.Array, target: int, *, right: bool) -> int:
    """Where `target` goes in the ascending `values` (bisect left or right)."""
    low, high = 0, len(values)
    while low < high:
        middle = (low + high) // 2
        value = values[middle].as_py()
        if value < target or (right and value == target):
            low = middle + 1
        else:
            high = middle
    return low


class Snapshots:
    """The diff snapshots of one job, in a local folder."""

    def __init__(
        self,
        folder: Path,
        *,
        spill: Path,
        memory_limit: str = "256MB",
        in_memory_rows: int = IN_MEMORY_ROWS,
    ) -> None:
        self.folder = folder
        self.spill = spill
        self.memory_limit = memory_limit
        self.in_memory_rows = in_memory_rows
        """Up to this many fingerprints (both files), the comparison runs in memory."""
        self.fingerprinted = 0
        """Rows of the last file given to `diff`, before the diff."""

    @property
    def current(self) -> Path:
        return self.folder / CURRENT

    def exists(self) -> bool:
        return self.current.is_file()

    def pending(self, run_id: str) -> tuple[Path, Path]:
        """The run's staged rejected rows and its pending snapshot."""
        return (
            self.folder / f"pending-{run_id}.rejected.parquet",
            self.folder / f"pending-{run_id}.snapshot.parquet",
        )

    def has_pending(self, run_id: str) -> bool:
        return self.pending(run_id)[1].is_file()

    def new_lines(
        self, rows: pa.RecordBatchReader, fields: Sequence[str], run_id: str, *, first: bool
    ) -> NewLines:
        """Fingerprint a file's rows and find those not in the current snapshot.

        Only the fingerprint and `_line` of each row are kept (24 bytes a row, spilled to disk
        past the memory limit): the caller reads the file again and keeps the lines returned.
        A pending snapshot of this file is written for `promote`. With `first`, no snapshot is
        expected and every row is new.
        """
        if not first and not self.exists():
            raise StoreError(
                f"the diff snapshot {self.current} is missing: the previous file's rows are "
                "unknown, so the changed rows cannot be told apart; run with --reset-diff to "
                "import the whole file and start a new snapshot"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        snapshot = self.pending(run_id)[1]
        snapshot.unlink(missing_ok=True)
        total = self._fingerprint(rows, fields, snapshot)
        if first:
            return NewLines(None, total)
        self._check_comparable()
        try:
            if total + pq.ParquetFile(self.current).metadata.num_rows <= self.in_memory_rows:
                lines = _new_lines_in_memory(snapshot, self.current)
            else:
                lines = self._new_lines_spilling(snapshot)
        except Exception as exc:
            raise StoreError(
                f"the diff against {self.current} failed ({exc}): if the snapshot is damaged, "
                "run with --reset-diff to import the whole file and start a new one"
            ) from exc
        return NewLines(lines, total)

    def _new_lines_spilling(self, snapshot: Path) -> pa.Array:
        """The new lines, by DuckDB, which spills to disk past its memory limit.

        A row whose fingerprint was not in the previous file is new. Rows that repeat in this
        file (rare) are numbered within their group of identical rows, and a number beyond the
        group's count in the previous file makes the row new.
        """
        con = self._connect()
        try:
            now = f"read_parquet('{_sql_path(snapshot)}')"
            lines = con.sql(
                f"""
                WITH before AS (
                    SELECT hi, lo, count(*) AS n FROM read_parquet('{_sql_path(self.current)}')
                    GROUP BY hi, lo
                ), again AS (
                    SELECT hi, lo FROM {now} GROUP BY hi, lo HAVING count(*) > 1
                )
                SELECT _line FROM {now} c
                WHERE NOT EXISTS (SELECT 1 FROM before b WHERE b.hi = c.hi AND b.lo = c.lo)
                UNION ALL
                SELECT _line FROM (
                    SELECT c._line, b.n,
                           row_number() OVER (PARTITION BY c.hi, c.lo ORDER BY c._line) AS k
                    FROM {now} c
                    JOIN again a ON c.hi = a.hi AND c.lo = a.lo
                    JOIN before b ON c.hi = b.hi AND c.lo = b.lo
                ) WHERE k > n
                ORDER BY _line
                """
            ).to_arrow_table()
            column: pa.Array = lines.column(LINE).combine_chunks()
            return column
        finally:
            con.close()

    def _fingerprint(self, rows: pa.RecordBatchReader, fields: Sequence[str], to: Path) -> int:
        """Write each row's fingerprint and line to `to` (the pending snapshot); the rows."""
        made = json.dumps({"scheme": SCHEME, "fields": list(fields)})
        schema = FINGERPRINT_SCHEMA.append(pa.field(LINE, pa.int64())).with_metadata({MADE: made})
        total = 0
        # The fingerprints are random: compressing them, or looking for repeated values to
        # encode, would cost time and save nothing. The lines ascend: deltas pack them small.
        with pq.ParquetWriter(
            to,
            schema,
            compression={"hi": "none", "lo": "none", LINE: "zstd"},
            use_dictionary=False,
            write_statistics=False,
            column_encoding={LINE: "DELTA_BINARY_PACKED"},
        ) as writer:
            # Row groups of GROUP rows: one per batch would be too small to write and read.
            group: list[pa.RecordBatch] = []
            for batch in rows:
                prints = fingerprints(batch, fields)
                line = batch.column(LINE).cast(pa.int64())
                group.append(pa.RecordBatch.from_arrays([*prints.columns, line], schema=schema))
                total += batch.num_rows
                if sum(b.num_rows for b in group) >= GROUP:
                    writer.write_table(pa.Table.from_batches(group), row_group_size=GROUP * 2)
                    group = []
            if group or not total:
                writer.write_table(pa.Table.from_batches(group, schema), row_group_size=GROUP * 2)
        return total

    def _check_comparable(self) -> None:
        """The current snapshot fingerprints rows the same way as this run."""
        try:
            metadata = pq.read_schema(self.current).metadata or {}
        except (OSError, pa.ArrowInvalid) as exc:
            raise StoreError(
                f"the diff snapshot {self.current} cannot be read ({exc}); run once with "
                "--reset-diff to import the whole file and start a new snapshot"
            ) from exc
        made = json.loads(metadata.get(MADE.encode(), b"{}"))
        if made.get("scheme") != SCHEME:
            raise StoreError(
                f"the diff snapshot {self.current} was made by another version of lakeport, "
                "whose fingerprints cannot be compared with this one's; run once with "
                "--reset-diff to import the whole file and start a new snapshot"
            )

    def diff(
        self, rows: pa.RecordBatchReader, fields: Sequence[str], run_id: str, *, first: bool
    ) -> pa.RecordBatchReader:
        """The new rows of a file, reading the file once.

        While DuckDB fingerprints the rows, they are also staged, lz4-compressed, in an Arrow
        stream next to the snapshots; the new rows are then read back from there, so the
        object is neither parsed nor downloaded twice.
        """
        staged = self._staged_rows(run_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.discard(run_id)
        options = ipc.IpcWriteOptions(compression="lz4")
        with ipc.new_stream(str(staged), rows.schema, options=options) as writer:

            def tee() -> Iterator[pa.RecordBatch]:
                for batch in rows:
                    writer.write_batch(batch)
                    yield batch

            new = self.new_lines(
                pa.RecordBatchReader.from_batches(rows.schema, tee()), fields, run_id, first=first
            )
        self.fingerprinted = new.rows

        def kept() -> Iterator[pa.RecordBatch]:
            with pa.OSFile(str(staged)) as source:
                for batch in ipc.open_stream(source):
                    yield new.keep(batch)

        return pa.RecordBatchReader.from_batches(rows.schema, kept())

    def _staged_rows(self, run_id: str) -> Path:
        return self.folder / f"pending-{run_id}.rows.arrow"

    def promote(self, run_id: str) -> None:
        """After the stream commit: the pending snapshot becomes current."""
        snapshot = self.pending(run_id)[1]
        if snapshot.is_file():
            snapshot.replace(self.current)
        self._staged_rows(run_id).unlink(missing_ok=True)

    def discard(self, run_id: str) -> None:
        self.pending(run_id)[1].unlink(missing_ok=True)
        self._staged_rows(run_id).unlink(missing_ok=True)

    def _connect(self) -> Any:
        import duckdb

        self.spill.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        for setting in (
            "SET TimeZone = 'UTC'",
            f"SET temp_directory = '{_sql_path(self.spill)}'",
            f"SET memory_limit = '{self.memory_limit}'",
            "SET preserve_insertion_order = false",
            "SET enable_progress_bar = false",
        ):
            con.execute(setting).fetchall()
        return con


def _new_lines_in_memory(snapshot: Path, current: Path) -> pa.Array:
    """The new lines, in Polars: the same rule as `_new_lines_spilling`, and the same shape
    (an anti-join, and numbering only for the rows that repeat)."""
    import polars as pl

    key = ["hi", "lo"]
    before = pl.scan_parquet(current).group_by(key).agg(pl.len().alias("n"))
    now = pl.scan_parquet(snapshot)
    fresh = now.join(before, on=key, how="anti").select(LINE)
    again = now.group_by(key).agg(pl.len().alias("m")).filter(pl.col("m") > 1).select(key)
    repeated = (
        now.join(again, on=key, how="semi")
        .with_columns(k=pl.int_range(1, pl.len() + 1).over(key, order_by=LINE))
        .join(before, on=key, how="inner")
        .filter(pl.col("k") > pl.col("n"))
        .select(LINE)
    )
    lines = pl.concat([fresh, repeated]).sort(LINE).collect()
    column: pa.Array = lines.to_arrow().column(LINE).combine_chunks()
    return column


def _sql_path(path: Path) -> str:
    """A path for a single-quoted SQL literal."""
    return str(path).replace("'", "''")
