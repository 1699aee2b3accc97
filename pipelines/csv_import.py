"""The `csv-import` job: one CSV object from a bucket into a stream, exactly once.

The run is the import run of `importing.run_import` (pick the file, read it, event times, diff,
append exactly once, move the job's state on) with the CSV reader: every field as text, the
job's delimiter, quoting, encoding and limits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from engine import storage
from engine.auth import Authorization
from engine.errors import ConfigError
from engine.readers.csv import CsvDialect, CsvReader, check_dialect
from engine.storage import FileInfo
from engine.store import Store
from pipelines import importing
from pipelines.errors import SpecError
from pipelines.runs import RunRecord
from pipelines.spec import BOOL, STRING, Field, Loaded, encoding


def _field_of(message: str) -> tuple[str, str]:
    """The job field a dialect error is about (its message starts with the field's name),
    and the rest of the message."""
    field, _, rest = message.partition(" ")
    return field, rest


def _delimiter(value: str) -> str:
    value = "\t" if value in ("t", "\\t", "tab") else value
    if len(value) != 1 or value in '\r\n"':
        raise ValueError("must be one character (t or \\t for tab), not a quote or line break")
    return value


def _quote_char(value: str) -> str:
    if len(value) > 1:
        raise ValueError('must be one character, or "" for no quoting')
    return value


def _comment(value: str) -> str:
    if len(value) != 1 or value in "\r\n":
        raise ValueError('must be one character, e.g. "#"')
    return value


def _columns(value: list[Any]) -> list[str]:
    if not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError("must be a non-empty list of field names")
    if len(set(value)) != len(value):
        raise ValueError("names a field twice")
    return [str(v) for v in value]


FIELDS: dict[str, Field] = {
    **importing.FIELDS,
    "delimiter": Field(*STRING, default=",", check=_delimiter),
    "encoding": Field(*STRING, default="utf-8", check=encoding),
    "quote_char": Field(*STRING, default='"', check=_quote_char),
    "header": Field(*BOOL, default=True),
    "columns": Field("a list of field names", (list,), check=_columns),
    "comment": Field(*STRING, check=_comment),
}


@dataclass(frozen=True, kw_only=True)
class CsvImportJob(importing.ImportJob):
    """A validated `csv-import` job file."""

    type: ClassVar[str] = "csv-import"
    dialect: CsvDialect

    @classmethod
    def from_loaded(cls, job: Loaded) -> CsvImportJob:
        if job["columns"] and job["header"]:
            raise SpecError(
                job.source,
                "columns",
                "name the fields of a file without a header: set header = false too",
            )
        columns = tuple(job["columns"]) if job["columns"] else None
        try:
            dialect = CsvDialect(
                job["delimiter"],
                job["quote_char"] or None,
                job["encoding"],
                header=job["header"],
                columns=columns,
                comment=job["comment"],
            )
            check_dialect(dialect)
        except ConfigError as exc:
            raise SpecError(job.source, *_field_of(str(exc))) from None
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
