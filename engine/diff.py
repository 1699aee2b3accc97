"""Diff imports: keep only the rows that were not in the previous file of the same job.

The comparison is a DuckDB anti-join on 128-bit fingerprints (MD5 over the row's values and
their lengths, so no two different rows share the hashed text) with multiset
semantics: each row is numbered within its group of identical rows, and (fingerprint, number)
is what is matched, so a row present twice now and once before is imported once.

A job's snapshot (`<folder>/current.parquet`) holds the fingerprints of its previous file. A run
writes the new file's rows and fingerprints next to it as *pending*; the caller promotes them to
current only after the stream commit, so a crash leaves the old snapshot in place. DuckDB spills
to the store's tmp folder: memory stays bounded however large the files.

This is the only module that talks to DuckDB.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.errors import StoreError

CURRENT = "current.parquet"


@dataclass(frozen=True)
class DiffResult:
    rows: pa.RecordBatchReader
    """The rows that are new, as a stream of batches."""
    staged: int
    """Rows of the file, before the diff: `staged` minus the rows read back is the unchanged."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fingerprint_sql(fields: Sequence[str]) -> str:
    """A 128-bit fingerprint of the fields: MD5 of the values joined by a separator, followed by
    their lengths (-1 for null). With the lengths, the joined text splits back into the values
    one way only, so two different rows never share the hashed text."""
    if not fields:
        return "md5_number('')"
    texts = [f"CAST({_quote(name)} AS VARCHAR)" for name in fields]
    values = ", ".join(texts)
    lengths = ", ".join(f"coalesce(length({text}), -1)" for text in texts)
    return f"md5_number(concat_ws(chr(31), {values}) || chr(30) || concat_ws(',', {lengths}))"


class Snapshots:
    """The diff snapshots of one job, in a local folder."""

    def __init__(self, folder: Path, *, spill: Path, memory_limit: str = "768MB") -> None:
        self.folder = folder
        self.spill = spill
        self.memory_limit = memory_limit

    @property
    def current(self) -> Path:
        return self.folder / CURRENT

    def exists(self) -> bool:
        return self.current.is_file()

    def pending(self, run_id: str) -> tuple[Path, Path]:
        """The run's staging database and its pending snapshot."""
        return (
            self.folder / f"pending-{run_id}.duckdb",
            self.folder / f"pending-{run_id}.snapshot.parquet",
        )

    def has_pending(self, run_id: str) -> bool:
        return self.pending(run_id)[1].is_file()

    def diff(
        self, rows: pa.RecordBatchReader, fields: Sequence[str], run_id: str, *, first: bool
    ) -> DiffResult:
        """Stage the rows, fingerprint them, and give back those not in the current snapshot.

        With `first`, no snapshot is expected: every row is new (and a snapshot is still made).
        The rows are staged in a DuckDB database file next to the snapshots, so memory stays
        bounded; the fingerprint of each row is computed once.
        """
        if not first and not self.exists():
            raise StoreError(
                f"the diff snapshot {self.current} is missing: the previous file's rows are "
                "unknown, so the changed rows cannot be told apart; run with --reset-diff to "
                "import the whole file and start a new snapshot"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        staging, snapshot = self.pending(run_id)
        self.discard(run_id)
        con = self._connect(staging)
        con.register("incoming", rows)
        con.execute(
            f"CREATE TABLE cur AS SELECT *, {fingerprint_sql(fields)} AS __fp FROM incoming"
        ).fetchall()
        con.unregister("incoming")
        con.execute(
            f"COPY (SELECT __fp AS fp FROM cur) TO '{_sql_path(snapshot)}' (FORMAT parquet)"
        )
        columns = ", ".join(_quote(f.name) for f in rows.schema)
        if first:
            query = f"SELECT {columns} FROM cur"
        else:
            query = f"""
                WITH numbered AS (
                    SELECT *, row_number() OVER (PARTITION BY __fp) AS __k FROM cur
                ), prev AS (
                    SELECT fp AS __fp, row_number() OVER (PARTITION BY fp) AS __k
                    FROM read_parquet('{_sql_path(self.current)}')
                )
                SELECT {columns} FROM numbered ANTI JOIN prev USING (__fp, __k)
            """
        counted = con.execute("SELECT count(*) FROM cur").fetchall()[0]
        try:
            reader = con.sql(query).to_arrow_reader(65_536)
        except Exception as exc:
            raise StoreError(f"the diff against {self.current} failed: {exc}") from exc
        staged_rows = int(counted[0]) if counted else 0
        return DiffResult(_cast_to(reader, rows.schema, keep_open=con), staged=staged_rows)

    def promote(self, run_id: str) -> None:
        """After the stream commit: the pending snapshot becomes current."""
        staging, snapshot = self.pending(run_id)
        if snapshot.is_file():
            snapshot.replace(self.current)
        for path in (staging, Path(f"{staging}.wal")):
            path.unlink(missing_ok=True)

    def discard(self, run_id: str) -> None:
        staging, snapshot = self.pending(run_id)
        for path in (staging, Path(f"{staging}.wal"), snapshot):
            path.unlink(missing_ok=True)

    def reset(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _connect(self, database: Path) -> Any:
        import duckdb

        self.spill.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(database))
        for setting in (
            "SET TimeZone = 'UTC'",
            f"SET temp_directory = '{_sql_path(self.spill)}'",
            f"SET memory_limit = '{self.memory_limit}'",
            "SET preserve_insertion_order = false",
            "SET enable_progress_bar = false",
        ):
            con.execute(setting).fetchall()
        return con


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _cast_to(
    reader: pa.RecordBatchReader, schema: pa.Schema, *, keep_open: Any
) -> pa.RecordBatchReader:
    """DuckDB's batches in the input's own types (it may hand out string views)."""

    def batches() -> Any:
        connection = keep_open  # the reader lives as long as its connection
        for batch in reader:
            yield batch.cast(schema) if batch.schema != schema else batch
        connection.close()

    return pa.RecordBatchReader.from_batches(schema, batches())
