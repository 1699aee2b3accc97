"""The export sink: compressed files that gzip/zstd read, parts, hashes, nothing half-written."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from engine.errors import ConfigError
from engine.storage.folders import LocalFolder
from engine.writers.sink import FileSink


def _unzstd(data: bytes) -> bytes:
    out: bytes = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
    return out


def key_of(part: int | None) -> str:
    return "out/users.csv" if part is None else f"out/users-{part:04d}.csv"


def rows_csv(start: int, count: int) -> bytes:
    """Rows that do not compress to nothing: each holds a hash."""
    return b"".join(
        b"u%d,%s\n" % (i, hashlib.sha256(b"%d" % i).hexdigest()[:24].encode())
        for i in range(start, start + count)
    )


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_a_file_is_complete_readable_and_hashed(tmp_path: Path, codec: str) -> None:
    sink = FileSink(LocalFolder(tmp_path), key_of, compress=codec, header=b"id,text\n")
    for start in range(0, 3000, 1000):
        sink.write(rows_csv(start, 1000), 1000)
    (written,) = sink.finish()
    data = (tmp_path / written.key).read_bytes()
    assert written.bytes == len(data)
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert written.rows == 3000
    plain = {
        "none": lambda d: d,
        "gzip": gzip.decompress,
        "zstd": _unzstd,
    }[codec](data)
    assert plain == b"id,text\n" + rows_csv(0, 3000)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["users.csv"]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_the_command_line_tools_read_chunks_compressed_apart(tmp_path: Path, codec: str) -> None:
    if shutil.which(codec) is None:
        pytest.skip(f"no {codec} command")
    sink = FileSink(LocalFolder(tmp_path), key_of, compress=codec, header=b"id,text\n")
    for start in range(0, 30, 10):  # three members or frames after the header's
        sink.write(rows_csv(start, 10), 10)
    (written,) = sink.finish()
    out = subprocess.run(
        [codec, "-dc", str(tmp_path / written.key)], capture_output=True, check=True
    ).stdout
    assert out == b"id,text\n" + rows_csv(0, 30)


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_parts_stay_under_the_size_and_each_has_the_header(tmp_path: Path, codec: str) -> None:
    sink = FileSink(
        LocalFolder(tmp_path), key_of, compress=codec, max_file_size=20_000, header=b"id,text\n"
    )
    for start in range(0, 20_000, 500):
        sink.write(rows_csv(start, 500), 500)
    files = sink.finish()
    assert len(files) > 2
    assert [f.key for f in files][:2] == ["out/users-0001.csv", "out/users-0002.csv"]
    assert sum(f.rows for f in files) == 20_000
    # A part may pass the limit only by the estimate's error on its last chunk.
    assert all(f.bytes <= 20_000 * 1.5 for f in files)
    text = b""
    for f in files:
        data = (tmp_path / f.key).read_bytes()
        if codec == "zstd":
            data = _unzstd(data)
        assert data.startswith(b"id,text\n")
        text += data[len(b"id,text\n") :]
    assert text == rows_csv(0, 20_000)


def test_an_aborted_export_leaves_nothing(tmp_path: Path) -> None:
    sink = FileSink(LocalFolder(tmp_path), key_of, max_file_size=5_000)
    for start in range(0, 2_000, 100):
        sink.write(rows_csv(start, 100), 100)
    sink.abort()
    assert list((tmp_path / "out").iterdir()) == []


def test_an_empty_export_is_one_file_with_its_header(tmp_path: Path) -> None:
    (written,) = FileSink(LocalFolder(tmp_path), key_of, header=b"id,text\n").finish()
    assert (written.rows, (tmp_path / written.key).read_bytes()) == (0, b"id,text\n")


def test_an_unknown_codec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="one of none, gzip, zstd"):
        FileSink(LocalFolder(tmp_path), key_of, compress="brotli")


def test_parquet_parts_read_back_whole(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.writers.sink import ParquetSink

    table = pa.table(
        {
            "id": pa.array(range(50_000), pa.int64()),
            "tags": pa.array([[hashlib.sha256(b"%d" % i).hexdigest()] for i in range(50_000)]),
            "attributes": pa.array(
                [[("k", str(i))] for i in range(50_000)], pa.map_(pa.string(), pa.string())
            ),
        }
    )
    sink = ParquetSink(
        LocalFolder(tmp_path),
        lambda part: f"out/users-{part}.parquet",
        table.schema,
        max_file_size=400_000,
        row_group_rows=5_000,
    )
    sink.write_all(table.to_batches(max_chunksize=5_000))
    files = sink.finish()
    assert len(files) > 2
    assert sum(f.rows for f in files) == 50_000
    back = pa.concat_tables(pq.read_table(tmp_path / f.key) for f in files)
    assert back.cast(table.schema).equals(table)
    for f in files:
        data = (tmp_path / f.key).read_bytes()
        assert (f.bytes, f.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        Path(f.key).name for f in files
    )
