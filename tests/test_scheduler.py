"""The scheduler: when jobs run, what a failure or a pause does, one scheduler per store, and
a real `lakeport scheduler` process that runs a job twice and stops cleanly on SIGTERM.

The logic runs against a clock the tests move and a launcher whose processes only print the
record a run would; the last tests start real runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

import pytest

from engine.errors import ConfigError
from engine.store import Store
from pipelines.runs import STOPPED
from pipelines.scheduler import Retries, Scheduler, SchedulerLease, overview, resume
from tests.conftest import S3Server

LAKEPORT = [sys.executable, "-m", "pipelines"]
START = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)


def job_text(name: str, kind: str = "event-export", **fields: Any) -> str:
    values: dict[str, Any] = {"name": name, "type": kind, "keep_updated": True, **fields}
    if kind == "event-export":
        values.setdefault("bucket", "/tmp/lakeport-scheduler-tests-out")
    else:
        values |= {"bucket": "/tmp/lakeport-scheduler-tests-in", "file": "e.csv", "stream": "s"}
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


TIMED = job_text(
    "timed",
    "csv-import",
    frequency="daily",
    time_of_day="02:30",
    schedule_timezone="America/New_York",
)
"""An import at 02:30 New York time each day."""


@dataclass
class Clock:
    at: datetime = START

    def __call__(self) -> datetime:
        return self.at

    def move(self, **by: float) -> None:
        self.at += timedelta(**by)


@dataclass
class Launcher:
    """Starts a process that prints what the test says the run came to."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)

    def __call__(self, store: Store, job: str, output: IO[bytes]) -> subprocess.Popen[bytes]:
        self.started.append(job)
        queued = self.records.get(job) or [{"status": "succeeded"}]
        record = queued.pop(0) if len(queued) > 1 else queued[0]
        if record.get("die"):
            code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
        elif "sleep" in record:  # a long run, that ends `interrupted` on SIGTERM as runs do
            code = (
                "import json, signal, sys, time\n"
                "def stop(*_):\n"
                "    sys.stdout.write(json.dumps({'status': 'interrupted'})); sys.exit(143)\n"
                "signal.signal(signal.SIGTERM, stop)\n"
                f"time.sleep({record['sleep']})\n"
                "sys.stdout.write(json.dumps({'status': 'succeeded'}))\n"
            )
        else:
            code = f"import sys; sys.stdout.write({json.dumps(record)!r})"
        return subprocess.Popen([sys.executable, "-c", code], stdout=output)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def launcher() -> Launcher:
    return Launcher()


@pytest.fixture
def scheduler(store: Store, clock: Clock, launcher: Launcher) -> Scheduler:
    return Scheduler(store, clock=clock, launch=launcher, retries=Retries(attempts=2, base=60))


def settle(scheduler: Scheduler) -> None:
    """One step, and the runs it started reaped."""
    scheduler.step()
    for run in scheduler.running.values():
        run.process.wait()
    scheduler.reap()


def due(store: Store, job: str) -> datetime:
    found = store.state.schedule_of(job).due_at
    assert found is not None
    return datetime.fromisoformat(found)


def test_an_export_runs_at_once_then_at_its_times(
    store: Store, scheduler: Scheduler, clock: Clock, launcher: Launcher
) -> None:
    store.state.put_job(
        "exp", "event-export", job_text("exp", frequency="daily", time_of_day="06:00")
    )
    settle(scheduler)
    assert launcher.started == ["exp"]
    assert due(store, "exp") == datetime(2027, 3, 11, 6, 0, tzinfo=UTC)
    clock.move(hours=17, minutes=59)
    settle(scheduler)
    assert launcher.started == ["exp"]  # not yet
    clock.move(minutes=1)
    settle(scheduler)
    assert launcher.started == ["exp", "exp"]
    assert due(store, "exp") == datetime(2027, 3, 12, 6, 0, tzinfo=UTC)


def test_an_import_with_a_time_of_day_waits_for_it_and_one_without_runs_a_period_after(
    store: Store, scheduler: Scheduler, clock: Clock, launcher: Launcher
) -> None:
    timed = TIMED
    store.state.put_job("timed", "csv-import", timed)
    store.state.put_job(
        "hourly", "csv-import", job_text("hourly", "csv-import", frequency="hourly")
    )
    settle(scheduler)
    assert launcher.started == ["hourly"]
    assert due(store, "timed") == datetime(2027, 3, 11, 7, 30, tzinfo=UTC)  # 02:30 EST
    assert due(store, "hourly") == START + timedelta(hours=1)


def test_missed_times_run_once_and_the_run_says_how_late(
    store: Store, scheduler: Scheduler, clock: Clock, launcher: Launcher
) -> None:
    store.state.put_job(
        "exp", "event-export", job_text("exp", frequency="hourly", time_of_day="00:00")
    )
    settle(scheduler)
    clock.move(days=3, minutes=10)  # no scheduler for three days
    settle(scheduler)
    settle(scheduler)
    assert launcher.started == ["exp", "exp"]
    assert due(store, "exp") == datetime(2027, 3, 13, 13, 0, tzinfo=UTC)
    (shown,) = overview(store, clock())
    assert shown["late_seconds"] == pytest.approx(
        (timedelta(days=3, minutes=10) - timedelta(hours=1)).total_seconds()
    )


def test_a_run_that_may_pass_is_tried_again_with_backoff_then_succeeds(
    store: Store, scheduler: Scheduler, clock: Clock, launcher: Launcher
) -> None:
    store.state.put_job(
        "exp", "event-export", job_text("exp", frequency="daily", time_of_day="06:00")
    )
    launcher.records["exp"] = [
        {"status": "failed", "retry": True, "error": "S3 answered 503"},
        {"die": True},
        {"status": "succeeded"},
    ]
    settle(scheduler)
    first = due(store, "exp") - clock()
    assert timedelta(seconds=30) <= first <= timedelta(seconds=90)  # 60 s, 50-150%
    assert store.state.schedule_of("exp").attempt == 1
    clock.move(seconds=first.total_seconds())
    settle(scheduler)  # its process is killed: tried again too
    second = due(store, "exp") - clock()
    assert timedelta(seconds=60) <= second <= timedelta(seconds=180)
    assert "signal 9" in (store.state.schedule_of("exp").outcome or "")
    clock.move(seconds=second.total_seconds())
    settle(scheduler)
    assert launcher.started == ["exp"] * 3
    assert store.state.schedule_of("exp").attempt == 0
    assert due(store, "exp") == datetime(2027, 3, 11, 6, 0, tzinfo=UTC)


def test_retries_end_at_their_budget_and_other_failures_wait_for_the_next_time(
    store: Store, scheduler: Scheduler, clock: Clock, launcher: Launcher
) -> None:
    store.state.put_job(
        "exp", "event-export", job_text("exp", frequency="daily", time_of_day="06:00")
    )
    store.state.put_job(
        "bad", "event-export", job_text("bad", frequency="daily", time_of_day="06:00")
    )
    launcher.records["exp"] = [{"status": "failed", "retry": True, "error": "timeout"}]
    launcher.records["bad"] = [
        {"error": {"kind": "ConfigError", "message": "no such stream", "retry": False}}
    ]
    for _ in range(3):
        settle(scheduler)
        clock.move(seconds=200)
    assert Counter(launcher.started) == {"exp": 3, "bad": 1}  # a run and two tries again
    assert due(store, "exp") == datetime(2027, 3, 11, 6, 0, tzinfo=UTC)
    assert due(store, "bad") == datetime(2027, 3, 11, 6, 0, tzinfo=UTC)
    assert store.state.schedule_of("bad").outcome == "failed: no such stream"


def test_pause_and_resume(
    store: Store, scheduler: Scheduler, clock: Clock, launcher: Launcher
) -> None:
    from click.testing import CliRunner

    from pipelines.cli import cli

    store.state.put_job(
        "exp", "event-export", job_text("exp", frequency="daily", time_of_day="06:00")
    )
    cli_run = CliRunner().invoke
    assert cli_run(cli, ["--store", str(store.path), "jobs", "pause", "exp"]).exit_code == 0
    settle(scheduler)
    assert launcher.started == []
    assert overview(store, clock())[0]["state"] == "paused"
    said = cli_run(cli, ["--store", str(store.path), "jobs", "pause", "nope"])
    assert said.exit_code == 1
    assert "no job named 'nope'" in said.output
    resume(store, "exp")
    scheduler.clock = lambda: datetime.now(UTC)  # resumed from now
    settle(scheduler)
    assert launcher.started == ["exp"]


def test_a_stopped_json_import_waits_for_resume(
    store: Store, scheduler: Scheduler, clock: Clock, launcher: Launcher
) -> None:
    text = job_text("feed", "csv-import", frequency="hourly")
    store.state.put_job("feed", "csv-import", text)
    launcher.records["feed"] = [{"status": STOPPED}]
    settle(scheduler)
    clock.move(hours=2)
    settle(scheduler)
    assert launcher.started == ["feed"]
    assert overview(store, clock())[0]["state"] == "stopped"
    resume(store, "feed")
    scheduler.clock = lambda: datetime.now(UTC)
    settle(scheduler)
    assert launcher.started == ["feed", "feed"]


def test_a_job_added_while_the_scheduler_runs_is_picked_up(
    store: Store, scheduler: Scheduler, launcher: Launcher
) -> None:
    scheduler.clock = lambda: datetime.now(UTC)
    stop = threading.Event()
    serving = threading.Thread(target=scheduler.serve, args=(stop,), kwargs={"tick": 0.05})
    serving.start()
    try:
        time.sleep(0.2)
        assert launcher.started == []
        store.state.put_job("late", "event-export", job_text("late", frequency="daily"))
        deadline = time.monotonic() + 10
        while not launcher.started and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        serving.join(timeout=30)
    assert launcher.started == ["late"]
    assert not serving.is_alive()


@pytest.mark.parametrize(("grace", "outcome"), [(30.0, "succeeded"), (0.3, "interrupted")])
def test_a_stopped_scheduler_gives_running_jobs_their_grace_then_interrupts_them(
    grace: float, outcome: str, store: Store, scheduler: Scheduler, launcher: Launcher
) -> None:
    store.state.put_job("exp", "event-export", job_text("exp", frequency="daily"))
    launcher.records["exp"] = [{"sleep": 1.5}]
    scheduler.grace = grace
    stop = threading.Event()
    serving = threading.Thread(target=scheduler.serve, args=(stop,), kwargs={"tick": 0.05})
    serving.start()
    while not launcher.started:
        time.sleep(0.02)
    stop.set()
    serving.join(timeout=30)
    assert not serving.is_alive()
    assert scheduler.running == {}
    assert store.state.schedule_of("exp").outcome == outcome
    assert store.state.leases("scheduler") == []


def test_once_stopped_gives_its_runs_their_grace_too(
    store: Store, scheduler: Scheduler, launcher: Launcher
) -> None:
    store.state.put_job("exp", "event-export", job_text("exp", frequency="daily"))
    launcher.records["exp"] = [{"sleep": 30}]
    scheduler.grace = 0.3
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    began = time.monotonic()
    assert scheduler.once(stop=stop) == 1
    assert time.monotonic() - began < 10
    assert store.state.schedule_of("exp").outcome == "interrupted"


def test_runs_go_max_parallel_at_a_time_the_longest_due_first(
    store: Store, scheduler: Scheduler, clock: Clock, launcher: Launcher
) -> None:
    for name, minutes in (("a", 30), ("b", 10), ("c", 20)):
        store.state.put_job(name, "event-export", job_text(name, frequency="daily"))
        store.state.set_schedule(name, due_at=(START - timedelta(minutes=minutes)).isoformat())
        launcher.records[name] = [{"sleep": 0.5}]
    scheduler.step()
    assert launcher.started == ["a", "c"]  # two at a time
    assert scheduler.once() == 1  # what is due and not running: b
    assert launcher.started == ["a", "c", "b"]
    assert scheduler.running == {}


def test_one_scheduler_per_store(store: Store) -> None:
    with (
        SchedulerLease(store),
        pytest.raises(ConfigError, match=r"a scheduler runs on the store .* already"),
    ):
        Scheduler(store).once()


def test_a_job_whose_file_no_longer_loads_is_passed_over(
    store: Store, scheduler: Scheduler, launcher: Launcher
) -> None:
    store.state.put_job(
        "broken", "event-export", job_text("broken", frequency="weekly", day="someday")
    )
    store.state.put_job("fine", "event-export", job_text("fine", frequency="daily"))
    settle(scheduler)
    assert launcher.started == ["fine"]


# Real runs: `lakeport scheduler` and `lakeport scheduler --once` as processes.


def cli(store: Path, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAKEPORT, "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=120,
        **options,
    )


def test_a_real_scheduler_runs_a_job_twice_and_stops_on_sigterm(
    tmp_path: Path, s3: S3Server
) -> None:
    store = Store(tmp_path / "store")
    store.authorizations.add(s3.authorization())
    bucket = s3.new_bucket()
    import pyarrow as pa

    from engine.store import Source

    store.append("web", [pa.record_batch({"id": ["a"]})], source=Source("k", "1"), job="load")
    job = tmp_path / "exp.toml"
    job.write_text(
        job_text(
            "exp",
            bucket=bucket,
            auth="moto",
            frequency="cron",
            cron="*/2 * * * * *",
            filename="e-{TIMESTAMP}",
            timestamp_format="unix",
        )
    )
    assert cli(store.path, "jobs", "add", str(job)).returncode == 0
    server = subprocess.Popen(
        [*LAKEPORT, "--store", str(store.path), "scheduler", "--tick", "0.2", "--grace", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(store.state.runs("exp")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        second = cli(store.path, "scheduler", "--once")
        assert second.returncode == 1
        assert "a scheduler runs on the store" in second.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        stdout, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    assert time.monotonic() - stopped < 20
    assert "scheduler: stopped" in stdout
    assert "Traceback" not in stderr
    runs = store.state.runs("exp")
    assert len(runs) >= 2
    assert {r.status for r in runs} <= {"succeeded", "no new events"}
    assert runs[-1].status == "succeeded"  # the first run exported the event
    listed = s3.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(o["Key"].rsplit(".", 1)[-1] for o in listed) == ["csv", "json"]  # and manifest
    assert store.state.leases("scheduler") == []


def test_a_scheduler_killed_mid_run_then_started_again_imports_each_row_once(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rows = 200_000
    (folder / "e.csv").write_text("user_id,event\n" + "".join(f"u{i},e\n" for i in range(rows)))
    job = tmp_path / "imp.toml"
    job.write_text(
        'name = "imp"\ntype = "csv-import"\n'
        f'bucket = "{folder}"\nfile = "e.csv"\nstream = "events"\n'
        'keep_updated = true\nfrequency = "daily"\n'
    )
    store = Store(tmp_path / "store")
    assert cli(store.path, "jobs", "add", str(job)).returncode == 0
    env = {**os.environ, "LAKEPORT_CRASH_AT": "before-commit", "LAKEPORT_CRASH_WITH": "exit"}
    # The scheduler is killed as soon as its run has begun; the run's process, left alone,
    # dies before its commit (as a run killed with its scheduler would).
    server = subprocess.Popen(
        [*LAKEPORT, "--store", str(store.path), "scheduler", "--tick", "0.1"], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not store.state.runs("imp") and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        server.kill()
        server.wait()
    while store.state.runs("imp")[0].status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.state.runs("imp")[0].status == "died"
    again = cli(store.path, "scheduler", "--once")
    assert again.returncode == 0, again.stderr
    assert "ran 1 due job(s)" in again.stdout
    assert store.state.runs("imp")[0].status == "succeeded"
    assert {s.name: s.rows for s in store.streams()} == {"events": rows}


def test_jobs_list_show_and_next_say_when_jobs_run(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pipelines.cli import cli as lakeport

    store = Store(tmp_path / "store")
    timed = TIMED
    store.state.put_job("timed", "csv-import", timed)
    store.state.put_job("once", "event-export", job_text("once", keep_updated=False))
    invoke = CliRunner().invoke
    listed = invoke(lakeport, ["--store", str(store.path), "jobs", "list", "-o", "json"])
    assert listed.exit_code == 0, listed.output
    found = {j["name"]: j for j in json.loads(listed.stdout)}
    assert found["once"]["schedule"] is None
    assert found["timed"]["schedule"] == "daily at 02:30 America/New_York"
    local, utc = found["timed"]["next_run_local"], found["timed"]["next_run"]
    assert local.endswith(("T02:30:00-05:00", "T02:30:00-04:00"))
    assert datetime.fromisoformat(local) == datetime.fromisoformat(utc)
    nexts = invoke(
        lakeport, ["--store", str(store.path), "jobs", "next", "timed", "-n", "3", "-o", "json"]
    )
    times = [datetime.fromisoformat(t["utc"]) for t in json.loads(nexts.stdout)]
    assert len(times) == 3
    assert all(
        later - earlier in (timedelta(hours=23), timedelta(hours=24), timedelta(hours=25))
        for earlier, later in pairwise(times)
    )
    store.state.set_schedule(
        "timed",
        started_due="2027-03-10T07:30:00+00:00",
        started_at="2027-03-10T09:45:00+00:00",
    )
    shown = invoke(lakeport, ["--store", str(store.path), "jobs", "show", "timed"])
    assert "# schedule: daily at 02:30 America/New_York; active" in shown.stdout
    assert "started late, by 2 h 15 min" in shown.stdout
    refused = invoke(lakeport, ["--store", str(store.path), "jobs", "next", "once"])
    assert refused.exit_code == 1
    assert "job 'once' is not kept updated" in refused.output


def test_a_real_run_that_cannot_reach_s3_is_tried_again(tmp_path: Path, s3: S3Server) -> None:
    """The run's own record says its error may pass (S3 unreachable: TransientError); the
    scheduler tries it again, then leaves it to its next time."""
    from dataclasses import replace

    store = Store(tmp_path / "store")
    down = replace(s3.authorization("down"), endpoint_url="http://127.0.0.1:9")
    store.authorizations.add(down)
    text = (
        'name = "imp"\ntype = "csv-import"\nbucket = "events"\nauth = "down"\n'
        'file = "e.csv"\nstream = "s"\nkeep_updated = true\nfrequency = "daily"\n'
    )
    store.state.put_job("imp", "csv-import", text)
    runner = Scheduler(store, retries=Retries(attempts=1, base=0.01))
    assert runner.once() == 1
    row = store.state.schedule_of("imp")
    assert row.attempt == 1
    assert "127.0.0.1:9" in (row.outcome or "")
    (record,) = store.state.runs("imp")
    assert record.status == "failed"
    assert record.stats["retry"] is True
    time.sleep(0.05)
    assert runner.once() == 1  # the try again
    row = store.state.schedule_of("imp")
    assert row.attempt == 0  # the budget is spent: its next time
    assert datetime.fromisoformat(row.due_at or "") > datetime.now(UTC) + timedelta(hours=23)
