"""The `json-import` job: one JSON object (file) from a bucket into a stream, exactly once.

The run is the import run of `importing.run_import` with the JSON reader: newline-delimited
JSON or one top-level array of objects, flattened to dotted text fields, optionally picked or
renamed by `mapping`. A continuous import (`prefix`) waits while no next file has come and stops
itself after `empty_periods` runs in a row found none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine import storage
from engine.auth import Authorization
from engine.readers.json import MAX_DEPTH, JsonReader
from engine.storage import FileInfo
from engine.store import Store
from engine.timestamps import TimestampRule
from pipelines import importing
from pipelines.errors import SpecError
from pipelines.runs import RunRecord
from pipelines.spec import Field, Loaded, positive


def _mapping(value: dict[str, Any]) -> dict[str, str]:
    if not value or not all(isinstance(v, str) and v and k for k, v in value.items()):
        raise ValueError('must be a table of field = "dotted.source.path"')
    return {str(k): str(v) for k, v in value.items()}


def _whole(value: int) -> int:
    if isinstance(value, bool) or value < 1:
        raise ValueError("must be a whole number, 1 or more")
    return value


FIELDS: dict[str, Field] = {
    **importing.FIELDS,
    "mapping": Field("a table of field = source path", (dict,), check=_mapping),
    "max_depth": Field("a whole number", (int,), default=MAX_DEPTH, check=positive),
    "empty_periods": Field("a whole number", (int,), default=1, check=_whole),
}


@dataclass(frozen=True, kw_only=True)
class JsonImportJob(importing.ImportJob):
    """A validated `json-import` job file. Its `fields` are `mapping`'s names when there is a
    mapping."""

    type: ClassVar[str] = "json-import"
    mapping: dict[str, str] = field(default_factory=dict)
    max_depth: int = MAX_DEPTH
    empty_periods: int | None = 1

    @classmethod
    def from_loaded(cls, job: Loaded) -> JsonImportJob:
        values = importing.common_values(job)
        mapping: dict[str, str] = job["mapping"] or {}
        if mapping and job["fields"]:
            raise SpecError(
                job.source, "fields", "and `mapping` cannot both be given: the mapping picks"
            )
        timestamp: TimestampRule | None = values["timestamp"]
        if mapping and timestamp is not None:
            # The timestamp names a field as imported, or a source path (read, then dropped).
            by_source = {source: name for name, source in mapping.items()}
            column = by_source.get(timestamp.column, timestamp.column)
            values["timestamp"] = TimestampRule(column, timestamp.format, timestamp.timezone)
        if mapping:
            values["fields"] = list(mapping)
        return cls(
            **values,
            mapping=mapping,
            max_depth=job["max_depth"],
            empty_periods=job["empty_periods"],
        )


def run(
    store: Store,
    job: JsonImportJob,
    *,
    reset_diff: bool = False,
    progress: Callable[[int, int], None] | None = None,
    restart: bool = False,
    wait: float | None = 0.0,
) -> RunRecord:
    """One run of the job; see the module docstring."""

    def open_reader(
        target: FileInfo,
        auth: Authorization | None,
        fields: list[str] | None,
        rejections: importing.Rejections,
        again: bool,
    ) -> JsonReader:
        return JsonReader(
            lambda: storage.open_input(target.url, auth, expected=target),
            name=target.url,
            spill=store.path / "tmp",
            fields=fields,
            mapping=job.mapping,
            limits=job.limits,
            max_depth=job.max_depth,
            on_bad_row=rejections.handler,
            stage=again,
        )

    return importing.run_job(
        store,
        job,
        open_reader,
        reset_diff=reset_diff,
        progress=progress,
        restart=restart,
        wait=wait,
    )
