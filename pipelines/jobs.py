"""Job files in, the right job type out: loading, and running whatever type a job is."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.store import Store
from engine.textfile import read_text
from pipelines import audience_export, csv_import, json_import
from pipelines.errors import SpecError
from pipelines.runs import RunRecord
from pipelines.spec import parse_toml, validate

Job = csv_import.CsvImportJob | json_import.JsonImportJob | audience_export.AudienceExportJob

# Each job type: its spec class, its fields, and its run function.
_TYPES: dict[str, tuple[Any, Any, Any]] = {
    csv_import.CsvImportJob.type: (csv_import.CsvImportJob, csv_import.FIELDS, csv_import.run),
    json_import.JsonImportJob.type: (
        json_import.JsonImportJob,
        json_import.FIELDS,
        json_import.run,
    ),
    audience_export.AudienceExportJob.type: (
        audience_export.AudienceExportJob,
        audience_export.FIELDS,
        audience_export.run,
    ),
}


def load(text: str, source: str) -> Job:
    """A validated job from TOML text; `source` names it in errors."""
    raw = parse_toml(text, source)
    kind = raw.get("type")
    if kind not in _TYPES:
        raise SpecError(
            source,
            "type",
            f"must be one of {', '.join(_TYPES)} (got {kind!r})"
            if kind is not None
            else f"is missing: it must be one of {', '.join(_TYPES)}",
        )
    cls, fields, _ = _TYPES[kind]
    job: Job = cls.from_loaded(validate(raw, fields, source))
    return job


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
    runner: Any = _TYPES[job.type][2]
    record: RunRecord = runner(
        store, job, reset_diff=reset_diff, progress=progress, restart=restart, wait=wait
    )
    return record
