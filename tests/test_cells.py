"""Export cells: lists and maps joined reversibly, times in ISO UTC, formulas guarded."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.writers.cells import split_list, split_map
from engine.writers.encode import CsvEncoder

AWKWARD = st.text(alphabet=st.sampled_from(list("a&=%,\"\n\r'é😀 -+@\t")), max_size=6)


def written(frame: pl.DataFrame, *, formula_guard: bool = True) -> list[dict[str, str]]:
    """The frame as a CSV file (RFC 4180 quoting), read back by Python's csv."""
    table = frame.to_arrow()
    batch = pa.RecordBatch.from_arrays(
        [column.combine_chunks() for column in table.columns], names=table.column_names
    )
    encoder = CsvEncoder(batch.schema, formula_guard=formula_guard)
    text = encoder.header + bytes(encoder.encode(batch))
    return list(csv.DictReader(io.StringIO(text.decode(), newline="")))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none() | AWKWARD,
            st.none() | st.lists(AWKWARD.filter(bool), max_size=4),
            st.none() | st.dictionaries(AWKWARD, st.none() | AWKWARD, max_size=3),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_lists_and_maps_split_back_to_what_was_written(
    rows: list[tuple[str | None, list[str] | None, dict[str, str | None] | None]],
) -> None:
    table = pa.table(
        {
            "name": pa.array([r[0] for r in rows], pa.string()),
            "tags": pa.array([r[1] for r in rows], pa.list_(pa.string())),
            "attributes": pa.array(
                [None if r[2] is None else list(r[2].items()) for r in rows],
                pa.map_(pa.string(), pa.string()),
            ),
        }
    )
    frame = pl.DataFrame(table)
    back = written(frame, formula_guard=False)
    for row, (name, tags, attributes) in zip(back, rows, strict=True):
        assert row["name"] == (name or "")  # null is an empty cell
        assert split_list(row["tags"]) == (tags or [])
        expected = {k: v or "" for k, v in (attributes or {}).items()}
        assert split_map(row["attributes"]) == expected


def test_scalars_are_written_plainly() -> None:
    frame = pl.DataFrame(
        {
            "at": [
                datetime(2026, 11, 1, 9, 0, tzinfo=UTC),
                datetime(2026, 11, 1, 9, 0, 1, 500_000),
            ],
            "member": [True, None],
            "score": [1.5, -2.0],
            "count": [3, None],
            "days": [["2026-11-01"], []],
        }
    )
    rows = written(frame)
    assert rows[0] == {
        "at": "2026-11-01T09:00:00Z",
        "member": "true",
        "score": "1.5",
        "count": "3",
        "days": "2026-11-01",
    }
    assert rows[1]["at"] == "2026-11-01T09:00:01.500000Z"  # a naive time is read as UTC
    assert (rows[1]["member"], rows[1]["score"], rows[1]["count"], rows[1]["days"]) == (
        "",
        "-2",
        "",
        "",
    )


def test_the_formula_guard_prefixes_risky_text_only() -> None:
    frame = pl.DataFrame(
        {
            "text": ["=SUM(A1)", "+cmd", "-5", "@x", "\tx", "plain", "-1.5e3", "-"],
            "number": [-5, 1, 2, 3, 4, 5, 6, 7],
            "tags": [["=x"], ["a"], [], ["-"], ["b"], ["c"], ["d"], ["e"]],
        }
    )
    rows = written(frame)
    assert [r["text"] for r in rows] == [
        "'=SUM(A1)",
        "'+cmd",
        "-5",
        "'@x",
        "'\tx",
        "plain",
        "-1.5e3",
        "'-",
    ]
    assert rows[0]["number"] == "-5"
    assert rows[0]["tags"] == "%3Dx"  # an encoded '=' cannot start a formula
    assert rows[3]["tags"] == "'-"
    assert written(frame, formula_guard=False)[0]["text"] == "=SUM(A1)"
