"""`lakeport demo`: the whole tool on a local folder acting as the bucket, no cloud needed."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import click

from engine import codecs, storage
from engine.audiences import Audiences
from engine.auth import AwsKeys
from engine.secrets import Secret
from engine.store import Store
from pipelines import jobs
from pipelines.output import echo, emit_table, human_bytes
from pipelines.profiles import build_profiles
from pipelines.runs import RunRecord

_FIELDS = ["event_id", "user_id", "email", "event", "country", "amount", "timestamp"]
_EVENTS = [
    ("e-001", "u-1", "ada@example.com", "signup", "GB", "", "2026-11-01T09:00:00Z"),
    ("e-002", "u-1", "ada@example.com", "purchase", "GB", "42.50", "2026-11-01T09:12:30Z"),
    ("e-003", "u-2", "grace@example.com", "signup", "US", "", "2026-11-01T10:01:00Z"),
    ("e-004", "u-3", "alan@example.com", "signup", "GB", "", "2026-11-01T11:30:00Z"),
    ("e-005", "u-2", "grace@example.com", "purchase", "US", "19.99", "2026-11-01T12:45:10Z"),
    ("e-006", "u-4", "katherine@example.com", "signup", "US", "", "2026-11-01T13:05:00Z"),
    ("e-007", "u-3", "alan@example.com", "purchase", "GB", "5.00", "2026-11-01T14:20:00Z"),
    ("e-008", "u-4", "katherine@example.com", "purchase", "US", "120.00", "2026-11-01T15:00:00Z"),
]


_PROFILES = """\
by = ["user_id", "email"]

[normalize]
email = ["trim", "lower"]

[fields.country]
from = "country"
agg = "latest"

[fields.purchases]
from = "amount"
agg = "count"

[fields.spent]
from = "amount"
agg = "sum"
type = "float"

[fields.events]
from = "event"
agg = "set"
"""


def _say(text: str) -> None:
    click.secho(f"\n== {text}", bold=True)


def run_demo(folder: Path | None) -> None:
    root = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="lakeport-demo-"))
    bucket = root / "bucket"
    store = Store(root / "store")
    echo(f"demo folder: {root}\n  bucket: {bucket}\n  store:  {store.path}")
    _the_bucket(bucket)
    _an_authorization(store)
    _imports(root, bucket, store)
    _reading_back(store)
    _profiles(root, store)
    _audiences(store)
    _an_export(root, bucket, store)


def _the_bucket(bucket: Path) -> None:
    _say("1. A local folder stands in for the bucket; it holds one CSV export")
    _write_csv(bucket / "exports" / "events_20261101.csv", _EVENTS)
    listing = storage.list_directory(str(bucket / "exports"))
    emit_table(
        [
            {"name": f.name, "size": human_bytes(f.size), "modified": f.last_modified}
            for f in listing.files
        ],
        ["name", "size", "modified"],
        title=f"lakeport ls {listing.url}",
    )


def _an_authorization(store: Store) -> None:
    _say("2. An authorization: its secret goes to the 0600 secrets file and is never shown")
    name = "demo-keys"
    if name in {a.name for a in store.authorizations.list()}:
        store.authorizations.remove(name)
    auth = store.authorizations.add(
        AwsKeys(
            name=name,
            access_key_id="AKIADEMO00000000",
            secret_key=Secret("demo-secret-key-that-is-never-printed"),
            region="eu-west-1",
        )
    )
    emit_table(
        [{"field": k, "value": v} for k, v in auth.describe().items()],
        ["field", "value"],
        title=f"lakeport auth show {name}",
    )


def _imports(root: Path, bucket: Path, store: Store) -> None:
    _say("3. A csv-import job takes the file into the stream 'events', exactly once")
    job = _job_file(
        root / "events-import.toml",
        [
            'name = "demo-events"',
            'type = "csv-import"',
            f'bucket = "{bucket.as_posix()}"',
            'directory = "exports"',
            'prefix = "events_"',
            'stream = "events"',
            'timestamp = "timestamp"',
            "diff = true",
        ],
    )
    echo(jobs.run(store, job).summary())
    _say("3b. An event-export job sends the stream's events back to the bucket")
    events_out = _events_job(root, bucket)
    _show_events(bucket, jobs.run(store, events_out))

    _say("4. The next day's export arrives: one row changed, two added; the diff imports three")
    changed = [row if row[0] != "e-004" else (*row[:3], "register", *row[4:]) for row in _EVENTS]
    added = ("e-009", "u-5", "mary@example.com", "signup", "FR", "", "2026-11-02T08:00:00Z")
    # Ada buys again, known only by her email this time (written differently).
    by_email = ("e-010", "", " Ada@Example.com", "purchase", "GB", "10.00", "2026-11-02T09:00:00Z")
    _write_csv(bucket / "exports" / "events_20261102.csv", [*changed, added, by_email])
    echo(jobs.run(store, job).summary())
    echo(jobs.run(store, job).summary())
    _say("4b. The event export again: only the three events committed since its last run")
    _show_events(bucket, jobs.run(store, events_out))


def _events_job(root: Path, bucket: Path) -> jobs.Job:
    return _job_file(
        root / "events-export.toml",
        [
            'name = "demo-events-out"',
            'type = "event-export"',
            'streams = ["events"]',
            f'bucket = "{bucket.as_posix()}"',
            'directory = "events-out"',
            'fields = ["_stream", "event_id", "user_id", "event", "_ts"]',
        ],
    )


def _show_events(bucket: Path, record: RunRecord) -> None:
    echo(record.summary())
    if record.files:
        data = bucket / record.files[0]
        echo(f"\n{data.name}:\n{data.read_text(encoding='utf-8')}")


def _reading_back(store: Store) -> None:
    _say("5. Read back: the streams, and the first rows as a Polars LazyFrame")
    emit_table(
        [
            {"stream": s.name, "rows": s.rows, "fields": ", ".join(s.fields)}
            for s in store.streams()
        ],
        ["stream", "rows", "fields"],
        title="lakeport streams",
    )
    rows = (
        store.stream("events").select("event_id", "user_id", "event", "amount", "_source").head(5)
    )
    frame = rows.collect()
    emit_table(frame.to_dicts(), frame.columns, title="lakeport stream show events --limit 5")


def _profiles(root: Path, store: Store) -> None:
    _say("6. Profiles: events that share a user_id or an email make one user")
    rules = root / "profiles.toml"
    rules.write_text(_PROFILES, encoding="utf-8")
    echo(f"lakeport profiles build {rules}")
    built = build_profiles(store, rules)
    echo(
        f"built {built.report.profiles} profiles from {built.report.events} events "
        f"in {built.seconds:.1f} s"
    )
    profiles = (
        store.profiles()
        .select("_profile_id", "user_id", "email", "country", "purchases", "spent", "_events")
        .sort("_profile_id")
        .collect()
    )
    emit_table(profiles.to_dicts(), profiles.columns, title="lakeport profiles show")


def _audiences(store: Store) -> None:
    _say("7. An audience: an SQL condition on profile fields, checked when it is made")
    for audience, condition in (("big-spenders", "spent > 40"), ("gb", "country = 'GB'")):
        if audience in Audiences(store).conditions():
            Audiences(store).remove(audience)
        echo(f'lakeport audience create {audience} --where "{condition}"')
        Audiences(store).create(audience, condition)
    emit_table(
        [
            {"audience": name, "profiles": size, "where": Audiences(store).conditions()[name]}
            for name, size in Audiences(store).sizes().items()
        ],
        ["audience", "profiles", "where"],
        title="lakeport audience list",
    )
    members = Audiences(store).memberships().sort("_profile_id").collect()
    emit_table(members.to_dicts(), members.columns, title="Audiences(store).memberships()")


def _an_export(root: Path, bucket: Path, store: Store) -> None:
    _say("8. An audience-export job writes the audience to the bucket, with a manifest")
    export = _job_file(
        root / "gb-export.toml",
        [
            'name = "demo-export"',
            'type = "audience-export"',
            'audience = "gb"',
            f'bucket = "{bucket.as_posix()}"',
            'directory = "audiences"',
            'format = "csv"',
            'compress = "gzip"',
            'fields = ["user_id", "email", "country", "purchases", "spent"]',
            "segments = true",
        ],
    )
    record = jobs.run(store, export)
    echo(record.summary())
    if record.files:
        data = bucket / record.files[0]
        text = codecs.decompressed(data.name, data.read_bytes()).decode()
        echo(f"\n{data.name}, unzipped:\n{text}")
    echo(f"Try: lakeport --store {store.path} audience show big-spenders")


def _job_file(path: Path, lines: Sequence[str]) -> jobs.Job:
    """Write a job file, say the command that runs it, and load it."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    echo(f"lakeport run {path}")
    job, _ = jobs.load_file(path)
    return job


def _write_csv(path: Path, rows: Sequence[tuple[str, ...]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(_FIELDS), *(",".join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
