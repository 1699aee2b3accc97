"""Job files in, the right job type out: loading, and running whatever type a job is."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.declared import json_schema, parse
from engine.errors import ConfigError
from engine.store import Store
from engine.textfile import read_text
from pipelines.errors import SpecError
from pipelines.runs import RunRecord
from pipelines.spec import JobType, parse_toml

if TYPE_CHECKING:
    from pipelines import audience_export, csv_import, event_export, json_import

    Job = (
        csv_import.CsvImportJob
        | json_import.JsonImportJob
        | audience_export.AudienceExportJob
        | event_export.EventExportJob
    )

TYPES: dict[str, str] = {
    "csv-import": "pipelines.csv_import",
    "json-import": "pipelines.json_import",
    "audience-export": "pipelines.audience_export",
    "event-export": "pipelines.event_export",
}
"""Every job type, by the name job files give in `type`: the module that declares it (its
`JOB`), imported when a job of that type is read, so that a run loads only its own kind."""


def job_type(kind: str) -> JobType[Any]:
    """The job type of this name (one of TYPES)."""
    found: JobType[Any] = importlib.import_module(TYPES[kind]).JOB
    return found


def load(text: str, source: str) -> Job:
    """A validated job from TOML text; `source` names it in errors."""
    raw = parse_toml(text, source)
    job: Job = parse(_type_of(raw.get("type"), source).spec, raw, source)
    return job


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a job type's files."""
    return json_schema(_type_of(kind, "lakeport jobs schema").spec, f"lakeport {kind} job")


def _type_of(kind: Any, source: str) -> JobType[Any]:
    if kind not in TYPES:
        raise SpecError(
            source,
            "type",
            f"must be one of {', '.join(TYPES)} (got {kind!r})"
            if kind is not None
            else f"is missing: it must be one of {', '.join(TYPES)}",
        )
    return job_type(kind)


def load_file(path: Path) -> tuple[Job, str]:
    text = read_text(path, "job file")
    return load(text, str(path)), text


def registered(store: Store, name: str) -> Job:
    found = store.state.get_job(name)
    if found is None:
        known = ", ".join(n for n, _, _ in store.state.list_jobs()) or "none yet"
        raise ConfigError(
            f"no job named '{name}' (registered: {known}): add it with `lakeport jobs add FILE`"
        )
    return load(found[1], f"job '{name}'")


def run(
    store: Store,
    job: Job,
    *,
    reset_diff: bool = False,
    progress: Callable[[int, int], None] | None = None,
    restart: bool = False,
    wait: float | None = 0.0,
) -> RunRecord:
    """One run of a job, whatever its type; `wait` is how long to wait for a run of the job
    that is under way (None: as long as it takes)."""
    record: RunRecord = job_type(job.type).run(
        store, job, reset_diff=reset_diff, progress=progress, restart=restart, wait=wait
    )
    return record
