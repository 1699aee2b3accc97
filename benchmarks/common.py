"""What the benchmarks share: timing a child process, and writing their section of RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
DATA = HERE / "data"
RESULTS = HERE / "RESULTS.md"


@dataclass
class Measured:
    seconds: float
    peak_rss_mib: float
    output: str


LAUNCH = """
import os, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
seconds = time.perf_counter() - started
with open(sys.argv[1], "w") as told:
    told.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss} {seconds}")
"""
"""Runs a benchmark's process and tells its status, peak RSS and wall time (its own start-up
not counted). Linux counts in a process's
peak RSS the memory of the process it was started from (kept across fork and exec): started from
this small launcher, a run's peak is its own, not the benchmark's that made its data."""


def measure(code: str, *args: str) -> Measured:
    """Run `code` in a fresh interpreter: wall seconds (imports included) and its peak RSS
    (its own, and that of the processes it waited for, such as gpg)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as told:
        command = [sys.executable, "-c", LAUNCH, told.name, sys.executable, "-c", code, *args]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        output = child.stdout.read()
        child.wait()
        status, peak, seconds = (told.read() or "-1 0 0").split()
    if int(status) != 0:
        raise SystemExit(f"a benchmark run failed (status {status}): {output}")
    return Measured(float(seconds), int(peak) / 1024, output)


def write_parquet(path: Path, tables: Iterable[Any]) -> Path:
    """The tables (pyarrow, one schema) as one Parquet file, under a temporary name until it
    is complete: generated data is never found half-written."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as part:
        writer = None
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(part.name, table.schema)
            writer.write_table(table)
        assert writer is not None, "no tables to write"
        writer.close()
    Path(part.name).replace(path)
    return path


@contextmanager
def written(path: Path) -> Iterator[Path]:
    """A temporary name to write `path` under, renamed to `path` once the block ends without an
    error: generated data is never found half-written (an interrupted run leaves a `.part`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    yield part
    part.replace(path)


def median(runs: list[Measured]) -> Measured:
    """The run of median time, with the highest peak RSS of all the runs."""
    middle = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
    return Measured(middle.seconds, max(m.peak_rss_mib for m in runs), middle.output)


def write_section(title: str, lines: list[str]) -> None:
    """Replace (or add) the section `## {title}` of RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = "\n".join([f"## {title}", *lines]).rstrip("\n")
    pattern = re.compile(rf"## {re.escape(title)}.*?(?=\n## |\Z)", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text.rstrip("\n") + "\n")


def measured_on() -> str:
    """When and where: the first words of every results section."""
    return (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
