"""Imports that stop at every stage boundary — killed (os._exit, as SIGKILL or a power cut),
Ctrl-C (SIGINT) or SIGTERM — then run again: every row of every file exactly once, counted
as a multiset against the sources, and nothing left behind (no journal entry, no pending
snapshot, no data file that no commit references).

Each case runs `lakeport run` in a subprocess with the crash hook set (engine/crash.py) on the
second file of a sequence, re-runs the job, then imports a third file. The local cases run by
default; the same cases with the sources in S3 are marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from engine import import_state
from engine.crash import AT_ENV, CRASH_EXIT_CODE, IMPORT_STAGES, WITH_ENV
from engine.lease import Lease
from engine.store import Source, Store
from pipelines import jobs
from tests.conftest import S3Server, imported_rows

HOW = {"exit": CRASH_EXIT_CODE, "SIGINT": 130, "SIGTERM": 143}
STATUS = {"exit": "died", "SIGINT": "interrupted", "SIGTERM": "interrupted"}
LAKEPORT = "import sys; from pipelines.cli import main; sys.argv[0] = 'lakeport'; main()"

Row = tuple[str, str]


def rows(start: int, count: int) -> list[Row]:
    return [(f"u{i}", f"event {i % 5}") for i in range(start, start + count)]


def encode(kind: str, found: list[Row]) -> bytes:
    if kind == "csv":
        return ("user_id,event\n" + "".join(f"{u},{e}\n" for u, e in found)).encode()
    return "".join(json.dumps({"user_id": u, "event": e}) + "\n" for u, e in found).encode()


FILES = [rows(0, 3000), rows(1500, 3000), rows(2500, 3000)]
"""A sequence of three files, each sharing rows with the one before (for the diff)."""


def expected(diff: bool) -> Counter[Row]:
    return imported_rows(*FILES, diff=diff)


def cases(backends: list[str]) -> list[tuple[str, str, str, bool, str]]:
    found = []
    for backend in backends:
        for kind in ("csv", "json"):
            for diff in (True, False):
                for stage in IMPORT_STAGES:
                    if stage == "diffed" and not diff:
                        continue  # a plain import has no diff to stop in
                    for how in HOW:
                        found.append((kind, stage, how, diff, backend))
    return found


def ids(case: tuple[str, str, str, bool, str]) -> str:
    kind, stage, how, diff, backend = case
    return f"{kind}-{stage}-{how}-{'diff' if diff else 'plain'}-{backend}"


def crash_then_rerun(
    case: tuple[str, str, str, bool, str],
    tmp_path: Path,
    s3: S3Server | None,
    *,
    on_first_file: bool = False,
) -> None:
    kind, stage, how, diff, backend = case
    store_path = tmp_path / "store"
    store = Store(store_path)
    name = f"events_2026110{{}}.{kind}"
    if backend == "s3":
        assert s3 is not None
        store.authorizations.add(s3.authorization())
        bucket = s3.new_bucket()
        folder, auth = f"s3://{bucket}/in", 'auth = "moto"\n'

        def put(number: int) -> None:
            s3.put(bucket, "in/" + name.format(number), encode(kind, FILES[number - 1]))
    else:
        local = tmp_path / "in"
        local.mkdir()
        folder, auth = str(local), ""

        def put(number: int) -> None:
            (local / name.format(number)).write_bytes(encode(kind, FILES[number - 1]))

    job_file = tmp_path / "job.toml"
    job_file.write_text(
        f'name = "crashing"\ntype = "{kind}-import"\nbucket = "{folder}"\n{auth}'
        f'prefix = "events_"\nstream = "events"\ndiff = {"true" if diff else "false"}\n'
    )
    job = jobs.load(job_file.read_text(), str(job_file))
    put(1)
    if not on_first_file:
        assert jobs.run(store, job).status == "succeeded"
    put(2)
    crashed = subprocess.run(
        [sys.executable, "-c", LAKEPORT, "--store", str(store_path), "run", str(job_file)],
        capture_output=True,
        text=True,
        env={**os.environ, AT_ENV: stage, WITH_ENV: how},
        timeout=120,
    )
    assert crashed.returncode == HOW[how], crashed.stderr
    assert "Traceback" not in crashed.stderr
    assert "Fatal Python error" not in crashed.stderr
    (last,) = store.state.runs("crashing", limit=1)
    assert last.status == STATUS[how]
    assert (last.object or "").endswith(name.format(1 if on_first_file else 2))
    assert "run the job again" in (last.error or "")

    again = jobs.run(store, job)
    assert not again.failed, again.error
    put(3)
    for _ in range(3):  # the re-runs may have imported the next files already: then nothing
        record = jobs.run(store, job)
        assert not record.failed, record.error
    frame = store.stream("events").select("user_id", "event").collect()
    assert Counter(frame.iter_rows()) == expected(diff)
    # Nothing is left behind: no journal entry, no pending snapshot, no orphan data file.
    assert store.state.get_journal("crashing", import_state.JOURNAL) is None
    snapshots = store.snapshots_path("crashing")
    left = sorted(p.name for p in snapshots.iterdir()) if snapshots.exists() else []
    assert left == (["current.parquet"] if diff else [])
    assert store.remove_unreferenced("events") == []


def _sigterm_slow(found: list[tuple[str, str, str, bool, str]]) -> list[Any]:
    """The cases, SIGTERM's marked slow: it ends a run as SIGINT does (the same handler path),
    and the default run keeps under its time."""
    return [pytest.param(c, marks=pytest.mark.slow) if c[2] == "SIGTERM" else c for c in found]


@pytest.mark.parametrize("case", _sigterm_slow(cases(["local"])), ids=ids)
def test_a_stopped_import_is_finished_exactly_once(
    case: tuple[str, str, str, bool, str], tmp_path: Path
) -> None:
    crash_then_rerun(case, tmp_path, None)


@pytest.mark.parametrize("case", [c for c in cases(["local"]) if c[2] == "exit" and c[3]], ids=ids)
def test_a_job_stopped_on_its_first_file_is_finished_exactly_once(
    case: tuple[str, str, str, bool, str], tmp_path: Path
) -> None:
    # The first file of a diff job has no snapshot before it: a stop must not lose the one
    # it makes (the next file would then need --reset-diff, and import everything again).
    crash_then_rerun(case, tmp_path, None, on_first_file=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", cases(["s3"]), ids=ids)
def test_a_stopped_import_from_s3_is_finished_exactly_once(
    case: tuple[str, str, str, bool, str], tmp_path: Path, s3: S3Server
) -> None:
    crash_then_rerun(case, tmp_path, s3)


def kill_a_large_import(tmp_path: Path, store_path: Path, name: str) -> Path:
    """Import 3M rows in a process killed before the commit: large enough that the Delta
    writer has a file (or an upload) under way. The job file."""
    folder = tmp_path / "in"
    folder.mkdir()
    with (folder / "events_20261101.csv").open("w") as out:
        out.write("user_id,event\n")
        out.writelines(f"u{i},event {i} of {i * 7919 % 1000003}\n" for i in range(3_000_000))
    job_file = tmp_path / "job.toml"
    job_file.write_text(
        f'name = "{name}"\ntype = "csv-import"\nbucket = "{folder}"\nprefix = "events_"\n'
        'stream = "events"\n'
    )
    crashed = subprocess.run(
        [sys.executable, "-c", LAKEPORT, "--store", str(store_path), "run", str(job_file)],
        capture_output=True,
        text=True,
        env={**os.environ, AT_ENV: "before-commit", WITH_ENV: "exit"},
        timeout=120,
    )
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr
    return job_file


def test_a_killed_import_leaves_a_data_file_the_next_run_removes(tmp_path: Path) -> None:
    # Large enough that the Delta writer has a file under way when the process is killed.
    store_path = tmp_path / "store"
    job_file = kill_a_large_import(tmp_path, store_path, "big")
    stream_folder = store_path / "streams" / "events"
    left = [p for p in stream_folder.rglob("*") if p.is_file()]
    assert left, "the killed append wrote no file: the test shows nothing"
    assert not (stream_folder / "_delta_log").exists()
    store = Store(store_path)
    (died,) = store.state.runs("big")
    assert died.status == "died"
    record = jobs.run(store, jobs.load(job_file.read_text(), str(job_file)))
    assert record.status == "succeeded"
    assert "undid the unfinished import" in (record.note or "")
    assert not any(p.exists() for p in left)
    assert store.stream("events").collect().height == 3_000_000


def test_store_vacuum_removes_what_a_dead_writer_left(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    store = Store(store_path)
    batch = pa.record_batch({"user_id": pa.array(["u1", "u2"])})
    store.append("events", [batch], source=Source("a.csv", "1"), job="j")
    kept = sorted(p for p in (store_path / "streams" / "events").glob("*.parquet"))
    orphan = store_path / "streams" / "events" / "part-00000-dead-c000.snappy.parquet"
    orphan.write_bytes(b"PAR1 half a file")
    done = subprocess.run(
        [sys.executable, "-c", LAKEPORT, "--store", str(store_path), "store", "vacuum"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"removed {orphan}" in done.stdout
    assert "stream 'events': 1 unreferenced file removed" in done.stdout
    assert not orphan.exists()
    assert sorted((store_path / "streams" / "events").glob("*.parquet")) == kept
    assert store.stream("events").collect().height == 2


def test_a_file_being_written_by_a_live_append_is_not_removed(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    batch = pa.record_batch({"user_id": pa.array(["u1"])})
    store.append("events", [batch], source=Source("a.csv", "1"), job="j")
    writing = tmp_path / "store" / "streams" / "events" / "part-00001-live-c000.snappy.parquet"
    with Lease(store.state, f"append:{store.stream_url('events')}|some-app-id"):
        writing.write_bytes(b"PAR1 being written")
        assert store.remove_unreferenced("events") == []
        assert writing.exists()
    assert store.remove_unreferenced("events") == [str(writing)]


@pytest.mark.parametrize("stage", ["read", "before-commit", "committed", "snapshot"])
def test_a_killed_import_into_tables_in_s3_is_finished_exactly_once(
    stage: str, tmp_path: Path, s3: S3Server
) -> None:
    store_path = tmp_path / "store"
    Store(store_path).authorizations.add(s3.authorization())
    tables = s3.new_bucket()
    store = Store(store_path, tables=f"s3://{tables}/lake", tables_auth="moto")
    folder = tmp_path / "in"
    folder.mkdir()
    job_file = tmp_path / "job.toml"
    job_file.write_text(
        f'name = "lake"\ntype = "csv-import"\nbucket = "{folder}"\nprefix = "events_"\n'
        'stream = "events"\ndiff = true\n'
    )
    job = jobs.load(job_file.read_text(), str(job_file))
    for number, found in enumerate(FILES, start=1):
        (folder / f"events_2026110{number}.csv").write_bytes(encode("csv", found))
    crashed = subprocess.run(
        [sys.executable, "-c", LAKEPORT, "--store", str(store_path), "run", str(job_file)],
        capture_output=True,
        text=True,
        env={**os.environ, AT_ENV: stage, WITH_ENV: "exit"},
        timeout=120,
    )
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr
    for _ in range(4):
        record = jobs.run(store, job)
        assert not record.failed, record.error
    frame = store.stream("events").select("user_id", "event").collect()
    assert Counter(frame.iter_rows()) == expected(True)
    assert store.remove_unreferenced("events") == []


def test_a_killed_import_into_s3_leaves_no_unfinished_upload(tmp_path: Path, s3: S3Server) -> None:
    store_path = tmp_path / "store"
    Store(store_path).authorizations.add(s3.authorization())
    tables = s3.new_bucket()
    store = Store(store_path, tables=f"s3://{tables}/lake", tables_auth="moto")
    job_file = kill_a_large_import(tmp_path, store_path, "lake")
    client = s3.client()
    assert client.list_multipart_uploads(Bucket=tables).get("Uploads"), "no upload under way"
    record = jobs.run(store, jobs.load(job_file.read_text(), str(job_file)))
    assert record.status == "succeeded", record.error
    assert not client.list_multipart_uploads(Bucket=tables).get("Uploads")
    assert store.stream("events").collect().height == 3_000_000
