"""A corpus of awkward files, made here: every line ending, delimiter, quoting, encoding,
compression, header and size case that real files from other readers' bug reports bring, each
with its expected outcome. Each is imported by a job, end to end:

- a file that can be read imports exactly what DuckDB reads with the same dialect (DuckDB's
  empty field is NULL, lakeport's empty text: both are compared as empty), row for row;
- a file that cannot fails the run with one line naming the object (and the line, where it
  has one) and the fix: never an internal error, and nothing is committed.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zstandard
from click.testing import CliRunner

from engine.store import Store
from pipelines.cli import cli

ROWS: list[tuple[str, ...]] = [
    ("1", "Ada", "London"),
    ("2", "Grace", "New York"),
    ("3", "Linus", "Helsinki"),
]


@dataclass(frozen=True)
class Case:
    id: str
    data: bytes
    name: str = "data.csv"
    job: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """A regular expression the one-line error matches; None: the file imports."""
    expected: list[tuple[str, ...]] | None = None
    """The rows, when not DuckDB's reading of the file (encodings DuckDB does not read)."""


def table(delimiter: str = ",", end: str = "\n", rows: list[tuple[str, ...]] = ROWS) -> bytes:
    lines = [delimiter.join(("id", "name", "city"))] + [delimiter.join(row) for row in rows]
    return (end.join(lines) + end).encode()


def cases() -> list[Case]:
    found: list[Case] = []
    delimiters = {",": ",", ";": ";", "\t": "t", "|": "|"}
    words = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
    ends = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}
    for delimiter, setting in delimiters.items():
        for end_name, end in ends.items():
            found.append(
                Case(
                    f"delim-{words[delimiter]}-{end_name}",
                    table(delimiter, end),
                    job={"delimiter": setting},
                )
            )
    found += [
        # DuckDB refuses to read a file whose line ends are mixed; lakeport reads each.
        Case(
            "mixed-line-ends",
            b"id,name\n1,a\r\n2,b\r3,c\n",
            expected=[("1", "a"), ("2", "b"), ("3", "c")],
        ),
        Case("no-final-line-break", b"id,name\n1,a\n2,b"),
        Case("quoted-delimiters", b'id,name\n1,"a,b"\n2,"c,,d"\n'),
        Case("doubled-quotes", b'id,name\n1,"say ""hi"""\n2,""""\n'),
        Case("quoted-lf-inside", b'id,note\n1,"two\nlines"\n2,x\n'),
        Case("quoted-crlf-inside", b'id,note\r\n1,"two\r\nlines"\r\n2,x\r\n'),
        Case("empty-quoted", b'id,name\n1,""\n2,x\n'),
        Case("empty-fields", b"id,name,city\n1,,x\n2,b,\n"),
        Case("quote-in-unquoted", b'id,name\n1,12" pizza\n2,x\n'),
        Case(
            "single-quote-char",
            b"id;name\n1;'a;b'\n2;'c'\n",
            job={"delimiter": ";", "quote_char": "'"},
        ),
        Case("no-quoting", b'id,name\n1,"a\n2,b"\n', job={"quote_char": ""}),
        Case("unicode-values", "id,name\n1,Zoë\n2,東京\n3,😀\n".encode()),
        Case("unicode-header", "ключ,名前\n1,a\n".encode()),
        Case("utf8-bom", b"\xef\xbb\xbfid,name\n1,a\n"),
        Case("blank-lines-between", b"id,name\n1,a\n\n\n2,b\n"),
        Case("blank-lines-before-header", b"\n\nid,name\n1,a\n"),
        Case("whitespace-kept", b"id,name\n1,  padded  \n2,\ttab\n"),
        Case("long-field", b"id,blob\n1," + b"x" * 900_000 + b"\n2,y\n"),
        Case(
            "many-columns",
            (
                ",".join(f"c{i}" for i in range(300))
                + "\n"
                + ",".join(str(i) for i in range(300))
                + "\n"
            ).encode(),
        ),
        Case(
            "trailing-delimiter-headerless",
            b"1|a|\n2|b|\n",
            job={"delimiter": "|", "header": False},
        ),
        Case("headerless-columns", b"1,a\n2,b\n", job={"header": False, "columns": ["id", "name"]}),
        Case("comment-lines", b"# exported\nid,name\n1,a\n# note\n2,b\n", job={"comment": "#"}),
        Case("gzip", gzip.compress(table()), name="data.csv.gz"),
        Case(
            "gzip-members",
            gzip.compress(table()) + gzip.compress(b"4,Barbara,Zurich\n"),
            name="data.csv.gz",
            expected=[*ROWS, ("4", "Barbara", "Zurich")],
        ),
        Case("zstd", zstandard.ZstdCompressor().compress(table()), name="data.csv.zst"),
        Case("gzip-unnamed", gzip.compress(table()), name="data.csv"),
        Case(
            "latin-1",
            "id,name\n1,café\n".encode("latin-1"),
            job={"encoding": "latin-1"},
            expected=[("1", "café")],
        ),
        Case(
            "cp1252",
            "id,name\n1,“quoted” €\n".encode("cp1252"),
            job={"encoding": "cp1252"},
            expected=[("1", "“quoted” €")],
        ),
        Case(
            "utf-16-bom",
            "id,name\r\n1,Zoë\r\n".encode("utf-16"),
            job={"encoding": "utf-16"},
            expected=[("1", "Zoë")],
        ),
        Case("header-only", b"id,name\n", expected=[]),
        Case("header-only-no-line-break", b"id,name", expected=[]),
        # What cannot be read: one line, naming the line and the fix.
        Case("ragged-short", b"id,name\n1,a\n2\n", error=r"line 3: expected 2 fields, found 1"),
        Case("ragged-long", b"id,name\n1,a,x\n", error=r"line 2: expected 2 fields, found 3"),
        Case(
            "unterminated-quote",
            b'id,name\n1,"open\n2,b\n',
            error=r"line 2: the quote .* never closed",
        ),
        Case(
            "latin-1-header-undeclared",
            "café,x\n1,2\n".encode("latin-1"),
            error=r'line 1: is not valid utf-8 .*encoding = "latin-1"',
        ),
        Case(
            "latin-1-row-undeclared",
            "a,x\n1,café\n".encode("latin-1"),
            error=r'line 2: is not valid utf-8 .*encoding = "latin-1"',
        ),
        Case("nul-byte", b"id,name\n1,a\x00b\n", error=r"line 2: contains a NUL byte"),
        Case("case-duplicates", b"Id,id\n1,2\n", error=r"'Id' and 'id' differ only in case"),
        Case(
            "reserved-name", b"_ts,x\n1,2\n", error=r"'_ts' has the name of a column lakeport adds"
        ),
        Case("duplicate-header", b"a,b,a\n1,2,3\n", error=r"names 'a' twice"),
        Case("blank-header-field", b"a,,c\n1,2,3\n", error=r"header field 2 is blank"),
        Case("empty-file", b"", error=r"is empty"),
        Case("blank-lines-only", b"\n\n\r\n", error=r"holds only blank lines"),
        Case(
            "wrong-delimiter",
            b"a;b;c\n1;2;3\n",
            error=r'looks semicolon-delimited: set delimiter = ";"',
        ),
        Case("json-named-csv", b'{"a": 1}\n', error=r"looks like JSON, not CSV"),
        Case("png-named-csv", b"\x89PNG\r\n\x1a\n....", error=r"is a PNG image, not text"),
        Case(
            "truncated-gzip", gzip.compress(table())[:-12], name="data.csv.gz", error=r"truncated"
        ),
        Case(
            "named-gzip-not-gzip", table(), name="data.csv.gz", error=r"is named as gzip but is not"
        ),
        Case(
            "field-over-limit",
            b"id,blob\n1," + b"x" * 5000 + b"\n",
            job={"max_field_bytes": 1000},
            error=r"line 2: field 'blob' is longer than 1,000 bytes",
        ),
    ]
    # JSON: what the json-import job reads, compared with the records themselves.
    json_job = {"type": "json-import"}
    records = [{"id": "1", "user": {"name": "Ada"}}, {"id": "2", "user": {"name": "Grace"}}]
    lines = "".join(json.dumps(r) + "\n" for r in records).encode()
    expected: list[tuple[str, ...]] = [("1", "Ada"), ("2", "Grace")]
    found += [
        Case("json-ndjson", lines, name="data.json", job=json_job, expected=expected),
        Case(
            "json-crlf",
            lines.replace(b"\n", b"\r\n"),
            name="data.json",
            job=json_job,
            expected=expected,
        ),
        Case(
            "json-array",
            json.dumps(records).encode(),
            name="data.json",
            job=json_job,
            expected=expected,
        ),
        Case(
            "json-pretty",
            json.dumps(records, indent=2).encode(),
            name="data.json",
            job=json_job,
            expected=expected,
        ),
        Case(
            "json-bom", b"\xef\xbb\xbf" + lines, name="data.json", job=json_job, expected=expected
        ),
        Case(
            "json-blank-lines",
            lines.replace(b"\n", b"\n\n"),
            name="data.json",
            job=json_job,
            expected=expected,
        ),
        Case(
            "json-gzip", gzip.compress(lines), name="data.json.gz", job=json_job, expected=expected
        ),
        Case(
            "json-unicode-escapes",
            b'{"id": "1", "user": {"name": "\\u00c5sa \\ud83d\\ude00"}}\n',
            name="data.json",
            job=json_job,
            expected=[("1", "Åsa 😀")],
        ),
        Case("json-empty-array", b"[]", name="data.json", job=json_job, expected=[]),
        Case(
            "json-whitespace-only", b"  \n\t\n", name="data.json", job=json_job, error=r"is empty"
        ),
        Case(
            "json-truncated",
            lines[:-8],
            name="data.json",
            job=json_job,
            error=r"line 2: .*truncated",
        ),
        Case(
            "json-nul-key",
            b'{"id": "1", "a\\u0000b": "x"}\n',
            name="data.json",
            job=json_job,
            error=r"holds a control character",
        ),
        Case(
            "json-case-keys",
            b'{"id": "1", "ID": "2"}\n',
            name="data.json",
            job=json_job,
            error=r"'id' and 'ID' differ only in case.*mapping",
        ),
        Case(
            "json-not-objects",
            b"[1, 2]\n",
            name="data.json",
            job=json_job,
            error=r"line 1: the record is a number value, not an object",
        ),
        Case(
            "json-too-deep",
            b'{"id": "1", "a": ' + b'{"b": ' * 70 + b"1" + b"}" * 71 + b"\n",
            name="data.json",
            job=json_job,
            error=r"nests deeper than 64 levels",
        ),
    ]
    return found


CASES = cases()


def test_the_corpus_has_every_kind_of_case() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.error is not None for c in CASES) >= 20


def duckdb_rows(path: Path, job: dict[str, Any]) -> list[tuple[str, ...]]:
    """DuckDB's reading of a CSV file with the job's dialect, empty fields as empty text."""
    import duckdb

    delimiter = {"t": "\t"}.get(job.get("delimiter", ","), job.get("delimiter", ","))
    quote = job.get("quote_char", '"')

    def text(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    options = [
        f"delim = {text(delimiter)}",
        f"quote = {text(quote)}",
        f"escape = {text(quote)}",
        f"header = {'true' if job.get('header', True) else 'false'}",
        "all_varchar = true",
        "strict_mode = true",
        "max_line_size = 4000000",
    ]
    con = duckdb.connect()
    try:
        rows = con.sql(f"SELECT * FROM read_csv('{path}', {', '.join(options)})").fetchall()
    finally:
        con.close()
    return [tuple("" if v is None else str(v) for v in row) for row in rows]


def job_text(case: Case, bucket: Path) -> str:
    values = {
        "name": case.id,
        "type": "csv-import",
        "bucket": str(bucket),
        "file": case.name,
        "stream": case.id,
        **case.job,
    }
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_an_awkward_file_imports_exactly_or_fails_in_one_line(tmp_path: Path, case: Case) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / case.name).write_bytes(case.data)
    job = tmp_path / "job.toml"
    job.write_text(job_text(case, bucket))
    store = tmp_path / "store"
    result = CliRunner().invoke(cli, ["--store", str(store), "run", str(job), "-o", "json"])
    assert "internal error" not in result.output
    assert "Traceback" not in result.output
    record = json.loads(result.stdout)
    if case.error is not None:
        assert result.exit_code == 1
        assert record["status"] == "failed"
        error = record["error"]
        assert "\n" not in error, error
        assert re.search(case.error, error), error
        assert case.name in error or "line" not in case.error  # names the object
        assert [s.name for s in Store(store).streams()] == []  # nothing committed
        return
    assert result.exit_code == 0, record
    assert record["status"] == "succeeded", record
    imported = Store(store).streams()
    if case.expected == [] and not imported:
        return  # nothing to import: no stream is made
    frame = Store(store).stream(case.id).sort("_line").collect()
    engine = {"_ts", "_line", "_ingested_at", "_source", "_job"}
    columns = [c for c in frame.columns if c not in engine]
    rows = [tuple("" if v is None else str(v) for v in row) for row in frame.select(columns).rows()]
    if case.expected is not None:
        assert rows == case.expected
        return
    plain = bucket / case.name
    if case.name.endswith((".gz", ".zst")) or case.data[:2] == b"\x1f\x8b":
        plain = tmp_path / "plain.csv"
        data = case.data
        data = (
            gzip.decompress(data)
            if data[:2] == b"\x1f\x8b"
            else zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
        )
        plain.write_bytes(data)
    assert rows == duckdb_rows(plain, case.job)
    assert record["rows_imported"] == len(rows)
