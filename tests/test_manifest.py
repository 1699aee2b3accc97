"""The export manifest lists every file with its rows, bytes and SHA-256."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from engine.storage.folders import LocalFolder
from engine.writers.manifest import manifest, write_manifest
from engine.writers.sink import FileSink


def test_the_manifest_describes_the_files_as_written(tmp_path: Path) -> None:
    folder = LocalFolder(tmp_path)
    sink = FileSink(folder, lambda part: f"x-{part}.csv", max_file_size=100, header=b"id\n")
    for i in range(30):
        sink.write(b"%08d\n" % i, 1)
    files = sink.finish()
    schema = pa.schema([("id", pa.int64()), ("tags", pa.list_(pa.string()))])
    moment = datetime(2026, 11, 27, tzinfo=UTC)
    text = manifest(
        files,
        schema,
        run_id="r1",
        job="j",
        about={"audience": "vip"},
        started=moment,
        finished=moment,
    )
    write_manifest(folder, "x_manifest.json", text)
    document = json.loads((tmp_path / "x_manifest.json").read_text())
    assert document["rows"] == 30
    assert document["audience"] == "vip"
    assert document["schema"] == [
        {"name": "id", "type": "int64"},
        {"name": "tags", "type": "list<item: string>"},
    ]
    for listed in document["files"]:
        data = (tmp_path / listed["key"]).read_bytes()
        assert listed["bytes"] == len(data)
        assert listed["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(document["files"]) == len(files) > 1
