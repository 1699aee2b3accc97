"""Event exports: the streams' events to a bucket, only what is new since the last completed
run, each event exactly once across runs, whatever stops a run or commits beside it."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from engine.crash import AT_ENV, CRASH_EXIT_CODE, WITH_ENV
from engine.errors import ConfigError
from engine.store import Source, Store
from pipelines import jobs
from pipelines.errors import SpecError
from pipelines.runs import RunRecord
from tests.conftest import S3Server
from tests.faults import FaultProxy, Rule

LAKEPORT = "import sys; from pipelines.cli import main; sys.argv[0] = 'lakeport'; main()"


def append(store: Store, stream: str, key: str, rows: dict[str, list[str]]) -> None:
    store.append(stream, [pa.record_batch(rows)], source=Source(key, key), job="load")


def job_text(bucket: str, auth: str | None = None, **extra: Any) -> str:
    values = {
        "name": "events",
        "type": "event-export",
        "bucket": bucket,
        "filename": "{JOB}-{PART}-{TIMESTAMP}",
        "timestamp_format": "unix",
        **({"auth": auth} if auth else {}),
        **extra,
    }
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def run(store: Store, text: str, **options: Any) -> RunRecord:
    record = jobs.run(store, jobs.load(text, "events.toml"), **options)
    assert not record.failed, record.error
    return record


def exported(folder: Path) -> list[dict[str, str]]:
    """Every event in every export's CSV files in `folder`, checked against the manifests."""
    found: list[dict[str, str]] = []
    for manifest in sorted(folder.glob("*_manifest.json")):
        for listed in json.loads(manifest.read_text())["files"]:
            text = (folder / listed["key"]).read_text()
            rows = list(csv.DictReader(io.StringIO(text)))
            assert len(rows) == listed["rows"]
            found += rows
    listed_keys = {
        f["key"] for m in folder.glob("*_manifest.json") for f in json.loads(m.read_text())["files"]
    }
    others = {p.name for p in folder.iterdir() if not p.name.endswith("_manifest.json")}
    assert others == listed_keys, "files no manifest lists are left"
    return found


def ids(rows: list[dict[str, str]]) -> Counter[tuple[str, str]]:
    return Counter((r["_stream"], r["id"]) for r in rows)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    found = Store(tmp_path / "store")
    append(found, "web", "web-1", {"id": ["w1", "w2"], "page": ["/", "=cmd"]})
    append(found, "app", "app-1", {"id": ["a1"], "screen": ["home"], "page": ["/app"]})
    return found


def test_streams_with_different_fields_are_exported_together(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    record = run(store, job_text(str(out)))
    assert record.events == 3
    assert record.streams == {"app": 1, "web": 2}
    assert record.files is not None
    header, *_lines = (out / record.files[0]).read_text().splitlines()
    assert header == '"_stream","_ts","_source","_ingested_at","id","page","screen"'
    rows = exported(out)
    assert ids(rows) == Counter({("web", "w1"): 1, ("web", "w2"): 1, ("app", "a1"): 1})
    web = [r for r in rows if r["_stream"] == "web"]
    assert [r["screen"] for r in web] == ["", ""]  # a field the stream lacks is empty
    assert [r["page"] for r in web] == ["/", "'=cmd"]  # the formula guard is on
    manifest = json.loads((out / record.files[-1]).read_text())
    assert manifest["streams"]["web"] == {"after_version": None, "version": 0, "events": 2}


def test_a_second_run_exports_exactly_the_new_events(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    text = job_text(str(out))
    run(store, text)
    append(store, "web", "web-2", {"id": ["w3"], "referrer": ["x"]})
    record = run(store, text)
    assert record.events == 1
    assert record.streams == {"app": 0, "web": 1}
    assert record.files is not None
    manifest = json.loads((out / record.files[-1]).read_text())
    assert manifest["fields_added"] == ["referrer"]
    assert [f["name"] for f in manifest["schema"]][-2:] == ["referrer", "screen"]
    assert manifest["streams"]["web"]["after_version"] == 0
    assert "new field(s) since the last export: referrer" in (record.note or "")
    assert ids(exported(out)) == Counter(
        {("web", "w1"): 1, ("web", "w2"): 1, ("web", "w3"): 1, ("app", "a1"): 1}
    )
    again = run(store, text)
    assert again.status == "no new events"
    assert again.files is None
    assert len(list(out.glob("*_manifest.json"))) == 2


def test_restart_exports_every_event_again(store: Store, tmp_path: Path) -> None:
    text = job_text(str(tmp_path / "out"))
    run(store, text)
    assert run(store, text).status == "no new events"
    assert run(store, text, restart=True).events == 3


def test_an_import_committed_during_the_export_lands_in_the_next_one(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    text = job_text(str(out), streams=["web"])
    imported: list[bool] = []

    def import_beside(written: int, _total: int) -> None:
        if not imported:  # between the pin and the end of the export
            append(store, "web", "web-2", {"id": ["w3", "w4"]})
            imported.append(True)

    first = run(store, text, progress=import_beside)
    assert imported
    assert first.events == 2
    second = run(store, text)
    assert second.events == 2
    assert ids(exported(out)) == Counter({("web", f"w{i}"): 1 for i in range(1, 5)})


def test_choices_of_streams_fields_and_time(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    text = job_text(str(out), streams=["app"], fields=["id", "_ts", "screen"])
    record = run(store, text)
    assert record.files is not None
    assert (out / record.files[0]).read_text().splitlines()[0] == '"id","_ts","screen"'
    later = job_text(str(tmp_path / "later"), since="2999-01-01T00:00:00")
    assert run(store, later).events == 0  # new files, no event in the bounds: an empty export


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"filename": "{AUDIENCE}-{TIMESTAMP}"}, "{TIMESTAMP}, {JOB}, {PART}"),
        ({"since": "yesterday"}, "ISO 8601"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "until"),
        ({"format": "multi-csv"}, "format"),
        ({"streams": []}, "at least one stream"),
    ],
)
def test_bad_job_fields_are_refused(extra: dict[str, Any], problem: str) -> None:
    with pytest.raises(SpecError, match=r"events\.toml") as caught:
        jobs.load(job_text("./out", **extra), "events.toml")
    assert problem in str(caught.value)


def test_an_unknown_stream_lists_the_streams(store: Store, tmp_path: Path) -> None:
    job = jobs.load(job_text(str(tmp_path / "out"), streams=["wbe"]), "events.toml")
    record = jobs.run(store, job)
    assert record.failed
    assert "no stream named 'wbe' (streams: app, web)" in (record.error or "")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_fields_of_two_types_are_refused_with_the_streams(store: Store, tmp_path: Path) -> None:
    store.append(
        "lists",
        [pa.record_batch({"page": pa.array([["a"]], pa.list_(pa.string()))})],
        source=Source("l", "l"),
        job="load",
    )
    record = jobs.run(store, jobs.load(job_text(str(tmp_path / "out")), "events.toml"))
    assert record.failed
    assert "the field 'page'" in (record.error or "")
    assert "export them apart" in (record.error or "")


def test_a_taken_name_is_never_replaced(store: Store, tmp_path: Path) -> None:
    text = job_text(str(tmp_path / "out"), filename="fixed")
    run(store, text)
    append(store, "web", "web-2", {"id": ["w3"]})
    record = jobs.run(store, jobs.load(text, "events.toml"))
    assert record.failed
    assert "never replaces one" in (record.error or "")
    assert run(store, job_text(str(tmp_path / "out"))).events == 1  # nothing was lost


def test_compressed_exports_read_whole_by_the_usual_tools(store: Store, tmp_path: Path) -> None:
    for codec, tool in (("gzip", "gzip"), ("zstd", "zstd")):
        out = tmp_path / codec
        text = job_text(str(out), name=f"to-{codec}", compress=codec, max_file_size="1MiB")
        record = run(store, text)
        assert record.files is not None
        path = out / record.files[0]
        data = path.read_bytes()
        plain = gzip.decompress(data) if codec == "gzip" else _zstd(data)
        assert plain.count(b"\n") == 4
        if shutil.which(tool):
            by_tool = subprocess.run([tool, "-dc", str(path)], capture_output=True, check=True)
            assert by_tool.stdout == plain
        counted = duckdb.execute(f"SELECT count(*) FROM read_csv('{path}')").fetchall()
        assert counted == [(3,)]


def _zstd(data: bytes) -> bytes:
    """Every frame (the header and each chunk are frames apart)."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    return reader.read()


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_s3_and_a_local_folder_get_the_same_bytes(
    fmt: str, store: Store, tmp_path: Path, s3: S3Server
) -> None:
    store.authorizations.add(s3.authorization())
    bucket = s3.new_bucket()
    fixed = {"filename": "same", "format": fmt}
    local = run(store, job_text(str(tmp_path / "out"), **fixed))
    remote = run(store, job_text(bucket, "moto", **fixed), restart=True)
    assert local.files is not None
    assert remote.files is not None
    client = s3.client()
    for key in local.files[:-1]:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body == (tmp_path / "out" / key).read_bytes(), key


def _stopped(store: Store, job_file: Path, stage: str, how: str = "exit") -> None:
    done = subprocess.run(
        [sys.executable, "-c", LAKEPORT, "--store", str(store.path), "run", str(job_file)],
        capture_output=True,
        text=True,
        env={**os.environ, AT_ENV: stage, WITH_ENV: how},
        timeout=120,
    )
    expected = {"exit": CRASH_EXIT_CODE, "SIGINT": 130, "SIGTERM": 143}[how]
    assert done.returncode == expected, done.stderr
    assert "Traceback" not in done.stderr


STAGES = ["export-file", "export-before-commit", "export-committing", "export-manifest"]


def _kills() -> Iterator[Any]:
    """Every stage, stopped by a crash and by a signal, to a local folder and to S3; a crash
    at each stage locally and one in S3 in the default run, the rest in the slow one."""
    for where, signal in (("local", "SIGTERM"), ("s3", "SIGINT")):
        for stage in STAGES:
            for how in ("exit", signal):
                fast = how == "exit" and (where == "local" or stage == "export-committing")
                marks = () if fast else (pytest.mark.slow,)
                yield pytest.param(where, stage, how, marks=marks, id=f"{where}-{stage}-{how}")


@pytest.mark.parametrize(("where", "stage", "how"), list(_kills()))
def test_a_stopped_export_then_a_re_run_exports_each_event_once(
    where: str, stage: str, how: str, store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    out = tmp_path / "out"
    bucket, auth = str(out), None
    if where == "s3":
        s3: S3Server = request.getfixturevalue("s3")
        store.authorizations.add(s3.authorization())
        bucket, auth = s3.new_bucket(), "moto"
    job_file = tmp_path / "events.toml"
    job_file.write_text(job_text(bucket, auth, max_file_size="1MiB"))
    run(store, job_file.read_text())
    append(store, "web", "web-2", {"id": [f"n{i}" for i in range(50_000)]})
    _stopped(store, job_file, stage, how)
    append(store, "app", "app-2", {"id": ["a2"]})
    run(store, job_file.read_text())
    expected = Counter({("web", "w1"): 1, ("web", "w2"): 1, ("app", "a1"): 1, ("app", "a2"): 1})
    expected.update(("web", f"n{i}") for i in range(50_000))
    found = s3_events(objects(s3, bucket)) if where == "s3" else ids(exported(out))
    assert found == expected  # each event once, no open upload, no file no manifest lists
    assert store.state.journal() == []


def objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def s3_events(found: dict[str, bytes]) -> Counter[tuple[str, str]]:
    """The events of every export in the bucket, each file checked against its manifest."""
    rows: list[dict[str, str]] = []
    listed: set[str] = set()
    for key in [k for k in found if k.endswith("_manifest.json")]:
        for f in json.loads(found[key])["files"]:
            listed.add(f["key"])
            assert hashlib.sha256(found[f["key"]]).hexdigest() == f["sha256"]
            rows += list(csv.DictReader(io.StringIO(found[f["key"]].decode())))
    assert {k for k in found if not k.endswith("_manifest.json")} == listed
    return ids(rows)


@pytest.mark.parametrize(
    ("name", "rules", "fails"),
    [
        ("500 on every completion", [Rule("complete", "status", nth=None, arg=500)], True),
        ("every part's answer lost", [Rule("part", "lost", nth=None)], True),
        ("a 500 on one part", [Rule("part", "status", arg=500)], False),
        ("a 500 on the manifest PUT", [Rule("put", "status", arg=500)], False),
    ],
)
def test_faults_on_s3_leave_each_event_exported_once(
    name: str, rules: list[Rule], fails: bool, store: Store, s3: S3Server, proxy: FaultProxy
) -> None:
    store.authorizations.add(replace(s3.authorization("proxied"), endpoint_url=proxy.endpoint))
    bucket = s3.new_bucket()
    text = job_text(bucket, "proxied")
    run(store, text)
    marks = store.state.watermarks("events")
    pad = "x" * 100
    append(store, "web", "web-2", {"id": [f"n{i}" for i in range(120_000)], "pad": [pad] * 120_000})
    proxy.add(*rules)
    record = jobs.run(store, jobs.load(text, "events.toml"))
    assert [r for r in proxy.rules if r.fired], name
    proxy.clear()
    assert record.failed == fails, record.error
    if fails:
        assert "Traceback" not in (record.error or "")
        assert store.state.watermarks("events") == marks
        run(store, text)
    expected = Counter({("web", "w1"): 1, ("web", "w2"): 1, ("app", "a1"): 1})
    expected.update(("web", f"n{i}") for i in range(120_000))
    assert s3_events(objects(s3, bucket)) == expected


def test_cleanup_finishes_a_decided_export_and_moves_its_watermarks(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    job_file = tmp_path / "events.toml"
    job_file.write_text(job_text(str(out)))
    _stopped(store, job_file, "export-committing")
    assert store.state.watermarks("events") == {}
    done = subprocess.run(
        [sys.executable, "-c", LAKEPORT, "--store", str(store.path), "cleanup"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert store.state.watermarks("events")["version:web"] == "0"
    assert ids(exported(out)) == Counter({("web", "w1"): 1, ("web", "w2"): 1, ("app", "a1"): 1})
    assert run(store, job_file.read_text()).status == "no new events"


def test_the_job_file_is_checked_before_any_run() -> None:
    with pytest.raises(ConfigError):
        jobs.load(job_text("./out", fields=[]), "events.toml")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_split_by_stream_gives_each_stream_its_files_and_one_manifest(
    fmt: str, store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    text = job_text(str(out), split_by_stream=True, format=fmt, filename="ev-{TIMESTAMP}")
    record = run(store, text)
    assert record.files is not None
    *data, manifest_key = record.files
    stamp = manifest_key.removeprefix("ev-").removesuffix("_manifest.json")
    suffix = ".csv" if fmt == "csv" else ".parquet"
    assert data == [f"ev-{stamp}-app{suffix}", f"ev-{stamp}-web{suffix}"]
    manifest = json.loads((out / manifest_key).read_text())
    assert [f["rows"] for f in manifest["files"]] == [1, 2]
    for key, stream in zip(data, ["app", "web"], strict=True):
        found = duckdb.execute(
            f"SELECT DISTINCT _stream, count(*) OVER () FROM '{out / key}'"
        ).fetchall()
        assert found == [(stream, 1 if stream == "app" else 2)]
    # Only a stream with new events gets files on the next run.
    append(store, "web", "web-2", {"id": ["w3"]})
    again = run(store, text)
    assert again.files is not None
    assert [k.rsplit("-", 1)[-1] for k in again.files[:-1]] == [f"web{suffix}"]


def test_the_stream_placeholder_puts_each_stream_in_its_folder(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    record = run(
        store, job_text(str(out), split_by_stream=True, filename="{STREAM}/{JOB}-{TIMESTAMP}")
    )
    assert record.files is not None
    assert [k.split("/")[0] for k in record.files] == ["app", "web", "all"]
    with pytest.raises(SpecError, match="split_by_stream = true"):
        jobs.load(job_text("./out", filename="{STREAM}-{TIMESTAMP}"), "events.toml")


def _compacted(store: Store) -> str:
    from deltalake import DeltaTable

    DeltaTable(store.stream_url("web")).optimize.compact()  # w1, w2 and w3 in one new file
    return "stream 'web' was rewritten after version 0"


def _log_cleaned_up(store: Store) -> str:
    from deltalake import DeltaTable

    DeltaTable(store.stream_url("web")).create_checkpoint()
    log = store.path / "streams" / "web" / "_delta_log"
    (log / "00000000000000000000.json").unlink()  # as a log retention by another tool would
    return "cannot read version 0 of stream 'web'"


@pytest.mark.parametrize("change", [_compacted, _log_cleaned_up])
def test_a_stream_changed_by_another_tool_is_refused_until_restart(
    change: Callable[[Store], str], store: Store, tmp_path: Path
) -> None:
    text = job_text(str(tmp_path / "out"), streams=["web"])
    run(store, text)
    append(store, "web", "web-2", {"id": ["w3"]})
    said = change(store)
    record = jobs.run(store, jobs.load(text, "events.toml"))
    assert record.failed
    assert said in (record.error or "")
    assert "--restart" in (record.error or "")
    assert store.state.watermarks("events")["version:web"] == "0"
    assert run(store, text, restart=True).events == 3


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_parquet_and_json_hold_the_events_the_stream_holds(
    fmt: str, store: Store, tmp_path: Path
) -> None:
    """Polars writes these formats, from text held as string views: the values and the lists
    come out as the stream has them, and the manifest calls text `string`."""
    nested = {
        "id": pa.array(["n1", "n2"]),
        "tags": pa.array([["a", "bcdefghijklmnop"], None], pa.list_(pa.string())),
        "kind": pa.array(["x", "y"]),
    }
    store.append("nested", [pa.record_batch(nested)], source=Source("n-1", "n-1"), job="load")
    out = tmp_path / "out"
    record = run(store, job_text(str(out), format=fmt, streams=["nested", "web"]))
    assert record.files is not None
    data, manifest_key = record.files
    manifest = json.loads((out / manifest_key).read_text())
    types = {f["name"]: f["type"] for f in manifest["schema"]}
    assert types["_stream"] == types["id"] == types["page"] == "string"
    assert types["tags"] == "list<element: string>"  # as the stream's schema says
    path = out / data
    table = (
        pa.Table.from_pylist([json.loads(line) for line in path.read_text().splitlines()])
        if fmt == "json"
        else pq.read_table(path)
    )
    rows = sorted(
        table.select(["_stream", "id", "tags", "kind", "page"]).to_pylist(),
        key=lambda r: r["id"],
    )
    assert rows == [
        {
            "_stream": "nested",
            "id": "n1",
            "tags": ["a", "bcdefghijklmnop"],
            "kind": "x",
            "page": None,
        },
        {"_stream": "nested", "id": "n2", "tags": None, "kind": "y", "page": None},
        {"_stream": "web", "id": "w1", "tags": None, "kind": None, "page": "/"},
        {"_stream": "web", "id": "w2", "tags": None, "kind": None, "page": "=cmd"},
    ]


def test_a_stream_folder_whose_first_append_died_is_passed_over(
    store: Store, tmp_path: Path
) -> None:
    ghost = store.path / "streams" / "ghost"
    ghost.mkdir(parents=True)
    (ghost / "part-0.parquet").write_bytes(b"PAR1 never committed")
    record = run(store, job_text(str(tmp_path / "out")))
    assert record.streams == {"app": 1, "web": 2}
    assert run(store, job_text(str(tmp_path / "out2"), streams=["ghost"])).status == (
        "no new events"
    )
