"""The json-import job end to end: runs, sequences that wait and stop, mapping, diff,
quarantine, bad files, S3."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import zstandard

from engine.store import Store
from tests.conftest import S3Server
from tests.test_csv_import import job_file as csv_job_file
from tests.test_csv_import import run, run_json, stream_rows


def job_file(tmp_path: Path, bucket: Path | str, **fields: Any) -> Path:
    return csv_job_file(
        tmp_path, bucket, **{"name": "json-events", "type": "json-import", **fields}
    )


def ndjson(*records: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_imports_nested_records_with_event_times(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events.json").write_bytes(
        ndjson(
            {
                "user": {"id": 1, "email": "a@x"},
                "at": {"ts": "2026-11-01T09:00:00Z"},
                "tags": ["x"],
            },
            {"user": {"id": 2}, "at": {"ts": 1793500000}, "amount": 1.50},
        )
    )
    job = job_file(tmp_path, bucket, file="events.json", timestamp="at.ts")
    record = run_json(tmp_path / "store", job)
    assert (record["status"], record["rows_read"], record["rows_imported"]) == ("succeeded", 2, 2)
    rows = stream_rows(tmp_path / "store")
    assert rows["user.id"].to_list() == ["1", "2"]
    assert rows["tags"].to_list() == [["x"], None]
    assert rows["amount"].to_list() == [None, "1.5"]
    assert rows["_line"].to_list() == [1, 2]
    assert [t.isoformat() for t in rows["_ts"].to_list()] == [
        "2026-11-01T09:00:00+00:00",
        "2026-11-01T02:26:40+00:00",
    ]


def test_a_sequence_waits_then_stops_and_restarts(tmp_path: Path, bucket: Path) -> None:
    store = tmp_path / "store"
    (bucket / "events_20261101.json").write_bytes(ndjson({"a": 1}))
    (bucket / "events_20261102.jsonl.gz").write_bytes(gzip.compress(ndjson({"a": 2})))
    (bucket / "events_20261103.ndjson.zst").write_bytes(zstandard.compress(b'[{"a": 3}]'))
    job = job_file(tmp_path, bucket, prefix="events_")
    for expected in (
        "events_20261101.json",
        "events_20261102.jsonl.gz",
        "events_20261103.ndjson.zst",
    ):
        record = run_json(store, job)
        assert (record["status"], record["object"].rsplit("/", 1)[1]) == ("succeeded", expected)
    assert run_json(store, job)["status"] == "waiting for next file"
    stopped = run_json(store, job)
    assert stopped["status"] == "stopped: no next file"
    assert "--restart" in stopped["note"]
    (bucket / "events_20261104.json").write_bytes(ndjson({"a": 4}))
    assert run_json(store, job)["status"] == "stopped: no next file"  # until restarted
    assert run_json(store, job, "--restart")["status"] == "succeeded"
    assert stream_rows(store)["a"].to_list() == ["1", "2", "3", "4"]


def test_empty_periods_lets_a_sequence_wait_longer(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events_20261101.json").write_bytes(ndjson({"a": 1}))
    job = job_file(tmp_path, bucket, prefix="events_", empty_periods=2)
    statuses = [run_json(tmp_path / "store", job)["status"] for _ in range(4)]
    assert statuses == [
        "succeeded",
        "waiting for next file",
        "waiting for next file",
        "stopped: no next file",
    ]


def test_mapping_renames_and_picks(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events.json").write_bytes(
        ndjson({"u": {"mail": "a@x", "id": 1}, "t": "2026-11-01T00:00:00Z"})
    )
    job = job_file(tmp_path, bucket, file="events.json", timestamp="t", mapping={"email": "u.mail"})
    assert run_json(tmp_path / "store", job)["status"] == "succeeded"
    rows = stream_rows(tmp_path / "store")
    assert rows["email"].to_list() == ["a@x"]
    assert "u.id" not in rows.columns
    assert "t" not in rows.columns


def test_diff_imports_only_changed_records(tmp_path: Path, bucket: Path) -> None:
    store = tmp_path / "store"
    (bucket / "events_20261101.json").write_bytes(
        ndjson({"a": 1, "t": ["x", "y"]}, {"a": 2, "t": ["z"]})
    )
    job = job_file(tmp_path, bucket, prefix="events_", diff=True)
    assert run_json(store, job)["rows_imported"] == 2
    (bucket / "events_20261102.json").write_bytes(
        ndjson({"a": 1, "t": ["x", "y"]}, {"a": 2, "t": ["z", "w"]})
    )
    second = run_json(store, job)
    assert (second["rows_imported"], second["rows_skipped"]) == (1, 1)


def test_quarantine_keeps_good_records(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events.json").write_bytes(b'{"a": 1}\n42\n{"a": NaN}\n{"a": 2}\n')
    job = job_file(tmp_path, bucket, file="events.json", bad_rows="quarantine", max_rejected=2)
    record = run_json(tmp_path / "store", job)
    assert (record["rows_imported"], record["rows_rejected"]) == (2, 2)
    rejected = Store(tmp_path / "store").rejected("events").sort("_line").collect()
    assert rejected["_line"].to_list() == [2, 3]


def test_a_bad_file_fails_the_run_and_commits_nothing(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events.json").write_bytes(b'{"a": 1}\n{"a": 2,}\n')
    job = job_file(tmp_path, bucket, file="events.json")
    result = run(tmp_path / "store", "run", str(job))
    assert result.exit_code == 1
    assert "events.json, line 2: invalid JSON" in result.output
    assert "Traceback" not in result.output
    assert "events" not in [s.name for s in Store(tmp_path / "store").streams()]


def test_unknown_job_fields_and_conflicts_are_spec_errors(tmp_path: Path, bucket: Path) -> None:
    job = job_file(tmp_path, bucket, file="a.json", fields=["a"], mapping={"b": "c"})
    result = run(tmp_path / "store", "run", str(job))
    assert result.exit_code == 1
    assert "`mapping` cannot both be given" in result.output


def test_import_from_s3(tmp_path: Path, s3: S3Server) -> None:
    store = tmp_path / "store"
    Store(store).authorizations.add(s3.authorization())
    name = s3.new_bucket()
    s3.put(name, "in/events_20261101.json.gz", gzip.compress(ndjson({"a": 1}, {"a": 2})))
    job = job_file(tmp_path, name, auth="moto", directory="in", prefix="events_")
    record = run_json(store, job)
    assert (record["status"], record["rows_imported"]) == ("succeeded", 2)
    assert run_json(store, job)["status"] == "waiting for next file"


def test_a_field_that_comes_late_makes_the_run_read_the_file_again(
    tmp_path: Path, bucket: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader announces the fields of the first records and streams the rest; a field
    # that first comes after them sends the run back to read the file whole, before any commit.
    import engine.readers.json as jsonreader

    monkeypatch.setattr(jsonreader, "HEAD_ROWS", 10)
    monkeypatch.setattr(jsonreader, "CHUNK_BYTES", 200)
    records = [{"a": i} for i in range(300)] + [{"a": 300, "late": "yes"}]
    (bucket / "events.json").write_bytes(ndjson(*records))
    job = job_file(tmp_path, bucket, file="events.json")
    record = run_json(tmp_path / "store", job)
    assert (record["status"], record["rows_imported"]) == ("succeeded", 301)
    rows = stream_rows(tmp_path / "store")
    assert rows["late"].to_list() == [None] * 300 + ["yes"]
    assert rows["a"].to_list() == [str(i) for i in range(301)]


def test_a_missing_timestamp_field_fails_and_leaves_nothing(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events.json").write_bytes(ndjson({"a": 1, "when": "2026-11-01"}))
    job = job_file(tmp_path, bucket, file="events.json", timestamp="at")
    record = run_json(tmp_path / "store", job)
    assert record["status"] == "failed"
    assert "the timestamp field 'at' is not in" in record["error"]
    assert "the fields are a, when" in record["error"]
    assert [p for p in (tmp_path / "store" / "tmp").rglob("*") if p.is_file()] == []


def test_an_empty_array_imports_nothing_and_says_so(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events.json").write_bytes(b"[]")
    summary = run_json(tmp_path / "store", job_file(tmp_path, bucket, file="events.json"))
    assert summary["status"] == "succeeded"
    assert summary["note"] == "the file has no records: nothing to import"


def test_fields_by_object_keep_the_timestamp_they_hold(tmp_path: Path, bucket: Path) -> None:
    # Once an internal error: the timestamp was read twice, under `event` and on its own.
    (bucket / "events.json").write_bytes(
        ndjson({"user": {"id": "u1"}, "event": {"name": "buy", "time": "2026-11-01T09:00:00Z"}})
    )
    job = job_file(
        tmp_path, bucket, file="events.json", fields=["user.id", "event"], timestamp="event.time"
    )
    assert run_json(tmp_path / "store", job)["status"] == "succeeded"
    rows = stream_rows(tmp_path / "store")
    assert rows["event.time"].to_list() == ["2026-11-01T09:00:00Z"]  # kept: `event` asked for it
    assert str(rows["_ts"][0]) == "2026-11-01 09:00:00+00:00"
