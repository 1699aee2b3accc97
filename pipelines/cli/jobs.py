"""The job commands: `inspect` (before writing a job), `run`, `jobs ...` and `runs`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipelines.cli.root import Context, cli
from pipelines.output import (
    COLUMNS_OPTION,
    OUTPUT_OPTION,
    Output,
    Shown,
    activity,
    bytes_progress,
    choose_columns,
    echo,
    emit_json,
    emit_table,
    human_bytes,
    prints,
)

if TYPE_CHECKING:
    from engine.store import Store


@cli.command("inspect")
@click.argument("url")
@click.option("--auth", "auth_name", metavar="NAME", help="The authorization for s3:// URLs.")
@click.option("--rows", "-n", type=click.IntRange(min=1, max=1000), default=10, show_default=True)
@prints
@click.pass_obj
def inspect(obj: Context, url: str, auth_name: str | None, rows: int) -> Shown:
    """Sniff a CSV or JSON object: encoding, delimiter, fields, timestamps; preview rows;
    suggest a job."""
    from dataclasses import asdict

    from engine import storage
    from engine.readers.sniff import inspect as sniff
    from engine.readers.source import open_object

    auth = obj.store().authorizations.get(auth_name) if auth_name else None
    with activity(f"Inspecting {url}"):
        info = storage.stat(url, auth)
        found = sniff(lambda: open_object(info.url, auth), name=info.url, size=info.size, rows=rows)
    location = storage.parse_url(info.url)
    folder = location.key.rsplit("/", 1)[0] if "/" in location.key else ""
    bucket = location.bucket if location.scheme == "s3" else folder
    job = found.job_toml(bucket, folder if location.scheme == "s3" else "", auth_name)

    def text() -> None:
        shown = "tab" if found.delimiter == "\t" else repr(found.delimiter)
        echo(f"{info.url}: {human_bytes(found.size)}, {found.compression or 'not compressed'}")
        if found.format == "json":
            echo(f"JSON, {found.shape}: fields flattened to dotted names")
        else:
            echo(f"encoding {found.encoding}, delimiter {shown}, quote {found.quote_char!r}")
        echo(f"fields ({len(found.fields)}): {', '.join(found.fields)}")
        echo(f"look like timestamps: {', '.join(found.timestamp_fields) or 'none'}")
        if found.prefix:
            echo(f"continuous import of files named like this one: prefix = {found.prefix!r}")
        emit_table(
            found.rows,
            found.fields,
            title=f"first {len(found.rows)} rows",
            empty="no rows after the header",
        )
        echo("\na job file to start from:\n" + job)

    return Shown({**asdict(found), "url": info.url, "job": job}, text)


# Jobs and runs

RESTART_OPTION = click.option(
    "--restart",
    is_flag=True,
    help="Start over: a continuous JSON import after it stopped for want of a next file; an "
    "event export from the first event (it forgets what earlier runs exported).",
)
WAIT_OPTION = click.option(
    "--wait",
    is_flag=True,
    help="If a run of the job is under way, wait for it to end, then run (default: fail).",
)


def _run_and_report(
    store: Store, job: Any, reset_diff: bool, restart: bool, output: Output, wait: bool
) -> None:
    from pipelines import jobs

    with bytes_progress(f"{job.name}") as progress:
        record = jobs.run(
            store,
            job,
            reset_diff=reset_diff,
            progress=progress,
            restart=restart,
            wait=None if wait else 0.0,
        )
    Shown(record.as_json(), lambda: echo(record.summary(), err=record.failed)).print(output)
    if record.failed:
        raise click.exceptions.Exit(1)


@cli.command("run")
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reset-diff", is_flag=True, help="Forget the diff snapshot: import the whole file.")
@RESTART_OPTION
@WAIT_OPTION
@OUTPUT_OPTION
@click.pass_obj
def run_file(
    obj: Context, job_file: Path, reset_diff: bool, restart: bool, wait: bool, output: Output
) -> None:
    """Run the job in JOB_FILE once; its state is kept under its name."""
    from pipelines import jobs

    job, _ = jobs.load_file(job_file)
    _run_and_report(obj.store(), job, reset_diff, restart, output, wait)


@cli.group("jobs")
def jobs_group() -> None:
    """Register, list, show, run and remove jobs."""


@jobs_group.command("add")
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Replace a registered job of the same name.")
@click.pass_obj
def jobs_add(obj: Context, job_file: Path, replace: bool) -> None:
    """Validate JOB_FILE and register it under its name."""
    from engine.errors import ConfigError
    from pipelines import jobs

    job, text = jobs.load_file(job_file)
    if not obj.store().state.put_job(job.name, job.type, text, replace=replace):
        raise ConfigError(
            f"a job named '{job.name}' is registered already: pass --replace to replace it"
        )
    said = f"registered job '{job.name}' ({job.type})"
    if job.schedule is not None:
        from pipelines.scheduler import describe

        said += f", kept updated {describe(job.schedule)} while `lakeport scheduler` runs"
    echo(said)


@jobs_group.command("list")
@prints
@click.pass_obj
def jobs_list(obj: Context) -> Shown:
    """The registered jobs: each one's schedule, state, next run (in its timezone and UTC),
    last run and its status."""
    from pipelines.scheduler import overview

    found = overview(obj.store())
    shown = [
        {
            "name": j["name"],
            "type": j["type"],
            "schedule": j["schedule"] or "-",
            "state": j["state"],
            "next run": _when(j["next_run_local"]),
            "next run (UTC)": _when(j["next_run"]),
            "last run": _when(j["last_run"]),
            "last status": j["last_status"] or "-",
        }
        for j in found
    ]
    return Shown.table(
        shown,
        list(shown[0]) if shown else ["name"],
        document=found,
        empty="no jobs: add one with `lakeport jobs add`",
    )


def _when(moment: str | None) -> str:
    """An ISO 8601 time, shorter: `2027-03-14 03:00 -04:00` (seconds when there are)."""
    if moment is None:
        return "-"
    day, _, rest = moment.partition("T")
    clock = rest[:8] if rest[5:8] not in ("", ":00") else rest[:5]
    zone = rest[-6:] if rest[-6] in "+-" else "UTC"
    return f"{day} {clock} {'UTC' if zone == '+00:00' else zone}"


@jobs_group.command("show")
@click.argument("name")
@click.pass_obj
def jobs_show(obj: Context, name: str) -> None:
    """Print a registered job's file, then its schedule: state, next run, last run and how
    late it started."""
    from engine.errors import ConfigError
    from pipelines.scheduler import overview

    store = obj.store()
    found = store.state.get_job(name)
    if found is None:
        raise ConfigError(f"no job named '{name}': `lakeport jobs list` shows the registered ones")
    echo(found[1].rstrip("\n"))
    job = next(j for j in overview(store) if j["name"] == name)
    if job["schedule"] is None:
        return
    echo("")
    echo(f"# schedule: {job['schedule']}; {job['state']}")
    if job["next_run"]:
        echo(f"# next run: {_when(job['next_run_local'])} ({_when(job['next_run'])})")
    if job["last_run"]:
        echo(f"# last run: {_when(job['last_run'])}, {job['last_status']}")
    late = job.get("late_seconds")
    if late is not None and late >= 60:
        echo(f"# the last run started late, by {_duration(late)} (no scheduler was running)")
    if job["attempt"]:
        echo(f"# retrying: try {job['attempt']} after {job['outcome']}")


def _duration(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


@jobs_group.command("pause")
@click.argument("name")
@click.pass_obj
def jobs_pause(obj: Context, name: str) -> None:
    """Stop running a kept-updated job on its schedule (a run under way goes on)."""
    from pipelines.scheduler import PAUSED, kept_job

    store = obj.store()
    kept_job(store, name)
    store.state.set_schedule(name, state=PAUSED)
    echo(f"paused job '{name}': `lakeport jobs resume {name}` starts it again")


@jobs_group.command("resume")
@click.argument("name")
@click.pass_obj
def jobs_resume(obj: Context, name: str) -> None:
    """Run a paused or stopped job on its schedule again (a stopped JSON import looks for
    its next file again), from now."""
    from pipelines.scheduler import resume

    resume(obj.store(), name)
    echo(f"resumed job '{name}'")


@jobs_group.command("next")
@click.argument("name")
@click.option("-n", "count", type=click.IntRange(min=1, max=1000), default=5, show_default=True)
@prints
@click.pass_obj
def jobs_next(obj: Context, name: str, count: int) -> Shown:
    """The next times a kept-updated job runs, in its timezone and in UTC."""
    from pipelines.scheduler import upcoming

    found = upcoming(obj.store(), name, count)
    rows = [{"run": _when(local), "UTC": _when(utc)} for local, utc in found]
    return Shown.table(rows, ["run", "UTC"], document=[{"local": a, "utc": b} for a, b in found])


@jobs_group.command("run")
@click.argument("name")
@click.option("--reset-diff", is_flag=True, help="Forget the diff snapshot: import the whole file.")
@RESTART_OPTION
@WAIT_OPTION
@OUTPUT_OPTION
@click.pass_obj
def jobs_run(
    obj: Context, name: str, reset_diff: bool, restart: bool, wait: bool, output: Output
) -> None:
    """Run the registered job NAME once."""
    from pipelines import jobs

    store = obj.store()
    _run_and_report(store, jobs.registered(store, name), reset_diff, restart, output, wait)


@jobs_group.command("remove")
@click.argument("name")
@click.pass_obj
def jobs_remove(obj: Context, name: str) -> None:
    """Unregister a job and forget its state (last file); its streams stay."""
    from engine.errors import ConfigError

    if not obj.store().state.delete_job(name):
        raise ConfigError(f"no job named '{name}'")
    echo(f"removed job '{name}'")


@jobs_group.command("schema")
@click.argument("kind", metavar="TYPE")
def jobs_schema(kind: str) -> None:
    """Print the JSON Schema of a job type's files (csv-import, json-import, audience-export,
    or `profiles` for profiles.toml), for an editor's completion and checks in TOML."""
    from engine.profiles import config
    from pipelines import jobs

    emit_json(config.schema() if kind == "profiles" else jobs.schema(kind))


@cli.command("cleanup")
@click.argument("job", required=False)
@click.pass_obj
def cleanup(obj: Context, job: str | None) -> None:
    """Finish or take back what stopped runs of JOB (of every job when none) left: a commit
    the Delta log has, an export that was deciding; else their open uploads, temporary files,
    files no manifest lists and stream files no commit references."""
    from engine import import_state
    from engine.lease import Lease
    from pipelines.exporting import JOURNAL, settle_export

    store = obj.store()
    left = [(j, e) for j, e in store.state.journal() if job is None or j == job]
    if not left:
        echo("nothing to clean up" + (f" for job '{job}'" if job else ""))
        return
    for name, entry in left:
        with Lease(store.state, f"job:{name}"):  # never beside a run of the job
            if entry == JOURNAL:
                done = settle_export(store, name)
            else:
                done = import_state.settle(store, name, raising=True)
        echo(f"job '{name}': {done}")


@cli.command("runs")
@click.option("--job", "job_name", metavar="NAME", help="Only this job's runs.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
@COLUMNS_OPTION
@prints
@click.pass_obj
def runs(obj: Context, job_name: str | None, limit: int, chosen: str | None) -> Shown:
    """The latest runs, newest first."""
    found = obj.store().state.runs(job_name, limit)
    rows = [
        {
            "id": r.id,
            "job": r.job,
            "status": r.status,
            "started": r.started_at,
            "object": r.object,
            **r.stats,
            "error": r.error,
        }
        for r in found
    ]
    table = [
        {
            **row,
            "rows": row.get("rows_imported", row.get("users", "")),
            "error": (row["error"] or "")[:80],
        }
        for row in rows
    ]
    return Shown.table(
        table,
        choose_columns(["id", "job", "status", "started", "object", "rows", "error"], chosen),
        document=rows,
        empty="no runs yet",
        right=["id", "rows"],
    )
