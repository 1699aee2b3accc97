"""Runs at the same time: one run of a job at a time (a lease in state.db), the loser told
clearly; concurrent first appends to a new stream; appends of one source from two threads."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from engine.lease import JobRunning
from engine.store import Source, Store
from pipelines import jobs
from tests.conftest import S3Server
from tests.faults import FaultProxy, Rule

LAKEPORT = "import sys; from pipelines.cli import main; sys.argv[0] = 'lakeport'; main()"


def csv_of(start: int, count: int) -> bytes:
    return (
        "user_id,event\n" + "".join(f"u{i},e{i}\n" for i in range(start, start + count))
    ).encode()


def lakeport(store: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", LAKEPORT, "--store", str(store), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_get(proxy: FaultProxy, key: str, timeout: float = 30) -> None:
    """Until the proxy has seen the GET of `key`: the run reading it holds the job's lease."""
    deadline = time.monotonic() + timeout
    while not any(op == "get" and key in path for op, path, _ in proxy.requests):
        assert time.monotonic() < deadline, proxy.requests
        time.sleep(0.05)


@pytest.mark.parametrize("stream_exists", [False, True], ids=["new-stream", "existing-stream"])
@pytest.mark.parametrize("wait", [False, True], ids=["fail", "wait"])
def test_two_runs_of_one_job_at_once(
    stream_exists: bool, wait: bool, tmp_path: Path, s3: S3Server, proxy: FaultProxy
) -> None:
    store_path = tmp_path / "store"
    store = Store(store_path)
    store.authorizations.add(replace(s3.authorization("proxied"), endpoint_url=proxy.endpoint))
    bucket = s3.new_bucket()
    job = tmp_path / "job.toml"
    job.write_text(
        f'name = "twice"\ntype = "csv-import"\nbucket = "s3://{bucket}/in"\nauth = "proxied"\n'
        'prefix = "events_"\nstream = "events"\n'
    )
    expected = Counter[str]()
    if stream_exists:
        s3.put(bucket, "in/events_20261101.csv", csv_of(0, 1000))
        assert jobs.run(store, jobs.load(job.read_text(), "job")).status == "succeeded"
        expected.update(f"u{i}" for i in range(1000))
    s3.put(bucket, "in/events_20261102.csv", csv_of(1000, 5000))
    expected.update(f"u{i}" for i in range(1000, 6000))
    proxy.add(Rule("get", "slow", arg=3))
    first = lakeport(store_path, "run", str(job))
    wait_for_get(proxy, "events_20261102.csv")
    second = lakeport(store_path, "run", str(job), *(["--wait"] if wait else []))
    _, second_err = second.communicate(timeout=120)
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    if wait:
        assert second.returncode == 0, second_err
    else:
        assert second.returncode == 1
        assert f"job 'twice' is running (pid {first.pid} on " in second_err
        assert "--wait" in second_err
    users = Store(store_path).stream("events").collect()["user_id"].to_list()
    assert Counter(users) == expected


def test_a_lease_held_by_a_live_run_in_this_process_refuses_a_second(
    tmp_path: Path, s3: S3Server, proxy: FaultProxy
) -> None:
    store = Store(tmp_path / "store")
    store.authorizations.add(replace(s3.authorization("proxied"), endpoint_url=proxy.endpoint))
    bucket = s3.new_bucket()
    s3.put(bucket, "in/events.csv", csv_of(0, 100))
    job = jobs.load(
        f'name = "once"\ntype = "csv-import"\nbucket = "s3://{bucket}/in"\nauth = "proxied"\n'
        'file = "events.csv"\nstream = "events"\n',
        "job",
    )
    proxy.add(Rule("get", "slow", arg=2))
    running = threading.Thread(target=jobs.run, args=(store, job))
    running.start()
    wait_for_get(proxy, "events.csv")
    with pytest.raises(JobRunning, match=r"job 'once' is running \(pid \d+ on .*, since "):
        jobs.run(store, job)
    running.join()
    assert store.stream("events").collect().height == 100
    assert jobs.run(store, job).status == "already imported"


def test_concurrent_first_appends_of_two_jobs_create_the_stream_once(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    Store(store_path)
    folder = tmp_path / "in"
    folder.mkdir()
    for number in (1, 2):
        (folder / f"part{number}.csv").write_bytes(csv_of(number * 1_000_000, 200_000))
        (tmp_path / f"job{number}.toml").write_text(
            f'name = "job{number}"\ntype = "csv-import"\nbucket = "{folder}"\n'
            f'file = "part{number}.csv"\nstream = "shared"\n'
        )
    runs = [lakeport(store_path, "run", str(tmp_path / f"job{n}.toml")) for n in (1, 2)]
    for process in runs:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    users = Store(store_path).stream("shared").collect()["user_id"].to_list()
    assert len(users) == 400_000
    assert len(set(users)) == 400_000


def test_two_threads_appending_one_source_commit_it_once(store: Store) -> None:
    batch = pa.record_batch({"user_id": pa.array([f"u{i}" for i in range(50_000)])})
    source = Source("s3://b/events.csv", "etag-1")
    results = []

    def append() -> None:
        results.append(store.append("events", [batch] * 4, source=source, job="j"))

    threads = [threading.Thread(target=append) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.already_committed for r in results) == [False, True]
    assert store.stream("events").collect().height == 200_000
