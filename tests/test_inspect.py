"""`lakeport inspect`: what it guesses, and that the job it suggests runs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.readers.csv import guess_delimiter
from engine.readers.sniff import name_prefix
from engine.readers.source import guess_encoding
from engine.store import Store
from pipelines import jobs
from pipelines.cli import cli
from tests.conftest import S3Server


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("events_20261101.csv", "^events_"),
        ("crm-export-2026-11-01T09:00:00.csv.gz", "^crm\\-export\\-"),
        ("users_1793523600.csv", "^users_"),
        ("20261101.csv", "^"),
        ("no-timestamp.csv", None),
    ],
)
def test_prefix_for_names_with_a_timestamp(name: str, prefix: str | None) -> None:
    assert name_prefix(name) == prefix


def test_guesses() -> None:
    assert guess_delimiter("a\tb\tc\n1\t2\t3\n") == "\t"
    assert guess_delimiter('a;b\n"x;y";2\n1;2\n') == ";"
    assert guess_delimiter("a,b\n1,2\n") == ","
    assert guess_encoding("café".encode()) == "utf-8"
    assert guess_encoding("café".encode("latin-1")) == "latin-1"
    assert guess_encoding("€".encode("cp1252")) == "cp1252"


def test_inspect_shows_the_file_and_a_job_that_runs(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    body = "id\tname\tcreated\n1\tJosé\t2026-11-01 09:00:00\n2\tAna\t2026-11-02 10:00:00\n"
    (bucket / "users_20261101.csv.gz").write_bytes(gzip.compress(body.encode("latin-1")))
    store = tmp_path / "store"
    result = CliRunner().invoke(
        cli, ["--store", str(store), "inspect", str(bucket / "users_20261101.csv.gz"), "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert (found["compression"], found["encoding"], found["delimiter"]) == (
        "gzip",
        "latin-1",
        "\t",
    )
    assert found["fields"] == ["id", "name", "created"]
    assert found["timestamp_fields"] == ["created"]
    assert found["prefix"] == "^users_"
    assert found["rows"][0] == {"id": "1", "name": "José", "created": "2026-11-01 09:00:00"}
    job_file = tmp_path / "job.toml"
    job_file.write_text(found["job"])
    job, _ = jobs.load_file(job_file)
    record = jobs.run(Store(store), job)
    assert (record.status, record.rows_imported) == ("succeeded", 2)
    text = CliRunner().invoke(
        cli, ["--store", str(store), "inspect", str(bucket / "users_20261101.csv.gz")]
    )
    assert "look like timestamps: created" in text.stdout
    assert "José" in text.stdout


def test_inspect_an_s3_object(tmp_path: Path, s3: S3Server) -> None:
    store = tmp_path / "store"
    Store(store).authorizations.add(s3.authorization())
    bucket = s3.new_bucket()
    s3.put(bucket, "in/events_2026-11-01.csv", b"a;b;ts\n1;2;1793523600\n")
    result = CliRunner().invoke(
        cli,
        [
            "--store",
            str(store),
            "inspect",
            f"s3://{bucket}/in/events_2026-11-01.csv",
            "--auth",
            "moto",
            "-o",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert (found["delimiter"], found["fields"], found["timestamp_fields"]) == (
        ";",
        ["a", "b", "ts"],
        ["ts"],
    )
    assert 'auth = "moto"' in found["job"]
    assert f'bucket = "{bucket}"' in found["job"]
    assert 'directory = "in"' in found["job"]
    assert 'prefix = "^events_"' in found["job"]


def test_inspect_a_json_file_and_run_the_job_it_suggests(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    body = (
        '{"user": {"id": 1, "email": "a@x"}, "at": "2026-11-01T09:00:00Z", "amount": 1.50}\n'
        '{"user": {"id": 2}, "at": "2026-11-01T10:00:00Z", "tags": ["vip"]}\n'
    )
    (bucket / "events_20261101.json.gz").write_bytes(gzip.compress(body.encode()))
    store = tmp_path / "store"
    result = CliRunner().invoke(
        cli,
        ["--store", str(store), "inspect", str(bucket / "events_20261101.json.gz"), "-o", "json"],
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert (found["format"], found["shape"], found["compression"]) == (
        "json",
        "newline-delimited",
        "gzip",
    )
    assert found["fields"] == ["user.id", "user.email", "at", "amount", "tags"]
    assert found["rows"][0]["amount"] == "1.5"
    assert found["rows"][1]["tags"] == ["vip"]
    assert found["timestamp_fields"] == ["at"]
    job_file = tmp_path / "job.toml"
    job_file.write_text(found["job"])
    job, _ = jobs.load_file(job_file)
    record = jobs.run(Store(store), job)
    assert (record.status, record.rows_imported) == ("succeeded", 2)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("blank.json", b"  \n\t\n", "is empty: it holds no data, only white space"),
        ("blank.csv", b"\n\n", "is empty: it holds no data, only white space"),
        ("empty.ndjson", b"", "is empty"),
        ("cut.json", b'[{"a": 1', "its first record is not valid JSON"),
        ("lines.ndjson", b'{"a": 1\n', "its first record is not valid JSON"),
    ],
)
def test_inspect_of_files_without_records_says_why(
    tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    (tmp_path / name).write_bytes(data)
    result = CliRunner().invoke(
        cli, ["--store", str(tmp_path / "store"), "inspect", str(tmp_path / name)]
    )
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert "CSV" not in result.stderr  # a JSON file is never told what a CSV file needs


def test_inspect_of_an_empty_json_array_shows_no_fields(tmp_path: Path) -> None:
    (tmp_path / "none.json").write_bytes(b"[ ]")
    result = CliRunner().invoke(
        cli, ["--store", str(tmp_path / "store"), "inspect", str(tmp_path / "none.json")]
    )
    assert result.exit_code == 0, result.output
    assert "JSON, array" in result.stdout
    assert "fields (0)" in result.stdout


def test_inspect_suggests_no_header_and_the_quote_character(tmp_path: Path) -> None:
    import json

    (tmp_path / "customer.tbl").write_bytes(b"1|Customer#1|711.56|\n2|Customer#2|121.65|\n")
    (tmp_path / "quoted.tsv").write_bytes(b"id\tname\n'1'\t'a\tb'\n'2'\t'c'\n")
    store = str(tmp_path / "store")
    found = {}
    for name in ("customer.tbl", "quoted.tsv"):
        result = CliRunner().invoke(
            cli, ["--store", store, "inspect", str(tmp_path / name), "-o", "json"]
        )
        assert result.exit_code == 0, result.output
        found[name] = json.loads(result.stdout)
    assert found["customer.tbl"]["fields"][:2] == ["column_1", "column_2"]
    assert "header = false" in found["customer.tbl"]["job"]
    assert found["quoted.tsv"]["quote_char"] == "'"
    assert found["quoted.tsv"]["rows"][0] == {"id": "1", "name": "a\tb"}
    # The suggested jobs import the files as inspect showed them.
    for name, job_text in (
        ("customer.tbl", found["customer.tbl"]["job"]),
        ("quoted.tsv", found["quoted.tsv"]["job"]),
    ):
        job = tmp_path / f"{name}.toml"
        job.write_text(job_text.replace("CHANGE-ME", name.split(".")[0]))
        ran = CliRunner().invoke(cli, ["--store", store, "run", str(job)])
        assert ran.exit_code == 0, ran.output
        assert "2 imported" in ran.output
