"""`lakeport scheduler`: the kept-updated jobs run when due, in the foreground or once."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from pipelines.cli.root import Context, cli
from pipelines.output import echo


@cli.command("scheduler")
@click.option("--once", is_flag=True, help="Run what is due now, wait for it, and exit (cron).")
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Runs at a time, each in its own process.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running jobs get to finish when the scheduler stops, before they are "
    "interrupted.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Tries again of a run that failed with an error that may pass.",
)
@click.option(
    "--retry-wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds before the first try again; it doubles each time (to 15 min), with jitter.",
)
@click.option(
    "--tick",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between two looks at what is due.",
)
@click.pass_obj
def scheduler(
    obj: Context,
    once: bool,
    max_parallel: int,
    grace: float,
    retries: int,
    retry_wait: float,
    tick: float,
) -> None:
    """Run every kept-updated job when it is due, until SIGTERM or Ctrl-C (then: no new run,
    the running ones get --grace seconds, then are interrupted cleanly; a second signal
    interrupts them at once). One scheduler per store."""
    from pipelines.scheduler import Retries, Scheduler

    runner = Scheduler(
        obj.store(),
        max_parallel=max_parallel,
        grace=grace,
        retries=Retries(attempts=retries, base=retry_wait, cap=max(retry_wait, 900.0)),
    )
    stop, hurry = threading.Event(), threading.Event()

    def stopping(signum: int, frame: Any) -> None:
        (hurry if stop.is_set() else stop).set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    if once:
        started = runner.once(stop=stop, hurry=hurry)
        echo(f"ran {started} due job(s)" + (" (stopped)" if stop.is_set() else ""))
        return
    echo(f"scheduler: running the kept-updated jobs of {runner.store.path} (Ctrl-C stops)")
    runner.serve(stop, tick=tick, hurry=hurry)
    echo("scheduler: stopped")
