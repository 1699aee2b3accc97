"""Limits that protect the machine, enforced while streaming: decompression bombs stop within
their limit with the memory of an ordinary import; limits that mean nothing are refused at load;
readers do not depend on how the bytes arrive."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import zstandard

from engine.readers.csv import CsvReader
from engine.readers.source import Limits, TextSource
from engine.store import Store
from pipelines import jobs
from pipelines.errors import SpecError

LAKEPORT = "import sys; from pipelines.cli import main; sys.argv[0] = 'lakeport'; main()"
ROW = b"x" * 1000 + b",y\n"
BLOCK = ROW * (64 << 10)
"""64 MiB of CSV rows, compressed once and repeated as gzip members or zstd frames."""


def bomb(path: Path, kind: str, copies: int) -> None:
    if kind == "gzip":
        packer = zlib.compressobj(1, zlib.DEFLATED, 31)
        member = packer.compress(BLOCK) + packer.flush()
    else:
        member = zstandard.ZstdCompressor(level=1).compress(BLOCK)
    with path.open("wb") as out:
        out.write(zlib.compress(b"a,b\n", wbits=31) if kind == "gzip" else _zstd(b"a,b\n"))
        for _ in range(copies):
            out.write(member)


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def peak_rss(store: Path, job: Path) -> tuple[int, str, int]:
    """Run the job in a new process: its exit code, its stderr and stdout, its peak RSS (bytes)."""
    with (store.parent / "out.txt").open("w+") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", LAKEPORT, "--store", str(store), "run", str(job)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return process.returncode, out.read(), usage.ru_maxrss * 1024


def job_file(tmp_path: Path, name: str, file: str, **extra: Any) -> Path:
    path = tmp_path / f"{name}.toml"
    lines = [
        f'name = "{name}"',
        'type = "csv-import"',
        f'bucket = "{tmp_path / "in"}"',
        f'file = "{file}"',
        'stream = "events"',
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("kind", "limits", "message"),
    [
        # 10 GiB out of a few MB. zstd packs these rows about 8,000 times: max_ratio stops it.
        ("zstd", {}, "decompresses more than 1000 times its compressed size"),
        # gzip packs them about 480 times, under the default max_ratio: with a lower one...
        ("gzip", {"max_ratio": 100}, "decompresses more than 100 times its compressed size"),
        # ...or with max_bytes.
        ("gzip", {"max_bytes": 300 << 20}, "decompresses to more than 314,572,800 bytes"),
    ],
    ids=["zstd-ratio", "gzip-ratio", "gzip-max-bytes"],
)
def test_a_decompression_bomb_stops_within_its_limit_in_ordinary_memory(
    kind: str, limits: dict[str, int], message: str, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    suffix = "gz" if kind == "gzip" else "zst"
    bomb(folder / f"bomb.csv.{suffix}", kind, copies=160)
    # The baseline, in the same run: an ordinary import of 64 MiB of the same rows.
    (folder / "plain.csv").write_bytes(b"a,b\n" + BLOCK)
    code, output, ordinary = peak_rss(tmp_path / "store", job_file(tmp_path, "plain", "plain.csv"))
    assert code == 0, output
    code, output, peak = peak_rss(
        tmp_path / "store", job_file(tmp_path, "bomb", f"bomb.csv.{suffix}", **limits)
    )
    assert code == 1, output
    assert message in output
    assert "Traceback" not in output
    print(f"{kind}: bomb peak {peak >> 20} MiB, ordinary import {ordinary >> 20} MiB")
    assert peak < ordinary * 1.5, f"bomb {peak / 2**20:.0f} MiB, ordinary {ordinary / 2**20:.0f}"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "0.0"])
@pytest.mark.parametrize("field", ["max_ratio", "max_bytes", "max_line_bytes", "max_field_bytes"])
def test_a_limit_that_means_nothing_is_refused_at_load(field: str, value: str) -> None:
    text = 'name = "j"\ntype = "csv-import"\nbucket = "./in"\nfile = "a.csv"\nstream = "s"\n'
    with pytest.raises(SpecError, match=field):
        jobs.load(text + f"{field} = {value}\n", "j.toml")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0, -3])
def test_limits_refuse_what_means_nothing_in_the_library_too(value: float) -> None:
    with pytest.raises(Exception, match="max_ratio must be a positive, finite number"):
        Limits(max_ratio=value)


class _Trickle(io.RawIOBase):
    """A file that hands out at most `step` bytes a read, as a network does."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__()
        self.data, self.step, self.at = data, step, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.step if size < 0 else min(size, self.step)
        chunk = self.data[self.at : self.at + size]
        self.at += len(chunk)
        return chunk


@pytest.mark.parametrize("step", [1448, 300, 7])
def test_csv_rows_longer_than_a_read_parse_the_same(step: int) -> None:
    rows = [f"u{i},{'v' * 3000},{i}" for i in range(200)]
    data = ("id,text,n\n" + "\n".join(rows)).encode()  # no final line break either
    reader = CsvReader(lambda: _Trickle(data, step), name="trickle.csv")  # type: ignore[arg-type, return-value]
    got = [batch.column("text").to_pylist() for batch in reader.batches()]
    assert sum(len(b) for b in got) == 200
    assert {len(text) for batch in got for text in batch} == {3000}


def test_text_source_reads_are_whole_however_the_bytes_come() -> None:
    data = bytes(range(1, 256)) * 40_000  # 10 MB, more than two chunks; no NUL byte
    source = TextSource(_Trickle(data, 1000), name="x.bin")  # type: ignore[arg-type]
    parts = [bytes(source.read(3 << 20)) for _ in range(4)]
    assert [len(p) for p in parts] == [3 << 20, 3 << 20, 3 << 20, len(data) - (9 << 20)]
    assert b"".join(parts) == data
    assert source.read(10) == b""


def test_a_record_within_max_line_bytes_is_read_however_long(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    big = "z" * (12 << 20)
    (folder / "long.csv").write_text(f"id,text\n1,{big}\n2,short\n")
    job = job_file(tmp_path, "long", "long.csv", max_line_bytes=64 << 20, max_field_bytes=16 << 20)
    record = jobs.run(Store(tmp_path / "store"), jobs.load(job.read_text(), str(job)))
    assert record.status == "succeeded", record.error
    assert record.rows_imported == 2


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_members_and_frames_larger_than_a_chunk_decompress_whole(kind: str) -> None:
    part = b"".join(b"%d,%s\n" % (i, b"w" * (i % 50)) for i in range(300_000))  # ~9 MB
    if kind == "gzip":
        packed = b"".join(zlib.compress(part, wbits=31) for _ in range(3))
    else:
        packed = b"".join(_zstd(part) for _ in range(3))
    source = TextSource(io.BytesIO(packed), name=f"x.csv.{kind}")
    assert source.read(-1) == part * 3
