"""The `csv-import` job: one CSV object from a bucket into a stream, exactly once.

The run is the import run of `importing.run_import` (pick the file, read it, event times, diff,
append exactly once, move the job's state on) with the CSV reader: every field as text, the
job's delimiter, quoting, encoding and limits.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, model_validator

from engine.auth import Authorization
from engine.declared import Check, Problem
from engine.errors import ConfigError
from engine.intake import Rejections
from engine.readers.csv import CsvDialect, CsvReader, check_dialect
from engine.readers.source import check_encoding, open_object
from engine.storage import FileInfo
from engine.store import Store
from pipelines import importing
from pipelines.runs import RunRecord
from pipelines.spec import FieldNames, JobType


def _tab(value: Any) -> Any:
    """`t`, `\\t` and `tab` are names of the tab."""
    return "\t" if value in ("t", "\\t", "tab") else value


class CsvImportJob(importing.ImportJob):
    """A `csv-import` job file."""

    type: Literal["csv-import"]
    """`"csv-import"`."""
    delimiter: Annotated[str, BeforeValidator(_tab)] = ","
    """One character; `t` or `\\t` for tab."""
    encoding: Annotated[str, Check(check_encoding)] = "utf-8"
    """`utf-8`, `latin-1`, `cp1252` or `utf-16`."""
    quote_char: str = '"'
    """One character; `""` turns quoting off."""
    header: bool = True
    """`false`: the first line is data; the fields are `columns`, or `column_1`, ..."""
    columns: FieldNames | None = None
    """With `header = false`: the field names, in order."""
    comment: str | None = None
    """One character: a line that starts with it is skipped."""

    @model_validator(mode="after")
    def _readable(self) -> CsvImportJob:
        """The one rule of what a CSV reader can read (engine.readers.csv.check_dialect)."""
        try:
            check_dialect(self.dialect)
        except ConfigError as exc:
            raise Problem.named(str(exc)) from None
        return self

    @cached_property
    def dialect(self) -> CsvDialect:
        return CsvDialect(
            self.delimiter,
            self.quote_char or None,
            self.encoding,
            header=self.header,
            columns=tuple(self.columns) if self.columns else None,
            comment=self.comment,
        )


def run(
    store: Store,
    job: CsvImportJob,
    *,
    reset_diff: bool = False,
    progress: Callable[[int, int], None] | None = None,
    restart: bool = False,
    wait: float | None = 0.0,
) -> RunRecord:
    """One run of the job; see the module docstring. (`restart` is for continuous JSON
    imports; a CSV import never stops itself.)"""

    def open_reader(
        target: FileInfo,
        auth: Authorization | None,
        fields: list[str] | None,
        rejections: Rejections,
        again: bool,
    ) -> CsvReader:
        return CsvReader(
            lambda: open_object(target.url, auth, expected=target),
            name=target.url,
            dialect=job.dialect,
            fields=fields,
            limits=job.limits,
            on_bad_row=rejections.handler,
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


JOB = JobType("csv-import", CsvImportJob, run)
