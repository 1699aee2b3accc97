"""Audience exports under faults and stops: a failed run leaves the previous export exactly as it
was (also with a fixed `filename`, whose keys the new run shares); a stopped run is finished or
taken back by the next run or `lakeport cleanup`; nothing is left that no manifest lists, and no
open multipart upload."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from engine.audiences import Audiences
from engine.crash import AT_ENV, CRASH_EXIT_CODE, WITH_ENV
from engine.profiles.config import ProfilesConfig
from engine.store import Store
from pipelines import jobs
from pipelines.runs import RunRecord
from tests.conftest import S3Server
from tests.faults import FaultProxy, Rule

LAKEPORT = "import sys; from pipelines.cli import main; sys.argv[0] = 'lakeport'; main()"
HOW = {"exit": CRASH_EXIT_CODE, "SIGINT": 130, "SIGTERM": 143}
USERS = 120_000
"""About 31 MB of CSV: two files of up to 20 MiB, each uploaded in 8 MiB parts."""


def profiles(store_path: Path, users: int, salt: str) -> Store:
    """`users` profiles whose text depends on `salt`: two exports of them differ byte for byte."""
    store = Store(store_path)
    names = [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() * 4 for i in range(users)]
    table = pa.table({"_profile_id": pa.array(range(users), pa.int64()), "name": names})
    config = ProfilesConfig(by=("name",), fields=()).to_json()
    store.replace_profiles(
        pa.RecordBatchReader.from_batches(table.schema, table.to_batches()), config
    )
    if "everyone" not in Audiences(store).conditions():
        Audiences(store).create("everyone", "_profile_id IS NOT NULL")
    return store


def job_text(bucket: str, auth: str | None, **extra: Any) -> str:
    values = {
        "name": "export",
        "type": "audience-export",
        "audience": "everyone",
        "bucket": bucket,
        "filename": "{AUDIENCE}",  # fixed: every run writes the same keys
        "max_file_size": "20MiB",  # two files, each a multipart upload
        **({"auth": auth} if auth else {}),
        **extra,
    }
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def run(store: Store, text: str) -> RunRecord:
    return jobs.run(store, jobs.load(text, "export.toml"))


class Folder:
    """What the export's destination holds, whatever it is."""

    def __init__(self, s3: S3Server | None, bucket: str) -> None:
        self.s3, self.bucket = s3, bucket

    def objects(self) -> dict[str, bytes]:
        if self.s3 is None:
            root = Path(self.bucket)
            return {
                str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()
            }
        client = self.s3.client()
        listed = client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return {
            o["Key"]: client.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
            for o in listed
        }

    def uploads(self) -> list[Any]:
        if self.s3 is None:
            return []
        found: list[Any] = (
            self.s3.client().list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        )
        return found

    def export(self) -> dict[str, bytes]:
        """The files the manifest lists, and the manifest; asserting nothing else is there."""
        objects = self.objects()
        (manifest_key,) = [k for k in objects if k.endswith("_manifest.json")]
        listed = json.loads(objects[manifest_key])["files"]
        keys = {f["key"] for f in listed}
        assert set(objects) == keys | {manifest_key}, "files no manifest lists are left"
        for f in listed:
            assert hashlib.sha256(objects[f["key"]]).hexdigest() == f["sha256"], f["key"]
        assert self.uploads() == [], "an open multipart upload is left"
        return objects


def data_files(objects: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in objects.items() if not k.endswith("_manifest.json")}


@pytest.fixture
def through_proxy(tmp_path: Path, s3: S3Server, proxy: FaultProxy) -> tuple[Store, Folder, str]:
    store = profiles(tmp_path / "store", USERS, "v1")
    store.authorizations.add(replace(s3.authorization("proxied"), endpoint_url=proxy.endpoint))
    bucket = s3.new_bucket()
    return store, Folder(s3, bucket), job_text(bucket, "proxied")


@pytest.mark.parametrize(
    ("name", "rules"),
    [
        pytest.param(
            "500 on every part",
            [Rule("part", "status", nth=None, arg=500)],
            marks=pytest.mark.slow,  # the client's backoff: 14 s; a lost part fails alike
        ),
        ("500 on every completion", [Rule("complete", "status", nth=None, arg=500)]),
        pytest.param(
            "503 on every PUT",
            [Rule("put", "status", nth=None, arg=503)],
            marks=pytest.mark.slow,  # SlowDown's backoff: 24 s
        ),
        ("every part's answer lost", [Rule("part", "lost", nth=None)]),
    ],
)
def test_a_failed_re_export_leaves_the_previous_one_as_it_was(
    name: str, rules: list[Rule], through_proxy: tuple[Store, Folder, str], proxy: FaultProxy
) -> None:
    store, folder, text = through_proxy
    assert not run(store, text).failed
    before = folder.export()
    profiles(store.path, USERS, "v2")  # the next export has other bytes, under the same keys
    proxy.add(*rules)
    record = run(store, text)
    assert record.failed, name
    assert "Traceback" not in (record.error or "")
    proxy.clear()
    assert folder.export() == before
    again = run(store, text)
    assert not again.failed, again.error
    assert data_files(folder.export()) != data_files(before)


@pytest.mark.parametrize(
    ("name", "rules"),
    [
        ("the completion's answer lost", [Rule("complete", "lost")]),
        ("a 500 on one part", [Rule("part", "status", arg=500)]),
        ("a 500 on the manifest PUT", [Rule("put", "status", arg=500)]),
    ],
)
def test_a_passing_fault_gives_the_export_of_a_clean_run(
    name: str, rules: list[Rule], through_proxy: tuple[Store, Folder, str], proxy: FaultProxy
) -> None:
    store, folder, text = through_proxy
    assert not run(store, text).failed
    clean = data_files(folder.export())
    proxy.add(*rules)
    record = run(store, text)
    assert [r for r in proxy.rules if r.fired], proxy.requests
    proxy.clear()
    assert not record.failed, record.error
    assert data_files(folder.export()) == clean


EXPORT_STAGES = [
    ("export-file", "before"),  # a data file complete, more to come
    ("export-before-commit", "before"),  # every file complete, nothing decided
    ("export-committing", "after"),  # decided, nothing put in place
    ("export-promoted", "after"),  # the new files in place, the manifest not written
    ("export-manifest", "after"),  # the manifest written, the old files not removed
]


def stops(backends: list[str]) -> list[tuple[str, str, str, str]]:
    return [
        (stage, side, how, backend)
        for backend in backends
        for stage, side in EXPORT_STAGES
        for how in HOW
    ]


def stop_then_settle(
    case: tuple[str, str, str, str], tmp_path: Path, s3: S3Server | None, by_cleanup: bool
) -> None:
    stage, side, how, backend = case
    store_path = tmp_path / "store"
    users = USERS if backend == "s3" else USERS // 6  # multipart uploads need the larger
    store = profiles(store_path, users, "v1")
    if backend == "s3":
        assert s3 is not None
        store.authorizations.add(s3.authorization())
        bucket = s3.new_bucket()
        folder, text = Folder(s3, bucket), job_text(bucket, "moto")
    else:
        out = tmp_path / "out"
        folder, text = Folder(None, str(out)), job_text(str(out), None)
    job_file = tmp_path / "export.toml"
    job_file.write_text(text)
    assert not run(store, text).failed
    before = folder.export()
    # What a clean run of the new profiles writes, to compare with.
    profiles(store_path, users, "v2")
    clean_path = tmp_path / "clean"
    assert not run(store, job_text(str(clean_path), None)).failed
    clean = data_files(Folder(None, str(clean_path)).export())

    stopped = subprocess.run(
        [sys.executable, "-c", LAKEPORT, "--store", str(store_path), "run", str(job_file)],
        capture_output=True,
        text=True,
        env={**os.environ, AT_ENV: stage, WITH_ENV: how},
        timeout=120,
    )
    assert stopped.returncode == HOW[how], stopped.stderr
    assert "Traceback" not in stopped.stderr
    if by_cleanup:
        done = subprocess.run(
            [sys.executable, "-c", LAKEPORT, "--store", str(store_path), "cleanup"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        settled = folder.export()
        if side == "before":
            assert settled == before  # the previous export, whole
        else:
            assert data_files(settled) == clean  # the decided export, finished
    # The next run finds nothing left over, and writes the same export as a clean run.
    assert not run(store, text).failed
    assert data_files(folder.export()) == clean


@pytest.mark.parametrize("case", stops(["local"]), ids="-".join)
def test_a_stopped_export_is_finished_or_taken_back_by_cleanup(
    case: tuple[str, str, str, str], tmp_path: Path
) -> None:
    stop_then_settle(case, tmp_path, None, by_cleanup=True)


@pytest.mark.parametrize(
    "case",
    [
        c
        if c[3] == "local" or c[0] in ("export-file", "export-committing")
        else pytest.param(c, marks=pytest.mark.slow)
        for c in stops(["local", "s3"])
        if c[2] == "exit"
    ],
    ids="-".join,
)
def test_a_killed_export_is_settled_by_the_next_run(
    case: tuple[str, str, str, str], tmp_path: Path, s3: S3Server
) -> None:
    stop_then_settle(case, tmp_path, s3 if case[3] == "s3" else None, by_cleanup=False)


@pytest.mark.slow
@pytest.mark.parametrize("case", stops(["s3"]), ids="-".join)
def test_a_stopped_export_to_s3_is_finished_or_taken_back_by_cleanup(
    case: tuple[str, str, str, str], tmp_path: Path, s3: S3Server
) -> None:
    stop_then_settle(case, tmp_path, s3, by_cleanup=True)
