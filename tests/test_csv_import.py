"""The csv-import job end to end: job files, runs, sequences, diff, quarantine, exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner, Result

from engine.store import Store
from pipelines.cli import cli
from tests.conftest import S3Server

HEADER = "user_id,email,event,ts\n"


def events(*rows: str) -> bytes:
    return (HEADER + "".join(r + "\n" for r in rows)).encode()


def job_file(tmp_path: Path, bucket: Path | str, **fields: Any) -> Path:
    """A job file (a csv-import unless `type` says otherwise); dict values become tables."""
    values = {
        "name": "events-import",
        "type": "csv-import",
        "bucket": str(bucket),
        "stream": "events",
        **fields,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict)]
    for key, table in values.items():
        if isinstance(table, dict):
            lines += [f"[{key}]", *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in table.items())]
    path = tmp_path / f"{values['name']}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(store: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--store", str(store), *args])


def run_json(store: Path, job: Path, *args: str) -> dict[str, Any]:
    result = run(store, "run", str(job), "-o", "json", *args)
    record: dict[str, Any] = json.loads(result.stdout)
    assert (result.exit_code == 0) == (record["status"] != "failed"), result.output
    return record


def stream_rows(store: Path, name: str = "events") -> pl.DataFrame:
    return Store(store).stream(name).sort("_source", "_line").collect()


def test_imports_a_file_with_event_times_and_lines(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events.csv").write_bytes(
        events("u1,a@x.com,signup,2026-11-01T09:00:00Z", 'u2,"b@x.com",buy,2026-11-01 10:30:00')
    )
    job = job_file(tmp_path, bucket, file="events.csv", timestamp="ts", timezone="Europe/Paris")
    record = run_json(tmp_path / "store", job)
    assert record["status"] == "succeeded"
    assert (record["rows_read"], record["rows_imported"], record["rows_rejected"]) == (2, 2, 0)
    assert record["object"].endswith("exports/events.csv")
    assert record["bytes"] == (bucket / "events.csv").stat().st_size
    assert set(record) >= {
        "status",
        "object",
        "rows_read",
        "rows_imported",
        "rows_skipped",
        "rows_rejected",
        "bytes",
        "seconds",
    }
    rows = stream_rows(tmp_path / "store")
    assert rows["user_id"].to_list() == ["u1", "u2"]
    assert rows["_line"].to_list() == [2, 3]
    assert [t.isoformat() for t in rows["_ts"].to_list()] == [
        "2026-11-01T09:00:00+00:00",
        "2026-11-01T09:30:00+00:00",  # 10:30 in Paris
    ]
    assert rows["_source"].to_list() == [record["object"]] * 2


def test_running_the_same_file_again_imports_nothing(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events.csv").write_bytes(events("u1,a@x.com,signup,1"))
    job = job_file(tmp_path, bucket, file="events.csv")
    assert run_json(tmp_path / "store", job)["rows_imported"] == 1
    assert run_json(tmp_path / "store", job)["status"] == "already imported"
    assert stream_rows(tmp_path / "store").height == 1


def test_a_prefix_sequence_takes_one_file_per_run(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events_20261102.csv").write_bytes(events("u2,b,x,1"))
    (bucket / "events_20261101.csv").write_bytes(events("u1,a,x,1"))
    (bucket / "other_20261101.csv").write_bytes(events("zz,z,z,1"))
    job = job_file(tmp_path, bucket, prefix="events_")
    store = tmp_path / "store"
    assert run_json(store, job)["object"].endswith("events_20261101.csv")
    assert run_json(store, job)["object"].endswith("events_20261102.csv")
    quiet = run(store, "run", str(job))
    assert quiet.exit_code == 0
    assert "no new file" in quiet.output
    (bucket / "events_20261103.csv").write_bytes(events("u3,c,x,1"))
    assert run_json(store, job)["object"].endswith("events_20261103.csv")
    assert stream_rows(store)["user_id"].to_list() == ["u1", "u2", "u3"]


def test_diff_imports_only_changed_and_new_rows(tmp_path: Path, bucket: Path) -> None:
    store = tmp_path / "store"
    (bucket / "events_20261101.csv").write_bytes(
        events("u1,a,signup,1", "u2,b,signup,1", "u2,b,signup,1", "u3,c,signup,1")
    )
    job = job_file(tmp_path, bucket, prefix="events_", diff=True)
    assert run_json(store, job)["rows_imported"] == 4
    (bucket / "events_20261102.csv").write_bytes(
        events("u1,a,signup,1", "u2,b,signup,1", "u3,c,CHANGED,1", "u4,d,signup,1")
    )
    record = run_json(store, job)
    assert (record["rows_read"], record["rows_imported"], record["rows_skipped"]) == (4, 2, 2)
    second = stream_rows(store).filter(pl.col("_source").str.ends_with("02.csv"))
    assert sorted(second["event"].to_list()) == ["CHANGED", "signup"]
    assert sorted(second["_line"].to_list()) == [4, 5]


def test_diff_a_new_empty_column_and_a_new_order_change_no_row(
    tmp_path: Path, bucket: Path
) -> None:
    # Once: the same 3 rows plus 1 new imported 4.
    store = tmp_path / "store"
    (bucket / "events_20261101.csv").write_bytes(b"user,event\nu1,a\nu2,b\nu3,c\n")
    job = job_file(tmp_path, bucket, prefix="events_", diff=True)
    assert run_json(store, job)["rows_imported"] == 3
    (bucket / "events_20261102.csv").write_bytes(b"event,note,user\na,,u1\nb,,u2\nc,,u3\nd,,u4\n")
    record = run_json(store, job)
    assert (record["rows_read"], record["rows_imported"], record["rows_skipped"]) == (4, 1, 3)
    (bucket / "events_20261103.csv").write_bytes(b"event,note,user\na,hi,u1\nb,,u2\n")
    assert run_json(store, job)["rows_imported"] == 1  # a value in the new column is a change


def test_a_missing_snapshot_is_an_error_unless_reset(tmp_path: Path, bucket: Path) -> None:
    store = tmp_path / "store"
    (bucket / "events_20261101.csv").write_bytes(events("u1,a,x,1"))
    job = job_file(tmp_path, bucket, prefix="events_", diff=True)
    run_json(store, job)
    for path in (store / "snapshots").rglob("*.parquet"):
        path.unlink()
    (bucket / "events_20261102.csv").write_bytes(events("u1,a,x,1", "u2,b,x,1"))
    failed = run_json(store, job)
    assert failed["status"] == "failed"
    assert "--reset-diff" in failed["error"]
    assert stream_rows(store).height == 1
    reset = run_json(store, job, "--reset-diff")
    assert reset["rows_imported"] == 2


def test_quarantine_keeps_good_rows_and_records_bad_ones(tmp_path: Path, bucket: Path) -> None:
    store = tmp_path / "store"
    good = [f"u{i},e{i},x,2026-11-01T00:00:00Z" for i in range(200)]
    (bucket / "events.csv").write_bytes(
        events(*good[:100], "short,row", *good[100:], "u9,e9,x,not-a-time")
    )
    job = job_file(
        tmp_path, bucket, file="events.csv", timestamp="ts", bad_rows="quarantine", max_rejected=5
    )
    record = run_json(store, job)
    assert (record["rows_read"], record["rows_imported"], record["rows_rejected"]) == (202, 200, 2)
    rejected = Store(store).rejected("events").sort("_line").collect()
    assert rejected["_line"].to_list() == [102, 203]
    assert rejected["reason"].to_list()[0] == "expected 4 fields, found 2"
    assert "field 'ts' is not a timestamp: 'not-a-time'" in rejected["reason"].to_list()[1]
    shown = run(store, "stream", "show", "events", "--rejected", "-o", "json")
    assert [r["_line"] for r in json.loads(shown.stdout)] == [102, 203]


def test_too_many_rejections_fail_the_run_and_commit_nothing(tmp_path: Path, bucket: Path) -> None:
    store = tmp_path / "store"
    (bucket / "events.csv").write_bytes(events("u1,a,x,1", "bad", "u2,b,x,1", "bad"))
    job = job_file(tmp_path, bucket, file="events.csv", bad_rows="quarantine", max_rejected=0.25)
    record = run_json(store, job)
    assert record["status"] == "failed"
    assert "50.00% of the rows were rejected" in record["error"]
    assert "line 3" in record["error"]
    assert Store(store).streams() == []


def test_a_bad_timestamp_fails_naming_column_line_and_value(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events.csv").write_bytes(events("u1,a,x,2026-11-01", "u2,b,x,31/12/2026"))
    job = job_file(tmp_path, bucket, file="events.csv", timestamp="ts")
    result = run(tmp_path / "store", "run", str(job))
    assert result.exit_code == 1
    assert "events.csv, line 3: field 'ts' is not a timestamp: '31/12/2026'" in result.output
    assert Store(tmp_path / "store").streams() == []


def test_header_only_file_imports_nothing_and_says_so(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events.csv").write_bytes(HEADER.encode())
    record = run_json(tmp_path / "store", job_file(tmp_path, bucket, file="events.csv"))
    assert (record["status"], record["rows_imported"]) == ("succeeded", 0)
    assert "header and no rows" in record["note"]


def test_fields_are_selected(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events.csv").write_bytes(events("u1,a@x,signup,2026-11-01T00:00:00Z"))
    job = job_file(tmp_path, bucket, file="events.csv", fields=["user_id"], timestamp="ts")
    run_json(tmp_path / "store", job)
    rows = stream_rows(tmp_path / "store")
    assert [c for c in rows.columns if not c.startswith("_")] == ["user_id"]
    bad = job_file(tmp_path, bucket, name="other", file="events.csv", fields=["user_id", "mail"])
    record = run_json(tmp_path / "store", bad)
    assert "'mail' are not in" in record["error"]
    assert "the fields are user_id, email, event, ts" in record["error"]


def test_a_missing_file_lists_the_nearest_names(tmp_path: Path, bucket: Path) -> None:
    (bucket / "events_2026.csv").write_bytes(events("u1,a,x,1"))
    record = run_json(tmp_path / "store", job_file(tmp_path, bucket, file="event_2026.csv"))
    assert "no file 'event_2026.csv'" in record["error"]
    assert "nearest: events_2026.csv" in record["error"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"file": "a.csv", "strem": "x"},
            "field 'strem' is not a field of a csv-import job: did you mean 'stream'?",
        ),
        ({"file": "a.csv", "prefix": "a_"}, "field 'file' or 'prefix' must be given, and not both"),
        ({"file": "a.csv", "delimiter": ";;"}, "field 'delimiter' must be one character"),
        ({"file": "a.csv", "diff": "yes"}, "field 'diff' must be true or false, not 'yes'"),
        ({"file": "a.csv", "timezone": "Paris"}, "field 'timezone' must be an IANA timezone"),
        ({"file": "a.csv", "keep_updated": True}, "field 'frequency' is needed when keep_updated"),
        ({"file": "a.csv", "time_of_day": "25:00"}, "field 'time_of_day' must be a 24-hour time"),
        ({"file": "a.csv", "max_rejected": 1.5}, "field 'max_rejected' must be a count"),
        # Once passed at load and failed as a run naming neither the file nor the field:
        ({"file": "a.csv", "quote_char": ","}, "field 'quote_char' must be one character other"),
        ({"file": "a.csv", "comment": "##"}, "field 'comment' must be one character"),
        ({"file": "a.csv", "comment": ","}, "field 'comment' must be one character other than"),
        ({"file": "a.csv", "columns": ["a"]}, "field 'columns' name the fields of a file without"),
        ({"file": "a.csv", "header": False, "columns": ["a", "a"]}, "field 'columns' names a"),
    ],
)
def test_job_file_errors_name_the_field(
    tmp_path: Path, bucket: Path, fields: dict[str, Any], message: str
) -> None:
    result = run(tmp_path / "store", "run", str(job_file(tmp_path, bucket, **fields)))
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_registered_jobs(tmp_path: Path, bucket: Path) -> None:
    store = tmp_path / "store"
    (bucket / "events.csv").write_bytes(events("u1,a,x,1"))
    job = job_file(
        tmp_path,
        bucket,
        file="events.csv",
        keep_updated=True,
        frequency="daily",
        time_of_day="06:30",
        schedule_timezone="Europe/London",
    )
    assert run(store, "jobs", "add", str(job)).exit_code == 0
    assert run(store, "jobs", "add", str(job)).exit_code == 1
    assert run(store, "jobs", "add", str(job), "--replace").exit_code == 0
    listed = json.loads(run(store, "jobs", "list", "-o", "json").stdout)
    assert [(j["name"], j["type"]) for j in listed] == [("events-import", "csv-import")]
    assert 'frequency = "daily"' in run(store, "jobs", "show", "events-import").stdout
    ran = run(store, "jobs", "run", "events-import", "-o", "json")
    assert json.loads(ran.stdout)["rows_imported"] == 1
    history = json.loads(run(store, "runs", "--job", "events-import", "-o", "json").stdout)
    assert [(r["status"], r["rows_imported"]) for r in history] == [("succeeded", 1)]
    assert run(store, "jobs", "remove", "events-import").exit_code == 0
    assert run(store, "jobs", "run", "events-import").exit_code == 1


def test_import_from_s3(tmp_path: Path, s3: S3Server) -> None:
    store = tmp_path / "store"
    Store(store).authorizations.add(s3.authorization())
    name = s3.new_bucket()
    import gzip

    s3.put(name, "in/events_20261101.csv.gz", gzip.compress(events("u1,a,x,1", "u2,b,y,2")))
    job = job_file(tmp_path, name, auth="moto", directory="in", prefix="events_")
    record = run_json(store, job)
    assert (record["status"], record["rows_imported"]) == ("succeeded", 2)
    assert record["object"] == f"s3://{name}/in/events_20261101.csv.gz"
    assert run_json(store, job)["status"] == "no new file"


CRASH = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from engine.store import Store
    from engine import import_state
    from pipelines import jobs

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    import_state.remember_file = die  # after the stream commit, before the job's state moves on
    job, _ = jobs.load_file(Path(sys.argv[2]))
    jobs.run(Store(sys.argv[1]), job)
    """
)


def test_killed_after_the_commit_then_rerun(tmp_path: Path, bucket: Path) -> None:
    store = tmp_path / "store"
    (bucket / "events_20261101.csv").write_bytes(events("u1,a,x,1", "u2,b,x,1"))
    (bucket / "events_20261102.csv").write_bytes(events("u1,a,x,1", "u3,c,x,1"))
    job = job_file(tmp_path, bucket, prefix="events_", diff=True)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, str(store), str(job)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert crashed.returncode == -9, crashed.stderr
    assert stream_rows(store).height == 2
    # The re-run first finishes what the killed run began (the state moves on, and the
    # snapshot of the first file is in place for the diff), then imports the next file.
    second = run_json(store, job)
    assert "finished the commit of" in second["note"]
    assert second["object"].endswith("events_20261102.csv")
    assert (second["rows_imported"], second["rows_skipped"]) == (1, 1)
    assert sorted(stream_rows(store)["user_id"].to_list()) == ["u1", "u2", "u3"]


def test_diff_and_quarantine_with_tables_in_s3(tmp_path: Path, bucket: Path, s3: S3Server) -> None:
    store_path = tmp_path / "store"
    Store(store_path).authorizations.add(s3.authorization())
    tables = s3.new_bucket()
    Store(store_path, tables=f"s3://{tables}/lake", tables_auth="moto")
    (bucket / "events_20261101.csv").write_bytes(events("u1,a,x,1", "bad", "u2,b,x,1"))
    job = job_file(
        tmp_path, bucket, prefix="events_", diff=True, bad_rows="quarantine", max_rejected=1
    )
    first = run_json(store_path, job)
    assert (first["rows_imported"], first["rows_rejected"]) == (2, 1)
    (bucket / "events_20261102.csv").write_bytes(events("u1,a,x,1", "u2,b,CHANGED,1"))
    second = run_json(store_path, job)
    assert (second["rows_imported"], second["rows_skipped"]) == (1, 1)
    store = Store(store_path)
    assert sorted(store.stream("events").collect()["event"].to_list()) == ["CHANGED", "x", "x"]
    assert store.rejected("events").collect()["_line"].to_list() == [3]
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=tables)["Contents"]]
    assert any(k.startswith("lake/rejected/events/") for k in keys)


def test_a_bad_row_deep_in_the_file_is_reported_as_itself(tmp_path: Path, bucket: Path) -> None:
    # The row fails while the Delta writer pulls the rows: the error is the reader's, not a
    # wrapped writer error.
    rows = [f"u{i},a@x.com,e,2026-11-01T00:00:00Z" for i in range(2000)] + ["u,a,b,c,d"]
    (bucket / "events.csv").write_bytes(events(*rows))
    job = job_file(tmp_path, bucket, file="events.csv", max_line_bytes=4096)
    result = run(tmp_path / "store", "run", str(job))
    assert result.exit_code == 1
    assert "line 2002: expected 4 fields, found 5" in result.output
    assert "Delta" not in result.output
    assert "Traceback" not in result.output


def test_nothing_outside_a_local_bucket_is_read(tmp_path: Path, bucket: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_bytes(b"a,b\n1,2\n")
    (bucket / "link").symlink_to(outside, target_is_directory=True)
    store = tmp_path / "store"
    dotted = job_file(tmp_path, bucket, directory="../outside", file="secret.csv")
    result = run(store, "run", str(dotted))
    assert result.exit_code == 1
    assert "field 'directory' = '../outside' would leave the bucket" in result.stderr
    linked = run_json(store, job_file(tmp_path, bucket, directory="link", file="secret.csv"))
    assert linked["status"] == "failed"
    assert f"the directory leads to {outside}, outside the folder {bucket}" in linked["error"]
    assert not (store / "tables").exists() or Store(store).streams() == []
