"""The `json-import` job: one JSON object (file) from a bucket into a stream, exactly once.

The run is the import run of `importing.run_import` with the JSON reader: newline-delimited
JSON or one top-level array of objects, flattened to dotted text fields, optionally picked or
renamed by `mapping`. A continuous import (`prefix`) waits while no next file has come and stops
itself after `empty_periods` runs in a row found none.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Annotated, Literal

from pydantic import model_validator

from engine.auth import Authorization
from engine.declared import Check, Kind, Problem
from engine.intake import Rejections
from engine.readers.json import MAX_DEPTH, JsonReader
from engine.readers.source import open_object
from engine.storage import FileInfo
from engine.store import Store
from engine.timestamps import TimestampRule
from pipelines import importing
from pipelines.runs import RunRecord
from pipelines.spec import AtLeastOne, JobType


def _mapping(value: dict[str, str]) -> dict[str, str]:
    if not value or not all(v and k for k, v in value.items()):
        raise ValueError('must be a table of field = "dotted.source.path"')
    return value


class JsonImportJob(importing.ImportJob):
    """A `json-import` job file. Its fields are `mapping`'s names when there is a mapping."""

    type: Literal["json-import"]
    """`"json-import"`."""
    mapping: (
        Annotated[dict[str, str], Kind("a table of field = source path"), Check(_mapping)] | None
    ) = None
    """A table `name = "dotted.source.path"`: only these fields, under these names."""
    max_depth: AtLeastOne = MAX_DEPTH
    """How deeply objects and arrays may nest."""
    empty_periods: AtLeastOne = 1
    """For a `prefix` sequence: runs in a row without a next file before the job stops."""

    @model_validator(mode="after")
    def _mapped(self) -> JsonImportJob:
        if self.mapping and self.fields:
            raise Problem("fields", "and `mapping` cannot both be given: the mapping picks")
        return self

    @cached_property
    def event_time(self) -> TimestampRule | None:
        """The timestamp names a field as imported, or a source path (read, then dropped)."""
        rule = super().event_time
        if not self.mapping or rule is None:
            return rule
        by_source = {source: name for name, source in self.mapping.items()}
        return TimestampRule(by_source.get(rule.column, rule.column), rule.format, rule.timezone)

    @property
    def chosen(self) -> list[str] | None:
        return list(self.mapping) if self.mapping else self.fields

    @property
    def stops_after(self) -> int | None:
        return self.empty_periods


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
        rejections: Rejections,
        again: bool,
    ) -> JsonReader:
        return JsonReader(
            lambda: open_object(target.url, auth, expected=target),
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


JOB = JobType("json-import", JsonImportJob, run)
