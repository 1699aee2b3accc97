"""The scheduler: every kept-updated job of a store, run when it is due, each run in a process
of its own (`python -m pipelines jobs run NAME`), so that a crash in one cannot take another.

What a job's schedule row says (state.db `schedules`) is the whole of the scheduler's state, so
a scheduler that is stopped or killed and started again goes on from it:

- A job not planned yet is due at once when it is an export, or an import without a time of
  day; an import with one is due at the next of its times.
- A run ends: the job is due at its next time after the run ended (or one period after it,
  without a time of day). Missed times are not caught up one by one: a job due while no
  scheduler ran runs once when one starts, and its row says how late.
- A run that failed with an error that may pass (`retry` in its record: an S3 or network
  error, a run of the same job under way elsewhere) or whose process died is tried again after
  an exponential backoff with jitter, up to a number of attempts; then it waits for its next
  time. Any other failure waits for the next time at once.
- A JSON import that stopped for want of a next file is `stopped` until `jobs resume`.
- One scheduler per store: it holds the lease `scheduler`, which a dead one loses.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from engine.errors import ConfigError, LakeportError
from engine.lease import JobRunning, Lease
from engine.state import ScheduleRow
from engine.store import Store
from pipelines import jobs
from pipelines.runs import STOPPED
from pipelines.schedule import WEEKDAYS, Schedule

logger = logging.getLogger(__name__)

ACTIVE, PAUSED, HALTED = "active", "paused", "stopped"
LEASE = "scheduler"
EXPORTS = ("audience-export", "event-export")
RUN, AS_JSON = ("jobs", "run"), ("--output", "json")


@dataclass(frozen=True)
class Retries:
    """How a run that failed with an error that may pass is tried again: after `base`
    seconds, doubling each time up to `cap`, each wait drawn from 50-150% of that (jitter),
    at most `attempts` times."""

    attempts: int = 5
    base: float = 30.0
    cap: float = 900.0

    def wait(self, attempt: int, draw: Callable[[], float] = random.random) -> float:
        """Seconds before retry number `attempt` (1 for the first)."""
        return float(min(self.cap, self.base * 2 ** (attempt - 1)) * (0.5 + draw()))


@dataclass
class Running:
    """A run the scheduler started: its process and where its output goes."""

    job: str
    due: datetime
    started: datetime
    process: subprocess.Popen[bytes]
    output: IO[bytes]


@dataclass(frozen=True)
class Outcome:
    """What a run came to, read from its record (`-o json`) or its exit."""

    status: str
    retry: bool
    error: str | None = None


def now() -> datetime:
    return datetime.now(UTC)


def first_due(job_type: str, schedule: Schedule, at: datetime) -> datetime:
    """When a job not planned yet is due: exports at once, and imports without a time of
    day; an import with one at its next time."""
    if job_type in EXPORTS or not schedule.at_times:
        return at
    return schedule.next_time(at)


def next_due(schedule: Schedule, due: datetime, ended: datetime) -> datetime:
    """When a job is due after a run (due at `due`) ended at `ended`."""
    if schedule.at_times:
        return schedule.next_time(max(due, ended))
    return schedule.after_run(ended)


@dataclass
class Scheduler:
    """Runs the store's kept-updated jobs when due (see the module).

    Args:
        max_parallel: Runs at a time.
        grace: Seconds running jobs are given to finish when the scheduler is stopped, before
            they are interrupted (SIGTERM: they end as `interrupted`, nothing half-written).
        clock: The time now (tests give their own).
        launch: Starts a run of a job, returning its process (tests give their own).
    """

    store: Store
    max_parallel: int = 2
    grace: float = 30.0
    retries: Retries = field(default_factory=Retries)
    clock: Callable[[], datetime] = now
    launch: Callable[[Store, str, IO[bytes]], subprocess.Popen[bytes]] | None = None
    running: dict[str, Running] = field(default_factory=dict)
    _loaded: dict[str, tuple[str, Any]] = field(default_factory=dict)

    # One round

    def step(self) -> None:
        """Reap the runs that ended, then start the due jobs there is room for."""
        self.reap()
        for name, due in self.due():
            if len(self.running) >= self.max_parallel:
                break
            self.start(name, due)

    def due(self) -> list[tuple[str, datetime]]:
        """The jobs due now and not running, the longest due first."""
        at = self.clock()
        rows = self.store.state.schedules()
        found = []
        for name, (job_type, schedule) in self.kept().items():
            row = rows.get(name) or ScheduleRow(name)
            if row.state != ACTIVE or name in self.running:
                continue
            due = _time(row.due_at)
            if due is None:
                due = first_due(job_type, schedule, at)
                self.store.state.set_schedule(name, due_at=due.isoformat())
            if due <= at:
                found.append((name, due))
        return sorted(found, key=lambda item: item[1])

    def kept(self) -> dict[str, tuple[str, Schedule]]:
        """Every registered job that is kept updated: its type and schedule. A job file that
        no longer loads is logged and passed over (the others go on)."""
        found = {}
        for name, job_type, text in self.store.state.job_files():
            cached = self._loaded.get(name)
            if cached is None or cached[0] != text:
                try:
                    cached = (text, jobs.load(text, f"job '{name}'").schedule)
                except ConfigError as exc:
                    logger.warning("job '%s' is passed over: %s", name, exc)
                    cached = (text, None)
                self._loaded[name] = cached
            if cached[1] is not None:
                found[name] = (job_type, cached[1])
        return found

    def start(self, name: str, due: datetime) -> None:
        started = self.clock()
        output = tempfile.TemporaryFile()  # noqa: SIM115 - closed when the run is reaped
        process = (self.launch or launch)(self.store, name, output)
        self.running[name] = Running(name, due, started, process, output)
        self.store.state.set_schedule(
            name, started_at=started.isoformat(), started_due=due.isoformat()
        )
        late = (started - due).total_seconds()
        logger.info("started job '%s' (due %s, %.0f s late)", name, due.isoformat(), late)

    def reap(self) -> None:
        """Record the runs that ended and plan each job's next."""
        for name, run in list(self.running.items()):
            if run.process.poll() is None:
                continue
            del self.running[name]
            self.ended(run, outcome(run))

    def ended(self, run: Running, result: Outcome) -> None:
        ended = self.clock()
        state = self.store.state
        row = state.schedule_of(run.job)
        kept = self.kept().get(run.job)
        changes: dict[str, Any] = {"ended_at": ended.isoformat(), "outcome": _said(result)}
        if kept is None:  # removed, or no longer kept updated, while it ran
            if state.get_job(run.job) is not None:
                state.set_schedule(run.job, **changes)
            return
        schedule = kept[1]
        if result.retry and row.attempt < self.retries.attempts:
            wait = self.retries.wait(row.attempt + 1)
            changes |= {"attempt": row.attempt + 1, "due_at": (ended + _seconds(wait)).isoformat()}
            logger.warning(
                "job '%s' failed (%s): try %d of %d in %.0f s",
                run.job,
                result.error or result.status,
                row.attempt + 1,
                self.retries.attempts,
                wait,
            )
        else:
            changes |= {"attempt": 0, "due_at": next_due(schedule, run.due, ended).isoformat()}
        if result.status == STOPPED:
            changes["state"] = HALTED
        state.set_schedule(run.job, **changes)

    # The service

    def serve(
        self, stop: threading.Event, *, tick: float = 1.0, hurry: threading.Event | None = None
    ) -> None:
        """Run due jobs until `stop` is set; then start nothing more, give the running ones
        `grace` seconds (or until `hurry` is set), and interrupt those still running."""
        with self._lease():
            while not stop.is_set():
                try:
                    self.step()
                except LakeportError as exc:  # state.db busy, say: the next round tries again
                    logger.warning("scheduler: %s", exc)
                stop.wait(tick)
            self.shut_down(hurry or threading.Event())

    def once(
        self,
        *,
        poll: float = 0.2,
        stop: threading.Event | None = None,
        hurry: threading.Event | None = None,
    ) -> int:
        """Run what is due now, `max_parallel` at a time, and return when they have all
        ended: the number of runs started. When `stop` is set, start no more and shut down
        as `serve` does."""
        stop = stop or threading.Event()
        started = 0
        with self._lease():
            due = self.due()
            while (due or self.running) and not stop.is_set():
                self.reap()
                while due and len(self.running) < self.max_parallel:
                    self.start(*due.pop(0))
                    started += 1
                stop.wait(poll)
            self.shut_down(hurry or threading.Event())
        return started

    def shut_down(self, hurry: threading.Event) -> None:
        deadline = time.monotonic() + self.grace
        if self.running:
            logger.warning(
                "stopping: %d run(s) under way, given %.0f s to finish",
                len(self.running),
                self.grace,
            )
        while self.running and time.monotonic() < deadline and not hurry.is_set():
            self.reap()
            hurry.wait(0.1)
        for run in self.running.values():
            logger.warning("job '%s' still runs after the grace period: interrupting it", run.job)
            run.process.send_signal(signal.SIGTERM)
        for run in list(self.running.values()):
            try:
                run.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()
        self.reap()

    def _lease(self) -> Lease:
        return SchedulerLease(self.store)


class SchedulerLease(Lease):
    """The store's one scheduler."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.state, LEASE, wait=0.0)
        self.store = store

    def __enter__(self) -> SchedulerLease:
        try:
            super().__enter__()
        except JobRunning as exc:
            holder = exc.holder
            raise ConfigError(
                f"a scheduler runs on the store {self.store.path} already (pid {holder.pid} "
                f"on {holder.host}, since {holder.started_at[:19].replace('T', ' ')} UTC): "
                "one scheduler per store; stop that one first"
            ) from None
        return self


def launch(store: Store, job: str, output: IO[bytes]) -> subprocess.Popen[bytes]:
    """A run of the registered job in a process of its own, its record printed as JSON to
    `output`. Its own session: a Ctrl-C at the scheduler's terminal reaches the scheduler
    only, which gives the run its grace."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines", "--store", str(store.path), *RUN, job, *AS_JSON],
        stdout=output,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def outcome(run: Running) -> Outcome:
    """What the run's process came to: its record, its error, or how it died."""
    code = run.process.returncode
    run.output.seek(0)
    text = run.output.read().decode("utf-8", "replace")
    run.output.close()
    try:
        found = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        found = None
    if isinstance(found, dict) and isinstance(found.get("error"), dict):
        error = found["error"]
        return Outcome("failed", bool(error.get("retry")), str(error.get("message")))
    if isinstance(found, dict) and "status" in found:
        return Outcome(str(found["status"]), bool(found.get("retry")), found.get("error"))
    how = f"signal {-code}" if code < 0 else f"exit code {code}"
    return Outcome("died", True, f"the run's process ended with {how}")


def _said(result: Outcome) -> str:
    return result.status if result.error is None else f"{result.status}: {result.error}"


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def describe(schedule: Schedule) -> str:
    """The schedule in words: `daily at 02:30 America/New_York`."""
    zone = schedule.timezone
    if schedule.cron is not None:
        return f"cron '{schedule.cron}' in {zone}"
    if schedule.time_of_day is None:
        return f"{schedule.frequency}, a period after the last run ({zone})"
    if schedule.frequency == "hourly":
        return f"hourly at minute {schedule.time_of_day[3:]} ({zone})"
    on = ""
    if schedule.frequency == "weekly":
        on = f" on {WEEKDAYS[schedule.day or 0]}"
    elif schedule.frequency == "monthly":
        on = f" on day {schedule.day or 1}"
    return f"{schedule.frequency}{on} at {schedule.time_of_day} {zone}"


def overview(store: Store, at: datetime | None = None) -> list[dict[str, Any]]:
    """Every registered job with its schedule, next run (UTC and in its timezone), last run
    and state: what `jobs list` shows."""
    at = at or now()
    kept = Scheduler(store).kept()
    rows = store.state.schedules()
    found = []
    for name, job_type, _ in store.state.list_jobs():
        row = rows.get(name) or ScheduleRow(name)
        entry: dict[str, Any] = {"name": name, "type": job_type}
        last = store.state.runs(name, limit=1)
        entry["last_run"] = last[0].finished_at or last[0].started_at if last else None
        entry["last_status"] = last[0].status if last else None
        if name not in kept:
            entry |= {"schedule": None, "state": "not kept updated", "next_run": None}
            entry["next_run_local"] = None
            found.append(entry)
            continue
        schedule = kept[name][1]
        due = _time(row.due_at) or first_due(job_type, schedule, at)
        entry["schedule"] = describe(schedule)
        entry["state"] = row.state
        entry["next_run"] = None if row.state != ACTIVE else due.isoformat()
        entry["next_run_local"] = (
            None if row.state != ACTIVE else due.astimezone(schedule.zone).isoformat()
        )
        started, started_due = _time(row.started_at), _time(row.started_due)
        if started is not None and started_due is not None:
            entry["late_seconds"] = round((started - started_due).total_seconds(), 1)
        entry["attempt"] = row.attempt
        entry["outcome"] = row.outcome
        found.append(entry)
    return found


def kept_job(store: Store, name: str) -> tuple[str, Schedule]:
    """The registered job's type and schedule, or an error that says what is missing."""
    job = jobs.registered(store, name)
    if job.schedule is None:
        raise ConfigError(
            f"job '{name}' is not kept updated: set keep_updated = true and a frequency in its "
            "file, then `lakeport jobs add --replace FILE`"
        )
    return job.type, job.schedule


def resume(store: Store, name: str) -> None:
    """Put a paused or stopped job back on its schedule, due now; a stopped JSON import looks
    for a next file again."""
    from pipelines.importing import EMPTY_RUNS

    kept_job(store, name)
    if store.state.get_watermark(name, EMPTY_RUNS) is not None:
        store.state.set_watermark(name, EMPTY_RUNS, "0")
    store.state.set_schedule(name, state=ACTIVE, due_at=now().isoformat(), attempt=0)


def upcoming(store: Store, name: str, count: int) -> list[tuple[str, str]]:
    """The job's next `count` run times: (in its timezone, in UTC), ISO 8601."""
    job_type, schedule = kept_job(store, name)
    row = store.state.schedule_of(name)
    due = _time(row.due_at) or first_due(job_type, schedule, now())
    found = [due]
    if schedule.at_times:
        times = schedule.times(due)
        found += [next(times) for _ in range(count - 1)]
    return [(t.astimezone(schedule.zone).isoformat(), t.astimezone(UTC).isoformat()) for t in found]
