"""Diff: multiset anti-join on 128-bit fingerprints, snapshots promoted only when told."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.diff import STREAM_ROWS, Snapshots
from engine.errors import StoreError
from engine.fingerprint import PAIRS_1, SCHEME, fingerprints


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


def diffed(
    snapshots: Snapshots,
    reader: pa.RecordBatchReader,
    run: str,
    first: bool,
    fields: tuple[str, ...] = ("a", "b"),
) -> pa.Table:
    """The new rows, read to the end (which completes the pending snapshot)."""
    return snapshots.diff(reader, list(fields), run, first=first).read_all()


def new_rows(
    snapshots: Snapshots, reader: pa.RecordBatchReader, run: str, first: bool
) -> list[tuple[str, str]]:
    got = [(r["a"], r["b"]) for r in diffed(snapshots, reader, run, first).to_pylist()]
    snapshots.promote(run)
    return sorted(got)


@pytest.fixture(params=[STREAM_ROWS, 0], ids=["streaming", "staged"])
def snapshots(tmp_path: Path, request: pytest.FixtureRequest) -> Snapshots:
    # Both ways of comparing: in memory while the rows stream, or staged and spilling.
    return Snapshots(
        tmp_path / "snapshots" / "job", spill=tmp_path / "tmp", stream_rows=request.param
    )


def test_first_file_is_all_new_and_makes_a_snapshot(snapshots: Snapshots) -> None:
    assert new_rows(snapshots, rows(("1", "x"), ("2", "y")), "r1", first=True) == [
        ("1", "x"),
        ("2", "y"),
    ]
    assert snapshots.exists()


def test_the_snapshot_keeps_all_128_bits(snapshots: Snapshots) -> None:
    import pyarrow.parquet as pq

    new_rows(snapshots, rows(("1", "x"), ("2", "y")), "r1", first=True)
    stored = pq.read_table(snapshots.current)
    # Both halves as exact 64-bit integers: a float column would keep 53 bits of them.
    assert stored.schema.field("hi").type == pa.uint64()
    assert stored.schema.field("lo").type == pa.uint64()
    expected = _prints([("1", "x"), ("2", "y")], ["a", "b"])
    assert list(zip(stored["hi"].to_pylist(), stored["lo"].to_pylist(), strict=True)) == expected


def test_only_changed_and_added_rows_come_through(snapshots: Snapshots) -> None:
    new_rows(snapshots, rows(("1", "x"), ("2", "y"), ("3", "z")), "r1", first=True)
    second = rows(("1", "x"), ("2", "CHANGED"), ("3", "z"), ("4", "new"))
    assert new_rows(snapshots, second, "r2", first=False) == [("2", "CHANGED"), ("4", "new")]


def test_multiset_semantics(snapshots: Snapshots) -> None:
    new_rows(snapshots, rows(("1", "x")), "r1", first=True)
    # Present twice now, once before: imported once.
    assert new_rows(snapshots, rows(("1", "x"), ("1", "x")), "r2", first=False) == [("1", "x")]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("12"), st.sampled_from("xy")), max_size=8),
    st.lists(st.tuples(st.sampled_from("12"), st.sampled_from("xy")), max_size=8),
)
def test_the_new_lines_are_the_repeats_beyond_the_previous_count(
    before: list[tuple[str, str]], now: list[tuple[str, str]]
) -> None:
    found = {}
    for limit in (STREAM_ROWS, 0):  # streaming, and staged
        with tempfile.TemporaryDirectory() as folder:
            snapshots = Snapshots(
                Path(folder) / "job", spill=Path(folder) / "tmp", stream_rows=limit
            )
            new_rows(snapshots, rows(*before), "r1", first=True)
            found[limit] = diffed(snapshots, rows(*now), "r2", first=False)["_line"].to_pylist()
    # Line n + 2 holds now[n]; its k-th occurrence is new when k exceeds the count before.
    seen: Counter[tuple[str, str]] = Counter()
    expected = []
    for at, row in enumerate(now):
        seen[row] += 1
        if seen[row] > before.count(row):
            expected.append(at + 2)
    for lines in found.values():
        assert lines == expected


def test_field_boundaries_cannot_be_confused(snapshots: Snapshots) -> None:
    new_rows(snapshots, rows(("ab", "c")), "r1", first=True)
    assert new_rows(snapshots, rows(("a", "bc")), "r2", first=False) == [("a", "bc")]


def test_pending_snapshot_is_not_current_until_promoted(snapshots: Snapshots) -> None:
    new_rows(snapshots, rows(("1", "x")), "r1", first=True)
    diffed(snapshots, rows(("2", "y")), "r2", first=False)
    assert snapshots.has_pending("r2")
    # Not promoted (say the commit failed): the next diff still compares with r1's file.
    snapshots.discard("r2")
    assert new_rows(snapshots, rows(("1", "x"), ("2", "y")), "r3", first=False) == [("2", "y")]


def test_a_missing_snapshot_is_an_error_not_everything_new(snapshots: Snapshots) -> None:
    with pytest.raises(StoreError, match="--reset-diff"):
        diffed(snapshots, rows(("1", "x")), "r1", first=False)


def test_a_field_that_was_null_and_is_now_absent_changes_nothing(snapshots: Snapshots) -> None:
    schema = pa.schema([("a", pa.string()), ("b", pa.string()), ("_line", pa.int64())])
    before = pa.record_batch(
        [pa.array(["1"]), pa.array([None], pa.string()), pa.array([2])], schema=schema
    )
    diffed(snapshots, pa.RecordBatchReader.from_batches(schema, [before]), "r1", first=True)
    snapshots.promote("r1")
    now = pa.schema([("a", pa.string()), ("_line", pa.int64())])
    batch = pa.record_batch([pa.array(["1"]), pa.array([2])], schema=now)
    found = diffed(
        snapshots, pa.RecordBatchReader.from_batches(now, [batch]), "r3", False, fields=("a",)
    )
    assert found.num_rows == 0
    assert snapshots.fingerprinted == 1


def test_a_snapshot_made_another_way_is_an_error(snapshots: Snapshots) -> None:
    import pyarrow.parquet as pq

    new_rows(snapshots, rows(("1", "x")), "r1", first=True)
    # What an older lakeport wrote: the fingerprints without their definition.
    pq.write_table(pq.read_table(snapshots.current).replace_schema_metadata(), snapshots.current)
    with pytest.raises(StoreError, match=r"another version of lakeport.*--reset-diff"):
        diffed(snapshots, rows(("1", "x")), "r2", first=False)


def test_a_new_empty_column_or_a_reordering_changes_nothing(snapshots: Snapshots) -> None:
    # Once, adding an empty column made every row new: 3 unchanged rows and 1 new imported 4.
    new_rows(snapshots, rows(("1", "x"), ("2", "y"), ("3", "z")), "r1", first=True)
    schema = pa.schema(
        [("c", pa.string()), ("b", pa.string()), ("a", pa.string()), ("_line", pa.int64())]
    )
    wider = pa.record_batch(
        [
            pa.array(["", "", "", ""]),
            pa.array(["x", "y", "z", "w"]),
            pa.array(["1", "2", "3", "4"]),
            pa.array([2, 3, 4, 5]),
        ],
        schema=schema,
    )
    found = diffed(
        snapshots,
        pa.RecordBatchReader.from_batches(schema, [wider]),
        "r2",
        False,
        fields=("c", "b", "a"),
    )
    assert found.column("a").to_pylist() == ["4"]


def test_a_snapshot_of_the_scheme_before_is_compared_its_way_once(
    snapshots: Snapshots, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import pyarrow.parquet as pq

    from engine import diff

    monkeypatch.setattr(diff, "SCHEME", PAIRS_1)  # what the lakeport before wrote
    monkeypatch.setattr(diff._SnapshotWriter.__init__, "__defaults__", (PAIRS_1,))
    monkeypatch.setattr(diff, "fingerprints", lambda b, f, s=PAIRS_1: fingerprints(b, f, PAIRS_1))
    new_rows(snapshots, rows(("1", ""), ("2", "y")), "r1", first=True)
    monkeypatch.undo()

    def scheme() -> str:
        metadata = pq.read_metadata(snapshots.current).metadata
        return str(json.loads(metadata[diff.MADE.encode()])["scheme"])

    assert scheme() == PAIRS_1
    # The same rows: none new (compared the old way), and the snapshot is now made the new way.
    assert new_rows(snapshots, rows(("1", ""), ("2", "y"), ("3", "z")), "r2", first=False) == [
        ("3", "z")
    ]
    assert scheme() == SCHEME
    assert new_rows(snapshots, rows(("1", ""), ("2", "y"), ("3", "z")), "r3", first=False) == []
    assert list(snapshots.folder.glob("pending-*")) == []


def _prints(
    rows: list[tuple[str | None, ...]], names: list[str] | None = None, scheme: str = SCHEME
) -> list[tuple[int, int]]:
    names = names or [f"c{i}" for i in range(len(rows[0]))]
    batch = pa.record_batch(
        [pa.array([row[i] for row in rows], pa.string()) for i in range(len(names))], names=names
    )
    prints = fingerprints(batch, names, scheme)
    return list(zip(prints.column("hi").to_pylist(), prints.column("lo").to_pylist(), strict=True))


def test_fingerprints_are_xxh3_128_of_the_name_value_pairs() -> None:
    # Reference digests from the XXH3 reference implementation (xxhash 3.x) of the texts
    # b"Pc0\x00sa" and b"Pc0\x00slakeport\x00c1\x00srow": they must never change, or every
    # snapshot on disk would stop comparing.
    assert _prints([("a",)]) == [(0x565DF695277C1D03, 0xF97B8E476AADF7C9)]
    assert _prints([("lakeport", "row")]) == [(0x5655E3AA775C124B, 0xEE8FC4D7D40A95E4)]


def test_a_row_with_a_nul_spells_out_its_lengths() -> None:
    import polars as pl
    import polars_hash as plh

    text = "L2,3\x00c0\x00sa\x00"  # name c0 (2 bytes), value s + "a\x00" (3 bytes)
    digest = pl.DataFrame({"t": [text]}).select(plh.col("t").nchash.xxh3_128()).item()
    assert _prints([("a\x00",)]) == [(digest >> 64, digest & (1 << 64) - 1)]


def test_a_null_field_is_no_field_and_the_order_does_not_matter() -> None:
    assert _prints([("x", None)], ["a", "b"]) == _prints([("x",)], ["a"])
    assert _prints([("x", "y")], ["a", "b"]) == _prints([("y", "x")], ["b", "a"])
    # An empty value is no value too (a new column left empty is no change); it was a
    # value of its own in the scheme before.
    assert _prints([("x", "")], ["a", "b"]) == _prints([("x",)], ["a"])
    assert _prints([("x", "")], ["a", "b"], PAIRS_1) != _prints([("x",)], ["a"], PAIRS_1)
    empty_list = pa.record_batch(
        [pa.array(["x"]), pa.array([[]], pa.list_(pa.string()))], names=["a", "t"]
    )
    assert fingerprints(empty_list, ["a", "t"]) == fingerprints(empty_list.select(["a"]), ["a"])


def test_a_list_and_a_text_never_share_a_fingerprint() -> None:
    listed = pa.record_batch([pa.array([["a"]], pa.list_(pa.string()))], names=["t"])
    texted = pa.record_batch([pa.array(["1:a"])], names=["t"])
    assert fingerprints(listed, ["t"]) != fingerprints(texted, ["t"])
    lists = pa.array([["a", "b"], ["ab"], ["a:b"], [], None, [None], [""]], pa.list_(pa.string()))
    batch = pa.record_batch([lists], names=["t"])
    for scheme, distinct in ((SCHEME, 6), (PAIRS_1, 7)):  # now an empty list is no value
        prints = fingerprints(batch, ["t"], scheme)
        pairs = list(zip(prints["hi"].to_pylist(), prints["lo"].to_pylist(), strict=True))
        assert len(set(pairs)) == distinct
    assert pairs[3] != pairs[4]
    assert _pairs(fingerprints(batch, ["t"]))[3] == _pairs(fingerprints(batch, ["t"]))[4]


def test_nulls_nuls_and_their_positions_are_told_apart() -> None:
    rows: list[tuple[str | None, ...]] = [
        ("a", None, "b"),
        ("a", "b", None),
        (None, "a", "b"),
        ("a", "", "b"),
        ("a\x1fb", "", None),
        ("a\x00", "b", "c"),
        ("a", "\x00b", "c"),
        ("a\x00b", "c", ""),
        ("", "", ""),
        ("", "", None),
        ("\x00", "", ""),
        ("", "\x00", ""),
    ]
    assert len(set(_prints(rows, scheme=PAIRS_1))) == len(rows)
    # An empty value is no value: rows that differ only so share a print, no others do.
    assert len(set(_prints(rows))) == len({_no_empty(row) for row in rows})
    # NULs alone, in a batch without nulls, must be told apart too.
    nuls: list[tuple[str | None, ...]] = [
        ("a\x00", "", ""),
        ("a", "\x00", ""),
        ("a", "", "\x00"),
        ("a\x00\x00", "", ""),
    ]
    assert len(set(_prints(nuls))) == len(nuls)
    assert len(set(_prints(nuls, scheme=PAIRS_1))) == len(nuls)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(*[st.none() | st.text(alphabet="a,0\x00\x1f-1", max_size=4)] * 3),
        min_size=1,
        max_size=12,
    )
)
def test_different_rows_never_share_a_fingerprint(rows: list[tuple[str | None, ...]]) -> None:
    # Same row, same print; different rows, different prints (empty and null are the same
    # value now, and were two before).
    for scheme, same in ((SCHEME, _no_empty), (PAIRS_1, lambda row: row)):
        prints = _prints(rows, scheme=scheme)
        seen = [same(row) for row in rows]
        assert len(set(prints)) == len(set(seen))
        assert all(prints[i] == prints[j] for i, j in _pairs_of_equal(seen))


def _no_empty(row: tuple[str | None, ...]) -> tuple[str | None, ...]:
    return tuple(None if value == "" else value for value in row)


def _pairs(prints: pa.RecordBatch) -> list[tuple[int, int]]:
    return list(zip(prints["hi"].to_pylist(), prints["lo"].to_pylist(), strict=True))


def _pairs_of_equal(rows: list[tuple[str | None, ...]]) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(rows)) for j in range(i) if rows[i] == rows[j]]


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


_HALVES = st.sampled_from([0, 1, 2**63, 2**64 - 1, 0x565DF695277C1D03])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(_HALVES, _HALVES), max_size=20),
    st.lists(st.lists(st.tuples(_HALVES, _HALVES), max_size=10), max_size=4),
)
def test_previous_rows_are_used_up_first_come_first_served(
    before: list[tuple[int, int]], batches: list[list[tuple[int, int]]]
) -> None:
    # Few distinct halves: fingerprints share their `hi` (and buckets) with different `lo`s,
    # repeat within a batch and across batches.
    import numpy as np

    from engine.diff import Previous

    ordered = sorted(before)
    previous = Previous(
        np.array([p[0] for p in ordered], dtype=np.uint64),
        np.array([p[1] for p in ordered], dtype=np.uint64),
    )
    left = Counter(before)
    for batch in batches:
        seen = previous.take(
            np.array([p[0] for p in batch], dtype=np.uint64),
            np.array([p[1] for p in batch], dtype=np.uint64),
        )
        expected = []
        for key in batch:
            expected.append(left[key] > 0)
            left[key] -= left[key] > 0
        assert seen.tolist() == expected


def test_a_file_streamed_halfway_leaves_no_pending_snapshot(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path / "job", spill=tmp_path / "tmp")
    new_rows(snapshots, rows(("1", "x")), "r1", first=True)
    reader = snapshots.diff(_batched([("2", "y"), ("3", "z")], 1), ["a", "b"], "r2", first=False)
    reader.read_next_batch()
    reader.close()  # say the append failed after the first batch
    assert not snapshots.has_pending("r2")
    snapshots.discard("r2")  # as a failed run does
    assert list((tmp_path / "job").iterdir()) == [snapshots.current]
    snapshots.promote("r2")
    assert new_rows(snapshots, rows(("1", "x"), ("2", "y")), "r3", first=False) == [("2", "y")]


def test_many_batches_with_repeats_across_them(snapshots: Snapshots) -> None:
    before = [(str(i % 700), "x") for i in range(3000)]  # each row 4 or 5 times
    now = [(str(i % 900), "x") for i in range(5000)]
    new_rows(snapshots, _batched(before), "r1", first=True)
    found = diffed(snapshots, _batched(now), "r2", first=False)["_line"].to_pylist()
    left = Counter(before)
    expected = []
    for at, row in enumerate(now):
        if left[row]:
            left[row] -= 1
        else:
            expected.append(at + 2)
    assert found == expected
    assert snapshots.fingerprinted == len(now)


def _batched(values: list[tuple[str, str]], size: int = 512) -> pa.RecordBatchReader:
    whole = rows(*values).read_all()
    return pa.RecordBatchReader.from_batches(whole.schema, whole.to_batches(max_chunksize=size))
