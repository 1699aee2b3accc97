"""Guessing how a CSV object is written, from its first bytes: what `lakeport inspect` shows.
(A JSON object shows its first records flattened, as a json-import job reads them.)

It guesses the encoding (a byte-order mark, else UTF-8 if the sample decodes, else cp1252 or
latin-1), the delimiter (the candidate that splits the first lines into the same number of
fields, quotes respected), whether quotes are used, the fields, the columns that look like
timestamps, and the `prefix` of a file name that carries a timestamp.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pyarrow as pa

from engine import sequence
from engine.errors import BadInput
from engine.readers.csv import CsvDialect, CsvReader, guess_delimiter
from engine.readers.rows import LINE
from engine.readers.source import Limits, guess_encoding, peek_decompressed
from engine.timestamps import TimestampRule, parse

SAMPLE = 64 << 10
_LOOKS_LIKE_TIME = re.compile(r"^\s*(\d{4}-\d\d-\d\d|\d{10}$|\d{13}$)")


@dataclass
class Inspection:
    name: str
    size: int
    compression: str | None
    encoding: str
    delimiter: str
    quote_char: str | None
    fields: list[str]
    rows: list[dict[str, str]]
    timestamp_fields: list[str] = field(default_factory=list)
    prefix: str | None = None
    """A regular expression for a continuous import of files named like this one."""
    header: bool = True
    """False: the first line looks like data (numbers, dates), not field names."""
    format: str = "csv"
    """`csv`, or `json` (newline-delimited or an array: `shape` says which)."""
    shape: str | None = None

    def job_toml(self, bucket: str, directory: str, auth: str | None) -> str:
        """A job file to start from."""
        lines = [
            'name = "CHANGE-ME"',
            f'type = "{self.format}-import"',
            *([f'auth = "{auth}"'] if auth else []),
            f"bucket = {_toml(bucket)}",
            *([f"directory = {_toml(directory)}"] if directory else []),
            f"prefix = {_toml(self.prefix)}" if self.prefix else f"file = {_toml(self.name)}",
            'stream = "CHANGE-ME"',
        ]
        if self.format == "json":
            if self.timestamp_fields:
                lines.append(f"timestamp = {_toml(self.timestamp_fields[0])}")
            return "\n".join(lines) + "\n"
        lines.append(f"delimiter = {_toml('t' if self.delimiter == chr(9) else self.delimiter)}")
        if self.encoding != "utf-8":
            lines.append(f"encoding = {_toml(self.encoding)}")
        if self.quote_char != '"':
            lines.append(f"quote_char = {_toml(self.quote_char or '')}")
        if not self.header:
            lines.append("header = false                 # fields column_1, column_2...; or:")
            names = ", ".join(_toml(f"name_{i}") for i in range(1, len(self.fields) + 1))
            lines.append(f"# columns = [{names}]")
        if self.timestamp_fields:
            lines.append(f"timestamp = {_toml(self.timestamp_fields[0])}")
        return "\n".join(lines) + "\n"


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def name_prefix(name: str) -> str | None:
    """`prefix` for names like this one: the part before a timestamp, as a regular expression."""
    for pattern, _ in sequence.FORMS:
        for found in pattern.finditer(name):
            start = found.start()
            if start and name[start - 1].isdigit():
                continue
            prefix = "^" + re.escape(name[:start])
            if sequence.name_time(name, prefix) is not None:
                return prefix
    return None


def inspect(
    open_handle: Callable[[], IO[bytes]], *, name: str, size: int, rows: int = 10
) -> Inspection:
    """Sniff the object and parse its first rows with what was found."""
    handle = open_handle()
    try:
        sample, compression = peek_decompressed(handle, name=name, size=SAMPLE)
    finally:
        handle.close()
    encoding = guess_encoding(sample, whole=len(sample) < SAMPLE)
    text = sample.decode(encoding, errors="replace").lstrip("\ufeff")
    if not text.strip():
        raise BadInput(name, None, "is empty: it holds no data, only white space")
    if text.lstrip()[:1] in ("{", "[") or _named_json(name):
        return _inspect_json(text, name=name, size=size, compression=compression, rows=rows)
    quote = guess_quote(text, guess_delimiter(text))
    delimiter = guess_delimiter(text, quote)
    header = not _looks_like_data(text, delimiter, quote)
    reader = CsvReader(
        open_handle,
        name=name,
        dialect=CsvDialect(delimiter, quote, encoding, header=header),
        limits=Limits(max_line_bytes=256 << 10),
        on_bad_row=lambda _: None,
    )
    batches: list[pa.RecordBatch] = []
    taken = 0
    for batch in reader.batches():
        batches.append(batch)
        taken += batch.num_rows
        if taken >= max(rows, 1000):
            break
    table = pa.Table.from_batches(batches, schema=reader.schema).drop_columns([LINE])
    base = name.rsplit("/", 1)[-1]
    return Inspection(
        name=base,
        size=size,
        compression=compression,
        encoding=encoding,
        delimiter=delimiter,
        quote_char=quote,
        fields=reader.header,
        rows=table.slice(0, rows).to_pylist(),
        timestamp_fields=[f for f in reader.header if _looks_like_time(table.column(f))],
        prefix=name_prefix(base),
        header=header,
    )


_NUMBER = re.compile(r"^\s*[-+]?(\d+([.,]\d*)?|[.,]\d+)([eE][-+]?\d+)?\s*$")


def guess_quote(text: str, delimiter: str) -> str:
    """The quote character: a single quote when fields are wrapped in single quotes and none
    in double ones, else the double quote."""
    single = double = 0
    for line in text.splitlines()[:20]:
        for value in line.split(delimiter):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == "'":
                single += 1
            elif len(value) >= 2 and value[0] == value[-1] == '"':
                double += 1
    return "'" if single and not double else '"'


def _looks_like_data(text: str, delimiter: str, quote: str) -> bool:
    """Whether the first line is a row of data rather than field names: a name is never a
    number or a time."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    values = next(csv.reader([first], delimiter=delimiter, quotechar=quote), [])
    return any(_NUMBER.match(v) or _LOOKS_LIKE_TIME.match(v) for v in values)


def _named_json(name: str) -> bool:
    """Whether the object's name says JSON (`.json`, `.jsonl`, `.ndjson`, compressed or not)."""
    stem = re.sub(r"(\.(gz|gzip|zst|zstd))?(\.(gpg|pgp|asc))?$", "", name.lower())
    return stem.endswith((".json", ".jsonl", ".ndjson"))


def _inspect_json(
    text: str, *, name: str, size: int, compression: str | None, rows: int
) -> Inspection:
    """The first records of a JSON sample, flattened as a json-import job would."""
    import tempfile

    from engine.readers.json import JsonReader

    shape = "array" if text.lstrip().startswith("[") else "newline-delimited"
    decoder = json.JSONDecoder()
    at = text.index("[") + 1 if shape == "array" else 0
    records: list[str] = []  # their text as written: numbers stay exact
    problem = None
    while len(records) < max(rows, 1000):  # whole records only: the sample may cut the last
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        if at >= len(text) or (shape == "array" and text[at] == "]"):
            break
        try:
            _, end = decoder.raw_decode(text, at)
        except ValueError as exc:
            problem = exc
            break
        records.append(text[at:end])
        at = end
    if not records and problem is not None:
        cut = len(text) >= SAMPLE
        raise BadInput(
            name,
            problem.lineno if isinstance(problem, json.JSONDecodeError) else None,
            (
                f"its first record is larger than the {SAMPLE // 1024} KiB inspect reads"
                if cut
                else f"its first record is not valid JSON ({problem}), or the file is cut"
            ),
        )
    fields: list[str] = []
    shown: list[dict[str, str]] = []
    times: list[str] = []
    if records:  # none: an empty array
        lines = "".join(r + "\n" for r in records).encode()
        with tempfile.TemporaryDirectory() as spill:
            # The sample is decompressed already: its name must not say .gz or .zst.
            plain = name.rsplit(".", 1)[0] if compression else name
            reader = JsonReader(
                lambda: io.BytesIO(lines), name=plain, spill=Path(spill), on_bad_row=lambda _: None
            )
            table = pa.Table.from_batches(list(reader.batches()), schema=reader.schema)
        table = table.drop_columns([LINE])
        fields, shown = reader.header, table.slice(0, rows).to_pylist()
        texts = [f for f in fields if pa.types.is_string(table.schema.field(f).type)]
        times = [f for f in texts if _looks_like_time(table.column(f))]
    base = name.rsplit("/", 1)[-1]
    return Inspection(
        name=base,
        size=size,
        compression=compression,
        encoding="utf-8",
        delimiter="",
        quote_char=None,
        fields=fields,
        rows=shown,
        timestamp_fields=times,
        prefix=name_prefix(base),
        format="json",
        shape=shape,
    )


def _looks_like_time(column: pa.ChunkedArray) -> bool:
    values = [v for v in column.to_pylist() if v]
    if not values or not all(_LOOKS_LIKE_TIME.match(v) for v in values):
        return False
    _, bad = parse(pa.array(values, pa.string()), TimestampRule("probe"))
    return not bad
