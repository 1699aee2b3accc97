"""Diff imports: keep only the rows that were not in the previous file of the same job.

The comparison is an anti-join on 128-bit fingerprints (engine.fingerprint) with multiset
semantics: a row is new when its fingerprint is not in the previous file, or when it repeats
more often than it did there (the first copies are the old ones). So a row present twice now
and once before is imported once.

A job's snapshot (`<folder>/current.parquet`) holds the fingerprints of its previous file. A run
writes each row's fingerprint and line (24 bytes a row) to a pending snapshot next to it, which
becomes current only after the stream commit, so a crash leaves the old one in place.

Two ways to compare, with the same answer:
- streaming (up to `STREAM_ROWS` previous rows): the previous fingerprints are held in memory,
  about 22 bytes each, in a table bucketed by their top bits (engine.diff.Previous). Each batch
  is looked up as it is read and only its new rows go on, so the file is read once and nothing
  but the snapshot is written;
- staged (larger previous files): the rows are staged, lz4-compressed, in an Arrow stream while
  they are fingerprinted; DuckDB finds the new lines, spilling to the store's tmp folder past
  its memory limit, and the new rows are read back from the stage. Memory stays bounded however
  large the files.

DuckDB connections come from engine.duck.
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

from engine import duck
from engine.errors import StoreError
from engine.executor import prefetch
from engine.fingerprint import FINGERPRINT_SCHEMA, SCHEME, SCHEMES, fingerprints
from engine.readers.rows import LINE

CURRENT = "current.parquet"
MADE = "lakeport_fingerprint"
STREAM_ROWS = 12_000_000
"""Previous files of up to this many rows are held in memory for a streaming diff: about 22
bytes a distinct row, so at most about 270 MB. Larger ones take the staged way, which spills."""
GROUP = 256 * 1024
"""Rows per row group of a snapshot (24 bytes a row)."""
PARTS = 64
"""Parts a snapshot is spread into, to be sorted a part at a time."""


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


class Previous:
    """The previous file's fingerprints, in memory, looked up a batch at a time.

    Each distinct fingerprint is kept once, with how many of its rows the previous file had
    left to match; they are sorted and bucketed by the top bits of `hi` (about one a bucket),
    so a lookup is a few vectorized gathers and compares, with no per-row Python. About 22
    bytes a distinct row: 16 for the fingerprint, 4 of scratch, 1 or 4 for the count and 2 of
    buckets.
    """

    def __init__(self, hi: Any, lo: Any) -> None:
        """From the halves of the fingerprints, sorted by `hi` then `lo`."""
        import numpy as np

        rows = len(hi)
        changes = np.ones(rows, dtype=bool)
        np.not_equal(hi[1:], hi[:-1], out=changes[1:])
        changes[1:] |= lo[1:] != lo[:-1]
        if changes.all():  # no row twice: the usual case, and no copies
            self.hi, self.lo = hi, lo
            self.left = np.ones(rows, dtype=np.uint8)
        else:
            starts = np.flatnonzero(changes)
            self.hi, self.lo = hi[starts], lo[starts]
            counts = np.diff(starts, append=rows)
            self.left = counts.astype(np.uint8 if counts.max() <= 255 else np.uint32)
        """Rows of each fingerprint not yet matched by a row of the new file."""
        del changes
        distinct = len(self.hi)
        bits = max(1, distinct.bit_length() - 1)
        self.shift = np.uint64(64 - bits)
        self.offsets = np.zeros((1 << bits) + 1, dtype=np.int32)
        """Where each bucket starts in `hi`/`lo` (and where the last one ends)."""
        for at in range(0, distinct, GROUP):  # sorted: each piece fills a run of buckets
            buckets = (self.hi[at : at + GROUP] >> self.shift).astype(np.intp)
            sizes = np.bincount(buckets - buckets[0])
            self.offsets[buckets[0] + 1 : buckets[0] + 1 + len(sizes)] += sizes
        np.cumsum(self.offsets, out=self.offsets)
        self.marks = np.empty(distinct, dtype=np.int32)
        """Scratch space to find a batch's rows that share a fingerprint."""

    @classmethod
    def load(cls, path: Path) -> Previous:
        """A snapshot's fingerprints, sorted with little more memory than they take: the rows
        are first spread into `PARTS` parts by the top bits of `hi` (two passes over the
        file), then each part is sorted on its own."""
        import numpy as np
        import polars as pl

        # Without pre-buffering: it would keep a copy of the whole file in Arrow's pool.
        snapshot = pq.ParquetFile(path, pre_buffer=False)
        shift = np.uint64(64 - PARTS.bit_length() + 1)

        def halves() -> Iterator[tuple[Any, Any]]:
            for batch in snapshot.iter_batches(GROUP, columns=["hi", "lo"], use_threads=False):
                yield batch.column(0).to_numpy(), batch.column(1).to_numpy()

        sizes = np.zeros(PARTS, dtype=np.int64)
        for hi, _ in halves():
            sizes += np.bincount((hi >> shift).astype(np.intp), minlength=PARTS)
        ends = np.cumsum(sizes)
        starts = ends - sizes
        rows = int(ends[-1])
        all_hi, all_lo = np.empty(rows, dtype=np.uint64), np.empty(rows, dtype=np.uint64)
        filled = starts.copy()
        for hi, lo in halves():
            parts = (hi >> shift).astype(np.uint8)
            order = np.argsort(parts, kind="stable")
            parts = parts[order]
            counts = np.bincount(parts, minlength=PARTS)
            at = filled[parts] + np.arange(len(parts)) - (np.cumsum(counts) - counts)[parts]
            all_hi[at], all_lo[at] = hi[order], lo[order]
            filled += counts
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            if end - start > 1:
                part = pl.DataFrame({"hi": all_hi[start:end], "lo": all_lo[start:end]})
                part = part.sort(["hi", "lo"])
                all_hi[start:end], all_lo[start:end] = part["hi"], part["lo"]
        return cls(all_hi, all_lo)

    def take(self, hi: Any, lo: Any) -> Any:
        """Which of a batch's rows the previous file had (a bool array): a row that matches
        one of the previous file's rows uses it up, first come first served."""
        import numpy as np

        bucket = (hi >> self.shift).astype(np.intp)
        start, stop = self.offsets[bucket], self.offsets[bucket + 1]
        found = np.full(len(hi), -1, dtype=np.int64)
        rows = np.flatnonzero(start < stop)
        at = start[rows]
        while rows.size:  # each round compares the next candidate of the rows still looking
            match = (self.hi[at] == hi[rows]) & (self.lo[at] == lo[rows])
            found[rows[match]] = at[match]
            going = ~match & (at + 1 < stop[rows])
            rows, at = rows[going], at[going] + 1
        rows = np.flatnonzero(found >= 0)
        keys = found[rows]
        order = np.arange(len(keys), dtype=np.int32)
        self.marks[keys] = order
        seen = np.zeros(len(hi), dtype=bool)
        if np.array_equal(self.marks[keys], order):  # each fingerprint once in this batch
            old = self.left[keys] > 0
            self.left[keys] -= old
            seen[rows] = old
            return seen
        # Rows that repeat within the batch: the first ones use up what is left.
        by_key = np.argsort(keys, kind="stable")
        keys = keys[by_key]
        firsts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        runs = np.diff(firsts, append=len(keys))
        rank = np.arange(len(keys)) - np.repeat(firsts, runs)
        seen[rows[by_key]] = rank < self.left[keys]
        distinct = keys[firsts]
        self.left[distinct] -= np.minimum(runs, self.left[distinct]).astype(self.left.dtype)
        return seen


class _SnapshotWriter:
    """Writes a file's fingerprints and lines to a pending snapshot; it appears under its
    name only once every row is in."""

    def __init__(self, to: Path, fields: Sequence[str], scheme: str = SCHEME) -> None:
        made = json.dumps({"scheme": scheme, "fields": list(fields)})
        self.schema = FINGERPRINT_SCHEMA.append(pa.field(LINE, pa.int64())).with_metadata(
            {MADE: made}
        )
        self.to = to
        self.part = to.with_name(to.name + ".part")
        # The fingerprints are random: compressing them, or looking for repeated values to
        # encode, would cost time and save nothing. The lines ascend: deltas pack them small.
        self.writer = pq.ParquetWriter(
            self.part,
            self.schema,
            compression={"hi": "none", "lo": "none", LINE: "zstd"},
            use_dictionary=False,
            write_statistics=False,
            column_encoding={LINE: "DELTA_BINARY_PACKED"},
        )
        self.group: list[pa.RecordBatch] = []
        self.grouped = 0
        self.rows = 0

    def add(self, prints: pa.RecordBatch, lines: pa.Array) -> None:
        line = lines.cast(pa.int64())
        self.group.append(pa.RecordBatch.from_arrays([*prints.columns, line], schema=self.schema))
        self.rows += len(line)
        self.grouped += len(line)
        # Row groups of GROUP rows: one per batch would be too small to write and read.
        if self.grouped >= GROUP:
            self._flush()

    def _flush(self) -> None:
        table = pa.Table.from_batches(self.group, self.schema)
        self.writer.write_table(table, row_group_size=GROUP * 2)
        self.group, self.grouped = [], 0

    def finish(self) -> None:
        if self.group or not self.rows:
            self._flush()
        self.writer.close()
        self.part.replace(self.to)

    def abandon(self) -> None:
        self.writer.close()
        self.part.unlink(missing_ok=True)


class Snapshots:
    """The diff snapshots of one job, in a local folder."""

    def __init__(
        self,
        folder: Path,
        *,
        spill: Path,
        memory_limit: str = "256MB",
        stream_rows: int = STREAM_ROWS,
    ) -> None:
        self.folder = folder
        self.spill = spill
        self.memory_limit = memory_limit
        self.stream_rows = stream_rows
        """Previous files of up to this many rows are compared streaming, in memory."""
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

    def diff(
        self, rows: pa.RecordBatchReader, fields: Sequence[str], run_id: str, *, first: bool
    ) -> pa.RecordBatchReader:
        """The new rows of a file, which is read once, fingerprinted over `fields`.

        A pending snapshot of the file is written for `promote` once all its rows have been
        read. With `first`, no snapshot is expected and every row is new.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        self.discard(run_id)
        self.fingerprinted = 0
        previous = None
        # A snapshot of an older scheme is compared its way, once; the new one is made the
        # current way.
        compared = SCHEME
        if not first:
            rows_before, compared = self._check_comparable()
            if rows_before > self.stream_rows:
                return self._diff_staged(rows, fields, run_id, compared)
            try:
                previous = Previous.load(self.current)
            except Exception as exc:
                raise self._failed(exc) from exc
        snapshot = _SnapshotWriter(self.pending(run_id)[1], fields)

        def fingerprinted() -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch, pa.RecordBatch]]:
            for batch in rows:
                prints = fingerprints(batch, fields)
                old = prints if compared == SCHEME else fingerprints(batch, fields, compared)
                yield batch, prints, old

        def new_rows() -> Iterator[pa.RecordBatch]:
            try:
                # Fingerprinting in a thread of its own: the reader parses the next batches
                # in another, and this one looks up and hands on the last.
                for batch, prints, old in prefetch(fingerprinted()):
                    snapshot.add(prints, batch.column(LINE))
                    self.fingerprinted += batch.num_rows
                    if previous is None:
                        yield batch
                    else:
                        seen = previous.take(old.column(0).to_numpy(), old.column(1).to_numpy())
                        yield batch.filter(pa.array(~seen))
            except BaseException:
                snapshot.abandon()
                raise
            snapshot.finish()

        return pa.RecordBatchReader.from_batches(rows.schema, new_rows())

    def _diff_staged(
        self, rows: pa.RecordBatchReader, fields: Sequence[str], run_id: str, compared: str
    ) -> pa.RecordBatchReader:
        """The new rows, for previous files too large to hold: while the rows are
        fingerprinted, they are also staged, lz4-compressed, in an Arrow stream next to the
        snapshots; DuckDB finds the new lines, which are then read back from the stage, so the
        object is neither parsed nor downloaded twice."""
        staged = self._staged_rows(run_id)
        options = ipc.IpcWriteOptions(compression="lz4")
        snapshot = _SnapshotWriter(self.pending(run_id)[1], fields)
        # Against a snapshot of an older scheme, the file's prints made its way too, apart.
        old = None
        if compared != SCHEME:
            old = _SnapshotWriter(self.folder / f"pending-{run_id}.old.parquet", fields, compared)
        try:
            with ipc.new_stream(str(staged), rows.schema, options=options) as stage:
                for batch in rows:
                    stage.write_batch(batch)
                    snapshot.add(fingerprints(batch, fields), batch.column(LINE))
                    if old is not None:
                        old.add(fingerprints(batch, fields, compared), batch.column(LINE))
        except BaseException:
            snapshot.abandon()
            if old is not None:
                old.abandon()
            raise
        snapshot.finish()
        self.fingerprinted = snapshot.rows
        try:
            if old is not None:
                old.finish()
            try:
                lines = self._new_lines_spilling((old or snapshot).to)
            finally:
                if old is not None:
                    old.to.unlink(missing_ok=True)
            new = NewLines(lines, snapshot.rows)
        except Exception as exc:
            raise self._failed(exc) from exc

        def kept() -> Iterator[pa.RecordBatch]:
            with pa.OSFile(str(staged)) as source:
                for batch in ipc.open_stream(source):
                    yield new.keep(batch)

        return pa.RecordBatchReader.from_batches(rows.schema, kept())

    def _failed(self, exc: Exception) -> StoreError:
        return StoreError(
            f"the diff against {self.current} failed ({exc}): if the snapshot is damaged, "
            "run with --reset-diff to import the whole file and start a new one"
        )

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

    def _check_comparable(self) -> tuple[int, str]:
        """The current snapshot exists and fingerprints rows in a way this run can make; its
        rows and that way (its scheme)."""
        if not self.exists():
            raise StoreError(
                f"the diff snapshot {self.current} is missing: the previous file's rows are "
                "unknown, so the changed rows cannot be told apart; run with --reset-diff to "
                "import the whole file and start a new snapshot"
            )
        try:
            metadata = pq.read_metadata(self.current)
        except (OSError, pa.ArrowInvalid) as exc:
            raise StoreError(
                f"the diff snapshot {self.current} cannot be read ({exc}); run once with "
                "--reset-diff to import the whole file and start a new snapshot"
            ) from exc
        made = json.loads((metadata.metadata or {}).get(MADE.encode(), b"{}"))
        if made.get("scheme") not in SCHEMES:
            raise StoreError(
                f"the diff snapshot {self.current} was made by another version of lakeport, "
                "whose fingerprints cannot be compared with this one's; run once with "
                "--reset-diff to import the whole file and start a new snapshot"
            )
        rows: int = metadata.num_rows
        return rows, str(made["scheme"])

    def _staged_rows(self, run_id: str) -> Path:
        return self.folder / f"pending-{run_id}.rows.arrow"

    def promote(self, run_id: str) -> None:
        """After the stream commit: the pending snapshot becomes current."""
        snapshot = self.pending(run_id)[1]
        if snapshot.is_file():
            snapshot.replace(self.current)
        self._staged_rows(run_id).unlink(missing_ok=True)

    def discard(self, run_id: str) -> None:
        snapshot = self.pending(run_id)[1]
        snapshot.unlink(missing_ok=True)
        snapshot.with_name(snapshot.name + ".part").unlink(missing_ok=True)
        self._staged_rows(run_id).unlink(missing_ok=True)
        old = self.folder / f"pending-{run_id}.old.parquet"
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".part").unlink(missing_ok=True)

    def _connect(self) -> Any:
        return duck.connect(self.spill, self.memory_limit)


def _sql_path(path: Path) -> str:
    """A path for a single-quoted SQL literal."""
    return duck.sql_text(str(path))
