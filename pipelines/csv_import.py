"""The `csv-import` job: one CSV object from a bucket into a stream, exactly once.

The run is the import run of `importing.run_import` (pick the file, read it, event times, diff,
append exactly once, move the job's state on) with the CSV reader: every field as text, the
job's delimiter, quoting, encoding and limits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from engine import storage
from engine.auth import Authorization
from engine.readers.csv import CsvDialect, CsvReader
from engine.storage import FileInfo
from engine.store import Store
from pipelines import importing
from pipelines.runs import RunRecord
from pipelines.spec import STRING, Field, Loaded, encoding


def _delimiter(value: str) -> str:
    value = "\t" if value in ("t", "\\t", "tab") else value
    if len(value) != 1 or value in '\r\n"':
        raise ValueError("must be one character (t or \\t for tab), not a quote or line break")
    return value


def _quote_char(value: str) -> str:
    if len(value) > 1:
        raise ValueError('must be one character, or "" for no quoting')
    return value


FIELDS: dict[str, Field] = {
    **importing.FIELDS,
    "delimiter": Field(*STRING, default=",", check=_delimiter),
    "encoding": Field(*STRING, default="utf-8", check=encoding),
    "quote_char": Field(*STRING, default='"', check=_quote_char),
}


@dataclass(frozen=True, kw_only=True)
class CsvImportJob(importing.ImportJob):
    """A validated `csv-import` job file."""

    type: ClassVar[str] = "csv-import"
    dialect: CsvDialect

    @classmethod
    def from_loaded(cls, job: Loaded) -> CsvImportJob:
        dialect = CsvDialect(job["delimiter"], job["quote_char"] or None, job["encoding"])
        return cls(**importing.common_values(job), dialect=dialect)


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
        rejections: importing.Rejections,
        again: bool,
    ) -> CsvReader:
        return CsvReader(
            lambda: storage.open_input(target.url, auth, expected=target),
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
