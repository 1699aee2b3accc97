"""Diff: multiset anti-join on 128-bit fingerprints, snapshots promoted only when told."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from engine.diff import Snapshots
from engine.errors import StoreError


def rows(*values: tuple[str, str]) -> pa.RecordBatchReader:
    schema = pa.schema([("a", pa.string()), ("b", pa.string()), ("_line", pa.int64())])
    batch = pa.record_batch(
        [
            pa.array([v[0] for v in values], pa.string()),
            pa.array([v[1] for v in values], pa.string()),
            pa.array(range(2, 2 + len(values)), pa.int64()),
        ],
        schema=schema,
    )
    return pa.RecordBatchReader.from_batches(schema, [batch])


def new_rows(
    snapshots: Snapshots, reader: pa.RecordBatchReader, run: str, first: bool
) -> list[tuple[str, str]]:
    batches = list(reader)
    again = pa.RecordBatchReader.from_batches(reader.schema, batches)
    new = snapshots.new_lines(again, ["a", "b"], run, first=first)
    got = [(r["a"], r["b"]) for batch in batches for r in new.keep(batch).to_pylist()]
    snapshots.promote(run)
    return sorted(got)


@pytest.fixture
def snapshots(tmp_path: Path) -> Snapshots:
    return Snapshots(tmp_path / "snapshots" / "job", spill=tmp_path / "tmp")


def test_first_file_is_all_new_and_makes_a_snapshot(snapshots: Snapshots) -> None:
    assert new_rows(snapshots, rows(("1", "x"), ("2", "y")), "r1", first=True) == [
        ("1", "x"),
        ("2", "y"),
    ]
    assert snapshots.exists()


def test_only_changed_and_added_rows_come_through(snapshots: Snapshots) -> None:
    new_rows(snapshots, rows(("1", "x"), ("2", "y"), ("3", "z")), "r1", first=True)
    second = rows(("1", "x"), ("2", "CHANGED"), ("3", "z"), ("4", "new"))
    assert new_rows(snapshots, second, "r2", first=False) == [("2", "CHANGED"), ("4", "new")]


def test_multiset_semantics(snapshots: Snapshots) -> None:
    new_rows(snapshots, rows(("1", "x")), "r1", first=True)
    # Present twice now, once before: imported once.
    assert new_rows(snapshots, rows(("1", "x"), ("1", "x")), "r2", first=False) == [("1", "x")]


def test_field_boundaries_cannot_be_confused(snapshots: Snapshots) -> None:
    new_rows(snapshots, rows(("ab", "c")), "r1", first=True)
    assert new_rows(snapshots, rows(("a", "bc")), "r2", first=False) == [("a", "bc")]


def test_pending_snapshot_is_not_current_until_promoted(snapshots: Snapshots) -> None:
    new_rows(snapshots, rows(("1", "x")), "r1", first=True)
    snapshots.new_lines(rows(("2", "y")), ["a", "b"], "r2", first=False)
    assert snapshots.has_pending("r2")
    # Not promoted (say the commit failed): the next diff still compares with r1's file.
    snapshots.discard("r2")
    assert new_rows(snapshots, rows(("1", "x"), ("2", "y")), "r3", first=False) == [("2", "y")]


def test_a_missing_snapshot_is_an_error_not_everything_new(snapshots: Snapshots) -> None:
    with pytest.raises(StoreError, match="--reset-diff"):
        snapshots.new_lines(rows(("1", "x")), ["a", "b"], "r1", first=False)


def test_nulls_and_their_positions_are_told_apart(tmp_path: Path) -> None:
    import duckdb

    from engine.diff import fingerprint_sql

    con = duckdb.connect()
    rows = [
        ("a", None, "b"),
        ("a", "b", None),
        (None, "a", "b"),
        ("a", "", "b"),
        ("a\x1fb", "", None),
    ]
    values = ", ".join(
        "(" + ", ".join("NULL" if v is None else "'" + v + "'" for v in row) + ")" for row in rows
    )
    con.execute(f"CREATE TABLE t AS SELECT * FROM (VALUES {values}) v(x, y, z)").fetchall()
    prints = con.execute(f"SELECT {fingerprint_sql(['x', 'y', 'z'])} FROM t").fetchall()
    assert len({p[0] for p in prints}) == len(rows)


def test_new_lines_are_kept_batch_by_batch() -> None:
    from engine.diff import NewLines

    new = NewLines(pa.array([3, 7, 50_000, 50_001, 100_000], pa.int64()), rows=100_000)
    schema = pa.schema([("_line", pa.int64())])
    kept = []
    for start in range(1, 100_001, 25_000):
        batch = pa.record_batch([pa.array(range(start, start + 25_000), pa.int64())], schema=schema)
        kept += new.keep(batch).column(0).to_pylist()
    assert kept == [3, 7, 50_000, 50_001, 100_000]
    assert new.count == 5
