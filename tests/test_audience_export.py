"""Audience exports: each format parses back to the profiles it came from; jobs, limits,
fields, parts, S3 (the moto server), failures that leave nothing, and retried runs."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.audiences import Audiences
from engine.profiles.config import ProfilesConfig
from engine.store import Store
from engine.writers.cells import split_list, split_map
from pipelines import jobs
from pipelines.errors import SpecError
from pipelines.runs import RunRecord
from tests.conftest import S3Server

SCHEMA = pa.schema(
    [
        ("_profile_id", pa.int64()),
        ("user_id", pa.string()),
        ("name", pa.string()),
        ("score", pa.float64()),
        ("visits", pa.int64()),
        ("active", pa.bool_()),
        ("seen", pa.timestamp("us", tz="UTC")),
        ("tags", pa.list_(pa.string())),
        ("attributes", pa.map_(pa.string(), pa.string())),
    ]
)
AWKWARD = st.lists(
    st.sampled_from([*"ab&=%,\"'\n\r\t ;|é中😀+-@", "%26", "%3D", "\u2028"]), max_size=6
).map("".join)


def profiles_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"_profile_id": i + 1, "user_id": f"u{i + 1}", **row} for i, row in enumerate(rows)],
        SCHEMA,
    )


def profiled(root: Path, table: pa.Table) -> Store:
    store = Store(root / "store")
    config = ProfilesConfig(by=("user_id",), fields=()).to_json()
    store.replace_profiles(
        pa.RecordBatchReader.from_batches(table.schema, table.to_batches()), config
    )
    Audiences(store).create("everyone", "_profile_id IS NOT NULL")
    return store


def job_toml(**values: Any) -> str:
    """A job file; strings and lists are written as JSON, which TOML reads the same."""
    fields = {"name": "export", "type": "audience-export", "audience": "everyone", **values}
    lines = []
    for key, value in fields.items():
        shown = ("true" if value else "false") if isinstance(value, bool) else json.dumps(value)
        lines.append(f"{key} = {shown}")
    return "\n".join(lines) + "\n"


def run(store: Store, **values: Any) -> RunRecord:
    record = jobs.run(store, jobs.load(job_toml(**values), "job.toml"))
    assert not record.failed, record.error
    return record


def manifest(folder: Path, record: RunRecord) -> dict[str, Any]:
    assert record.files is not None
    document: dict[str, Any] = json.loads((folder / record.files[-1]).read_text())
    return document


def plain(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        out: bytes = (
            zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
        )
        return out
    return data


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def moment(text: str | None) -> datetime | None:
    """An exported time (ISO 8601 in UTC, `Z`) read back."""
    if not text:
        return None
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


# What each format gives back, next to what the profiles held.


def expected_text(row: dict[str, Any]) -> dict[str, Any]:
    """A profile as CSV writes it, after splitting its lists and maps (null and empty text
    are both an empty cell; an empty list and a null list too)."""
    return {
        "_profile_id": str(row["_profile_id"]),
        "user_id": row["user_id"],
        "name": row["name"] or "",
        "score": row["score"],
        "visits": "" if row["visits"] is None else str(row["visits"]),
        "active": {None: "", True: "true", False: "false"}[row["active"]],
        "seen": row["seen"],
        "tags": [t for t in row["tags"] or []] if row["tags"] != [""] else [],
        "attributes": dict(row["attributes"] or []),
    }


def parsed_csv(row: dict[str, str]) -> dict[str, Any]:
    return {
        **row,
        "score": None if row["score"] == "" else float(row["score"]),
        "seen": moment(row["seen"]),
        "tags": split_list(row["tags"]),
        "attributes": split_map(row["attributes"]),
    }


def read_json(data: bytes) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in data.decode("utf-8").split("\n") if line]
    return [{**row, "seen": moment(row["seen"])} if "seen" in row else row for row in rows]


def expected_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "attributes": None if row["attributes"] is None else dict(row["attributes"]),
    }


def read_multi(folder: Path, record: RunRecord) -> list[dict[str, Any]]:
    """Users of a multi-CSV export, their list and map tables joined back on join_key."""
    assert record.files is not None
    tables: dict[str, list[dict[str, str]]] = defaultdict(list)
    for key in record.files[:-1]:
        table = key.rsplit("_", 1)[1].split(".")[0]
        tables[table] += csv_rows(plain(folder / key))
    tags: dict[str, list[str]] = defaultdict(list)
    for item in tables["tags"]:
        tags[item["join_key"]].append(item["value"])
    attributes: dict[str, dict[str, str]] = defaultdict(dict)
    for entry in tables["attributes"]:
        attributes[entry["join_key"]][entry["key"]] = entry["value"]
    return [
        {
            **{k: v for k, v in user.items() if k != "join_key"},
            "score": None if user["score"] == "" else float(user["score"]),
            "seen": moment(user["seen"]),
            "tags": tags[user["join_key"]],
            "attributes": attributes[user["join_key"]],
        }
        for user in tables["users"]
    ]


def expected_multi(row: dict[str, Any]) -> dict[str, Any]:
    return {**expected_text(row), "tags": list(row["tags"] or [])}


def same(found: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> None:
    assert len(found) == len(wanted)
    for got, want in zip(found, wanted, strict=True):
        for key in want:
            if key == "score" and want[key] is not None and got[key] is not None:
                assert math.isclose(got[key], want[key], rel_tol=0, abs_tol=0), key
            else:
                assert got[key] == want[key], (key, got[key], want[key])


PROFILE = st.fixed_dictionaries(
    {
        "name": st.none() | AWKWARD,
        "score": st.none() | st.floats(allow_nan=False, allow_infinity=False, width=64),
        "visits": st.none() | st.integers(-(2**63), 2**63 - 1),
        "active": st.none() | st.booleans(),
        "seen": st.none()
        | st.datetimes(
            min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
        ),
        "tags": st.none() | st.lists(AWKWARD, max_size=4),
        "attributes": st.none()
        | st.dictionaries(AWKWARD, AWKWARD, max_size=3).map(lambda d: list(d.items())),
    }
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(PROFILE, max_size=12),
    compress=st.sampled_from(["none", "gzip", "zstd"]),
)
def test_every_format_parses_back_to_the_profiles(
    rows: list[dict[str, Any]], compress: str
) -> None:
    table = profiles_table(rows)
    source = table.to_pylist()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = profiled(root, table)
        bucket = root / "bucket"
        common = {"bucket": str(bucket), "formula_guard": False, "compress": compress}

        record = run(store, format="csv", filename="csv-{TIMESTAMP}", **common)
        assert record.users == len(rows)
        assert record.files is not None
        found = [parsed_csv(r) for r in csv_rows(plain(bucket / record.files[0]))]
        same(found, [expected_text(r) for r in source])

        record = run(store, format="json", filename="json-{TIMESTAMP}", **common)
        assert record.files is not None
        same(read_json(plain(bucket / record.files[0])), [expected_json(r) for r in source])

        record = run(store, format="multi-csv", filename="multi-{TIMESTAMP}", **common)
        same(read_multi(bucket, record), [expected_multi(r) for r in source])

        record = run(store, format="parquet", filename="pq-{TIMESTAMP}", bucket=str(bucket))
        assert record.files is not None
        # Polars writes text as large_string: the same values, a wider Arrow type.
        assert pq.read_table(bucket / record.files[0]).cast(table.schema).equals(table)


@pytest.fixture
def sample(tmp_path: Path) -> Store:
    rows = [
        {
            "name": name,
            "score": float(i),
            "visits": i,
            "active": i % 2 == 0,
            "seen": datetime(2026, 1, 1 + i % 28, tzinfo=UTC),
            "tags": [f"t{i % 3}", "x&y"],
            "attributes": [("tier", "gold" if i % 2 else "silver")],
        }
        for i, name in enumerate(["=SUM(A1)", "+1", "-5", "@me", "\tx", "plain"] * 5)
    ]
    return profiled(tmp_path, profiles_table(rows))


def test_the_formula_guard_quotes_risky_text_and_leaves_numbers(
    sample: Store, tmp_path: Path
) -> None:
    bucket = tmp_path / "bucket"
    record = run(sample, bucket=str(bucket), fields=["name", "visits"], user_limit=6)
    assert record.files is not None
    rows = csv_rows(plain(bucket / record.files[0]))
    assert [r["name"] for r in rows] == ["'=SUM(A1)", "+1", "-5", "'@me", "'\tx", "plain"]
    assert list(rows[0]) == ["name", "visits"]  # only the chosen fields, in their order


def test_fields_and_the_user_limit_are_kept(sample: Store, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    record = run(
        sample, bucket=str(bucket), format="json", fields=["user_id", "tags"], user_limit=7
    )
    assert record.users == 7
    assert record.files is not None
    rows = read_json(plain(bucket / record.files[0]))
    assert [list(r) for r in rows] == [["user_id", "tags"]] * 7
    assert rows[0]["tags"] == ["t0", "x&y"]


def test_multi_csv_keys_users_without_exporting_the_identity_fields(
    sample: Store, tmp_path: Path
) -> None:
    bucket = tmp_path / "bucket"
    record = run(sample, bucket=str(bucket), format="multi-csv", fields=["visits", "tags"])
    assert record.files is not None
    names = [key.rsplit("/", 1)[-1] for key in record.files]
    assert names[1:] == [
        "lakeport-everyone-" + names[0].split("-")[2].split("_")[0] + s
        for s in (
            "_tags.csv",
            "_manifest.json",
        )
    ]
    users = csv_rows(plain(bucket / record.files[0]))
    assert list(users[0]) == ["join_key", "visits"]
    tags = csv_rows(plain(bucket / record.files[1]))
    assert len(tags) == 60
    assert {t["join_key"] for t in tags} == {u["join_key"] for u in users}
    document = manifest(bucket, record)
    assert document["tables"] == {"users": ["join_key", "visits"], "tags": ["join_key", "value"]}


def test_segments_list_every_audience_of_each_user(sample: Store, tmp_path: Path) -> None:
    Audiences(sample).create("even", "visits % 2 = 0")
    Audiences(sample).create("big", "visits > 20")
    bucket = tmp_path / "bucket"
    record = run(sample, bucket=str(bucket), fields=["visits"], segments=True)
    assert record.files is not None
    rows = csv_rows(plain(bucket / record.files[0]))
    wanted = [
        "&".join(
            name
            for name, inside in (("big", i > 20), ("even", i % 2 == 0), ("everyone", True))
            if inside
        )
        for i in range(30)
    ]
    assert [r["segments"] for r in rows] == wanted


def test_parts_split_at_the_size_and_duckdb_reads_them(tmp_path: Path) -> None:
    rows = [
        {"name": hashlib.sha256(b"%d" % i).hexdigest() * 2, "tags": [str(i)] * 3}
        for i in range(30_000)
    ]
    store = profiled(tmp_path, profiles_table(rows))
    bucket = tmp_path / "bucket"
    record = run(
        store,
        bucket=str(bucket),
        directory="exports/daily",
        compress="gzip",
        max_file_size="1MiB",
        filename="{AUDIENCE}-part{PART}",
    )
    assert record.files is not None
    data = record.files[:-1]
    assert data[0] == "exports/daily/everyone-part0001.csv.gz"
    assert len(data) > 1
    document = manifest(bucket, record)
    assert [f["key"] for f in document["files"]] == data
    for listed in document["files"]:
        path = bucket / listed["key"]
        assert listed["bytes"] == path.stat().st_size <= 1 << 20
        assert listed["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sum(f["rows"] for f in document["files"]) == 30_000
    total = duckdb.execute(
        f"SELECT count(*), count(DISTINCT user_id) FROM read_csv('{bucket}/exports/daily/*.gz')"
    ).fetchall()
    assert total == [(30_000, 30_000)]
    # The header and the rows are zstd frames apart, as gzip members above.
    record = run(store, bucket=str(bucket), compress="zstd", filename="z")
    assert record.files is not None
    path = bucket / record.files[0]
    total = duckdb.execute(f"SELECT count(*) FROM read_csv('{path}')").fetchall()
    assert total == [(30_000,)]


def test_a_retried_run_writes_the_same_files(sample: Store, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    hashes = []
    for _ in range(2):
        record = run(sample, bucket=str(bucket), format="multi-csv", compress="zstd", filename="x")
        hashes.append([f["sha256"] for f in manifest(bucket, record)["files"]])
    assert hashes[0] == hashes[1]


def test_a_failure_leaves_no_file(sample: Store, tmp_path: Path, monkeypatch: Any) -> None:
    from engine.errors import StorageError
    from engine.writers import export

    def broken(*_: Any) -> None:
        raise StorageError("the check failed")

    monkeypatch.setattr(export, "_confirm", broken)
    bucket = tmp_path / "bucket"
    job = jobs.load(job_toml(bucket=str(bucket), format="multi-csv"), "job.toml")
    record = jobs.run(sample, job)
    assert record.failed
    assert record.error == "the check failed"
    assert [p for p in bucket.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("fmt", ["csv", "multi-csv", "json", "parquet"])
def test_memory_gets_the_same_bytes_as_a_local_folder(
    fmt: str, sample: Store, tmp_path: Path
) -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    common = {"format": fmt, "compress": "gzip", "filename": "{AUDIENCE}", "directory": "out"}
    bucket = f"memory:///{tmp_path.name}-exports"
    in_memory = run(sample, bucket=bucket, **common)
    local = run(sample, bucket=str(tmp_path / "local"), **common)
    assert in_memory.files == local.files
    assert in_memory.object == f"{bucket}/out/everyone_manifest.json"
    assert in_memory.files is not None
    found = sorted(p.rsplit("/", 1)[-1] for p in memory.find(f"/{tmp_path.name}-exports"))
    assert found == sorted(key.rsplit("/", 1)[-1] for key in in_memory.files)  # nothing hidden
    for key in in_memory.files[:-1]:
        data = memory.cat_file(f"/{tmp_path.name}-exports/{key}")
        assert data == (tmp_path / "local" / key).read_bytes(), key


def test_a_failed_export_to_memory_leaves_the_previous_one(
    sample: Store, tmp_path: Path, monkeypatch: Any
) -> None:
    import fsspec

    from engine.errors import StorageError
    from engine.writers import export

    memory = fsspec.filesystem("memory")
    root = f"/{tmp_path.name}-kept"
    values = {"bucket": f"memory://{root}", "filename": "fixed", "compress": "zstd"}
    run(sample, **values)
    before = {path: memory.cat_file(path) for path in memory.find(root)}

    def broken(*_: Any) -> None:
        raise StorageError("the check failed")

    monkeypatch.setattr(export, "_confirm", broken)
    record = jobs.run(sample, jobs.load(job_toml(**values), "job.toml"))
    assert (record.failed, record.error) == (True, "the check failed")
    assert {path: memory.cat_file(path) for path in memory.find(root)} == before


def test_a_local_export_writes_nothing_through_a_link_out_of_its_folder(
    sample: Store, tmp_path: Path
) -> None:
    bucket, outside = tmp_path / "bucket", tmp_path / "outside"
    bucket.mkdir()
    outside.mkdir()
    (bucket / "out").symlink_to(outside, target_is_directory=True)
    job = jobs.load(job_toml(bucket=str(bucket), directory="out/daily"), "job.toml")
    record = jobs.run(sample, job)
    assert record.failed
    assert f"leads to {outside}/daily/" in str(record.error)
    assert "outside the folder" in str(record.error)
    assert list(outside.iterdir()) == []  # not even the folder


# Job files


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"format": "xml"}, "format.*must be one of csv, multi-csv, json, parquet"),
        ({"filename": "x-{DATE}"}, "filename.*TIMESTAMP"),
        ({"filename": "../x"}, "filename.*'\\.\\.'"),
        ({"directory": "a/../../b"}, "directory.*outside"),
        ({"timestamp_format": "YYYY/MM"}, "timestamp_format.*tokens"),
        ({"max_file_size": "10 parsecs"}, "max_file_size.*100MB"),
        ({"max_file_size": 1000}, "max_file_size.*at least 1 MiB"),
        ({"email_to": "not an address"}, "email_to.*email address"),
        ({"email_link_days": 30}, "email_link_days.*1 to 7"),
        ({"compress": "lz4"}, "compress.*none, gzip, zstd"),
        ({"format": "parquet", "headers": False}, "headers.*Parquet"),
        ({"user_limit": 0}, "user_limit.*1 or more"),
        ({"fields": ["a", "a"]}, "fields.*twice"),
        ({"keep_updated": True}, "frequency.*needed"),
        ({"segment": True}, "did you mean 'segments'"),
    ],
)
def test_job_files_are_checked(values: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=message):
        jobs.load(job_toml(bucket=str(tmp_path), **values), "job.toml")


def test_sizes_read_units() -> None:
    job = jobs.load(job_toml(bucket="./b", max_file_size="1.5GiB"), "job.toml")
    assert getattr(job, "max_file_size", None) == 3 << 29


def test_unknown_fields_name_the_known_ones(sample: Store, tmp_path: Path) -> None:
    job = jobs.load(job_toml(bucket=str(tmp_path), fields=["user_id", "nmae"]), "job.toml")
    record = jobs.run(sample, job)
    assert record.failed
    assert "'nmae' is not a profile field: the fields are _profile_id, user_id, name" in str(
        record.error
    )


def test_an_unknown_audience_names_the_known_ones(sample: Store, tmp_path: Path) -> None:
    job = jobs.load(job_toml(bucket=str(tmp_path), audience="vips"), "job.toml")
    record = jobs.run(sample, job)
    assert record.failed
    assert "no audience named 'vips' (audiences: everyone)" in str(record.error)


# S3


def s3_objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


@pytest.mark.parametrize("fmt", ["csv", "multi-csv", "json", "parquet"])
def test_s3_gets_the_same_bytes_as_a_local_folder(
    fmt: str, sample: Store, s3: S3Server, tmp_path: Path
) -> None:
    sample.authorizations.add(s3.authorization())
    bucket = s3.new_bucket()
    common = {"format": fmt, "compress": "zstd", "filename": "{AUDIENCE}"}
    remote = run(sample, bucket=bucket, auth="moto", directory="out", **common)
    local = run(sample, bucket=str(tmp_path / "local"), directory="out", **common)
    assert remote.files == local.files
    assert remote.object == f"s3://{bucket}/out/everyone_manifest.json"
    objects = s3_objects(s3, bucket)
    assert remote.files is not None
    assert sorted(objects) == sorted(remote.files)
    for key in remote.files[:-1]:
        assert objects[key] == (tmp_path / "local" / key).read_bytes(), key
    assert "Uploads" not in s3.client().list_multipart_uploads(Bucket=bucket)
    again = run(sample, bucket=bucket, auth="moto", directory="out", **common)
    assert again.files == remote.files
    retried = s3_objects(s3, bucket)
    assert all(retried[key] == objects[key] for key in remote.files[:-1])  # the same files


def test_an_upload_that_fails_leaves_no_object_and_no_open_upload(
    tmp_path: Path, s3: S3Server, monkeypatch: Any
) -> None:
    from engine.errors import StorageError
    from engine.storage import upload

    rows = [{"name": hashlib.sha256(b"%d" % i).hexdigest() * 4} for i in range(120_000)]
    store = profiled(tmp_path, profiles_table(rows))
    store.authorizations.add(s3.authorization())
    bucket = s3.new_bucket()
    sent: list[int] = []
    real = upload.Upload._put_part

    def flaky(self: upload.Upload, number: int, part: bytes) -> dict[str, Any]:
        sent.append(number)
        if len(sent) == 3:
            raise StorageError("the network went away")
        return real(self, number, part)

    monkeypatch.setattr(upload.Upload, "_put_part", flaky)
    job = jobs.load(job_toml(bucket=bucket, auth="moto", format="multi-csv"), "job.toml")
    record = jobs.run(store, job)
    assert record.failed
    assert "the network went away" in str(record.error)
    assert len(sent) >= 3
    assert s3_objects(s3, bucket) == {}
    assert "Uploads" not in s3.client().list_multipart_uploads(Bucket=bucket)


@pytest.mark.parametrize(("compress", "codec"), [("none", "UNCOMPRESSED"), ("gzip", "GZIP")])
def test_parquet_takes_its_codec_from_compress(
    compress: str, codec: str, sample: Store, tmp_path: Path
) -> None:
    bucket = tmp_path / "bucket"
    record = run(sample, bucket=str(bucket), format="parquet", compress=compress)
    assert record.files is not None
    assert record.files[0].endswith(".parquet")  # the codec is inside the file
    found = pq.ParquetFile(bucket / record.files[0])
    assert found.metadata.row_group(0).column(0).compression == codec
    assert found.metadata.num_rows == 30


def test_a_parquet_upload_failure_is_reported_as_itself(
    sample: Store, tmp_path: Path, monkeypatch: Any
) -> None:
    from engine.errors import StorageError
    from engine.storage import folders

    def broken(self: Any, data: Any) -> int:
        raise StorageError("the disk is full")

    monkeypatch.setattr(folders._LocalFile, "write", broken)
    bucket = tmp_path / "bucket"
    job = jobs.load(job_toml(bucket=str(bucket), format="parquet"), "job.toml")
    record = jobs.run(sample, job)
    assert record.failed
    assert record.error == "the disk is full"
    assert [p for p in bucket.rglob("*") if p.is_file()] == []


def test_the_cli_runs_an_export_and_lists_it(sample: Store, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pipelines.cli import cli

    job_file = tmp_path / "export.toml"
    job_file.write_text(job_toml(bucket=str(tmp_path / "out"), format="json", user_limit=5))
    base = ["--store", str(sample.path)]
    result = CliRunner().invoke(cli, [*base, "run", str(job_file), "-o", "json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["users"] == 5
    assert shown["files"][-1].endswith("_manifest.json")
    assert "rows_read" not in shown
    text = CliRunner().invoke(cli, [*base, "run", str(job_file)])
    assert "5 users in 1 file and a manifest" in text.stdout
    runs = CliRunner().invoke(cli, [*base, "runs", "-o", "json"])
    assert [r["users"] for r in json.loads(runs.stdout)] == [5, 5]
    job_file.write_text(job_toml(bucket=str(tmp_path / "out"), audience="nobody"))
    failed = CliRunner().invoke(cli, [*base, "run", str(job_file)])
    assert failed.exit_code == 1
    assert "no audience named 'nobody'" in failed.output
    assert "Traceback" not in failed.output


def test_taking_back_goes_on_past_a_file_it_cannot_remove(
    sample: Store, tmp_path: Path, monkeypatch: Any
) -> None:
    from engine.errors import StorageError
    from engine.storage.folders import LocalFolder
    from engine.writers import export

    def broken(*_: Any) -> None:
        raise StorageError("the check failed")

    real = LocalFolder.remove
    refused: list[str] = []

    def remove(self: LocalFolder, key: str) -> None:
        if not refused:
            refused.append(key)
        if key == refused[0]:  # this one, every time it is tried
            raise OSError("permission denied")
        real(self, key)

    monkeypatch.setattr(export, "_confirm", broken)
    monkeypatch.setattr(LocalFolder, "remove", remove)
    bucket = tmp_path / "bucket"
    job = jobs.load(job_toml(bucket=str(bucket), format="multi-csv"), "job.toml")
    record = jobs.run(sample, job)
    assert record.error == "the check failed"  # not the error met while taking files back
    left = [p.relative_to(bucket).as_posix() for p in bucket.rglob("*") if p.is_file()]
    assert left == refused  # every other file was removed
    # The one left is in the journal: the next run (or `lakeport cleanup`) takes it back.
    entry = sample.state.get_journal("export", "export")
    assert entry is not None
    assert [e["at"] for e in entry["files"].values()] == refused
    monkeypatch.setattr(LocalFolder, "remove", real)
    monkeypatch.undo()
    again = jobs.run(sample, job)
    assert not again.failed
    assert again.note is not None
    assert "took back 1 file(s)" in again.note
    found = {p.relative_to(bucket).as_posix() for p in bucket.rglob("*") if p.is_file()}
    assert found == set(again.files or [])  # nothing but the new export's files


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_progress_hears_the_bytes_written(fmt: str, tmp_path: Path) -> None:
    rows = [{"name": hashlib.sha256(b"%d" % i).hexdigest()} for i in range(40_000)]
    store = profiled(tmp_path, profiles_table(rows))
    heard: list[tuple[int, int]] = []
    job = jobs.load(job_toml(bucket=str(tmp_path / "out"), format=fmt), "job.toml")
    record = jobs.run(store, job, progress=lambda done, total: heard.append((done, total)))
    assert not record.failed, record.error
    sizes = [done for done, _ in heard]
    assert len(sizes) >= 2  # 40,000 users come in batches of 16K
    assert sizes == sorted(sizes)
    assert 0 < sizes[-1] <= record.bytes
    assert {total for _, total in heard} == {0}  # the total is not known ahead


def test_an_export_from_tables_in_s3_to_s3(tmp_path: Path, s3: S3Server) -> None:
    # Profiles in S3 reach DuckDB through Arrow, not from local Parquet files.
    Store(tmp_path / "store").authorizations.add(s3.authorization())
    store = Store(tmp_path / "store", tables=f"s3://{s3.new_bucket()}/lake", tables_auth="moto")
    table = profiles_table([{"name": f"n{i}", "tags": ["a"] * (i % 3)} for i in range(5000)])
    config = ProfilesConfig(by=("user_id",), fields=()).to_json()
    store.replace_profiles(
        pa.RecordBatchReader.from_batches(table.schema, table.to_batches()), config
    )
    Audiences(store).create("everyone", "_profile_id IS NOT NULL")
    bucket = s3.new_bucket()
    record = run(store, bucket=bucket, auth="moto", format="multi-csv", user_limit=4000)
    assert record.users == 4000
    assert record.files is not None
    objects = s3_objects(s3, bucket)
    users = csv_rows(objects[record.files[0]])
    assert [u["user_id"] for u in users] == [f"u{i + 1}" for i in range(4000)]  # table order
    tags = csv_rows(objects[record.files[1]])
    assert len(tags) == sum(i % 3 for i in range(4000))


@pytest.mark.parametrize("fmt", ["csv", "multi-csv", "json", "parquet"])
def test_an_empty_audience_writes_files_with_their_headers(
    fmt: str, sample: Store, tmp_path: Path
) -> None:
    Audiences(sample).create("nobody", "visits < 0")
    bucket = tmp_path / "bucket"
    record = run(sample, bucket=str(bucket), audience="nobody", format=fmt, compress="gzip")
    assert record.users == 0
    assert record.files is not None
    document = manifest(bucket, record)
    assert [f["rows"] for f in document["files"]] == [0] * (len(record.files) - 1)
    first = bucket / record.files[0]
    if fmt == "parquet":
        assert pq.read_table(first).num_rows == 0
    elif fmt == "json":
        assert plain(first) == b""
    else:
        assert plain(first).startswith(b'"')  # the header line, and nothing else
        assert plain(first).count(b"\n") == 1


def test_an_export_with_read_only_keys_names_the_permission_it_needs(
    sample: Store, s3: S3Server
) -> None:
    sample.authorizations.add(s3.authorization("read-only", s3.reader))
    bucket = s3.new_bucket()
    job = jobs.load(job_toml(bucket=bucket, auth="read-only"), "job.toml")
    record = jobs.run(sample, job)
    assert record.failed
    assert "may not write" in str(record.error)
    assert "s3:PutObject and s3:AbortMultipartUpload" in str(record.error)
    assert "s3:GetObject" not in str(record.error)


def test_the_policy_of_an_export_bucket_lists_every_permission_it_uses() -> None:
    from engine.auth import bucket_policy

    bucket, objects = bucket_policy("acme")["Statement"]
    assert "s3:ListBucketMultipartUploads" in bucket["Action"]
    assert {"s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"} <= set(objects["Action"])
    read_only, _ = bucket_policy("acme", write=False)["Statement"]
    assert "s3:ListBucketMultipartUploads" not in read_only["Action"]


def test_a_zstd_file_reads_whole_as_a_stream_and_the_manifest_says_how_it_is_made(
    tmp_path: Path,
) -> None:
    rows = [{"name": hashlib.sha256(b"%d" % i).hexdigest() * 2} for i in range(100_000)]
    store = profiled(tmp_path, profiles_table(rows))
    out = tmp_path / "out"
    record = run(store, bucket=str(out), compress="zstd", format="csv")
    assert record.files is not None
    data = (out / record.files[0]).read_bytes()
    whole = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    assert len(csv_rows(whole.read())) == 100_000
    assert manifest(out, record)["compressed_as"] == "one zstd frame per chunk, concatenated"
