"""Encoders: CSV and NDJSON of profile batches, read back by DuckDB and by Python."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from engine.storage.folders import LocalFolder
from engine.writers.cells import split_list, split_map
from engine.writers.encode import CsvEncoder, JsonEncoder
from engine.writers.sink import FileSink

PROFILES = pa.table(
    {
        "_profile_id": pa.array([1, 2, 3], pa.int64()),
        "name": pa.array(['Ada, "the first"', None, "line\nbreak"], pa.string()),
        "score": pa.array([1.5, None, -2.0], pa.float64()),
        "member": pa.array([True, False, None], pa.bool_()),
        "joined": pa.array(
            [datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), None, datetime(2025, 1, 1, tzinfo=UTC)],
            pa.timestamp("us", tz="UTC"),
        ),
        "tags": pa.array([["vip", "a&b"], [], None], pa.list_(pa.string())),
        "attributes": pa.array(
            [[("tier", "gold"), ("k=v", "50%")], None, []], pa.map_(pa.string(), pa.string())
        ),
    }
)


def _count(source: str) -> int:
    found: int = duckdb.connect().execute(f"SELECT count(*) FROM {source}").fetchall()[0][0]
    return found


def encoded(encoder: CsvEncoder | JsonEncoder, tmp_path: Path, name: str) -> Path:
    sink = FileSink(LocalFolder(tmp_path), lambda part: name, header=encoder.header)
    for batch in PROFILES.to_batches(max_chunksize=2):
        sink.write(encoder.encode(batch), batch.num_rows)
    sink.finish()
    return tmp_path / name


def test_csv_reads_back(tmp_path: Path) -> None:
    path = encoded(CsvEncoder(PROFILES.schema), tmp_path, "users.csv")
    rows = list(csv.DictReader(io.StringIO(path.read_text(), newline="")))
    assert [r["name"] for r in rows] == ['Ada, "the first"', "", "line\nbreak"]
    assert rows[0]["joined"] == "2026-01-02T03:04:05Z"
    assert [split_list(r["tags"]) for r in rows] == [["vip", "a&b"], [], []]
    assert split_map(rows[0]["attributes"]) == {"tier": "gold", "k=v": "50%"}
    assert [r["member"] for r in rows] == ["true", "false", ""]
    # DuckDB reads it too, every line one user.
    assert _count(f"read_csv('{path}')") == 3


def test_csv_without_headers(tmp_path: Path) -> None:
    path = encoded(CsvEncoder(PROFILES.schema, headers=False), tmp_path, "users.csv")
    assert path.read_text().startswith("1,")


def test_json_reads_back(tmp_path: Path) -> None:
    path = encoded(JsonEncoder(), tmp_path, "users.json")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {
        "_profile_id": 1,
        "name": 'Ada, "the first"',
        "score": 1.5,
        "member": True,
        "joined": "2026-01-02T03:04:05Z",
        "tags": ["vip", "a&b"],
        "attributes": {"tier": "gold", "k=v": "50%"},
    }
    assert rows[1]["tags"] == []
    assert rows[1]["attributes"] is None
    assert _count(f"read_json('{path}')") == 3


def test_csv_is_written_exactly_as_the_readme_says() -> None:
    from datetime import UTC, datetime

    from engine.writers.encode import CsvEncoder

    batch = pa.record_batch(
        {
            "user_id": pa.array(["u-1", "", None]),
            "n": pa.array([42, None, -3], pa.int64()),
            "x": pa.array([1.5, -3.0, None]),
            "ok": pa.array([True, False, None]),
            "at": pa.array(
                [
                    datetime(2026, 11, 1, 9, 30, tzinfo=UTC),
                    datetime(2026, 11, 1, 9, 30, 0, 250000),
                    None,
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "tags": pa.array([["vip", "a&b"], [], None], pa.list_(pa.string())),
            "attrs": pa.array(
                [[("k", "v=1")], None, [("q", 'say "hi"')]], pa.map_(pa.string(), pa.string())
            ),
        }
    )
    encoder = CsvEncoder(batch.schema)
    assert encoder.header == b'"user_id","n","x","ok","at","tags","attrs"\n'
    assert bytes(encoder.encode(batch)) == (
        b'"u-1",42,1.5,true,"2026-11-01T09:30:00Z","vip&a%26b","k=v%3D1"\n'
        b'"",,-3,false,"2026-11-01T09:30:00.250000Z","",\n'
        b',-3,,,,,"q=say ""hi"""\n'
    )
