"""Event exports: one stream of N events to a local folder and to S3 (moto), csv plain and
zstd, and parquet, beside DuckDB's COPY of the same columns from the stream's Parquet files.

N events of ten text fields (the import benchmark's shape) are appended to a stream (not
timed). Timed, each in a fresh process (imports included): the `event-export` job exporting
every event (`--restart`, so each run is a first run), and the baseline, DuckDB
`COPY (SELECT '<stream>' AS _stream, _ts, _source, _ingested_at, <fields sorted> FROM
read_parquet([...])) TO '...'` to a local file.

    python -m benchmarks.bench_events --rows 1000000 --rows 10000000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks.bench_export import Moto, row
from benchmarks.common import Measured, measure, measured_on, median, write_section

CHUNK = 500_000
FIELDS = [f"f{i}" for i in range(8)] + ["event", "user_id"]
LOAD = """
import sys
import numpy as np, pyarrow as pa
from engine import Store
from engine.store import Source
store, rows, chunk = Store(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(7)
words = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"])
def batches():
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        at = np.arange(start, start + n).astype(str)
        columns = {
            f"f{i}": pa.array(np.char.add(words[rng.integers(0, 8, n)], at)) for i in range(8)
        }
        columns["event"] = pa.array(words[rng.integers(0, 8, n)])
        columns["user_id"] = pa.array(np.char.add("u", at))
        yield pa.record_batch(columns)
store.append("events", batches(), source=Source("bench", "1"), job="bench")
"""
EXPORT = """
import sys
from engine import Store
from pipelines import jobs
store = Store(sys.argv[1])
record = jobs.run(store, jobs.load(sys.argv[2], "bench"), restart=True)
assert not record.failed, record.error
print(record.events, record.bytes)
"""
DUCKDB_COPY = """
import sys, os, duckdb
from deltalake import DeltaTable
files = DeltaTable(sys.argv[1] + "/streams/events").file_uris()
out, options = sys.argv[2] + "/baseline", sys.argv[3]
con = duckdb.connect()
con.execute("SET enable_progress_bar = false").fetchall()
listed = ", ".join(f"'{f}'" for f in files)
fields = ", ".join(sorted(sys.argv[4].split(",")))
query = (f"SELECT 'events' AS _stream, _ts, _source, _ingested_at, {fields} "
         f"FROM read_parquet([{listed}])")
con.execute(f"COPY ({query}) TO '{out}' ({options})").fetchall()
print(con.execute(f"SELECT count(*) FROM read_parquet([{listed}])").fetchall()[0][0],
      os.path.getsize(out))
"""
KINDS = {
    ("csv", "none"): "FORMAT csv",
    ("csv", "zstd"): "FORMAT csv, COMPRESSION zstd",
    ("parquet", "zstd"): "FORMAT parquet, COMPRESSION zstd",
}


def job(fmt: str, compress: str, where: str) -> str:
    bucket = 'bucket = "exports"\nauth = "moto"' if where == "s3" else f'bucket = "{where}"'
    return (
        f'name = "bench"\ntype = "event-export"\n{bucket}\nformat = "{fmt}"\n'
        f'compress = "{compress}"\nfilename = "events-{{TIMESTAMP}}"\ntimestamp_format = "unix"\n'
    )


def measure_size(rows: int, repeat: int, moto: Moto, s3_runs: int) -> Iterator[str]:
    work = Path(tempfile.mkdtemp(prefix="lakeport-bench-events-"))
    store = work / "store"
    runs: dict[tuple[str, ...], list[Measured]] = {}
    try:
        measure(LOAD, str(store), str(rows), str(CHUNK))
        moto.authorize(store)
        out = work / "out"
        for turn in range(repeat):
            for (fmt, compress), options in KINDS.items():
                for kind in ("baseline", "local"):
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    found = (
                        measure(DUCKDB_COPY, str(store), str(out), options, ",".join(FIELDS))
                        if kind == "baseline"
                        else measure(EXPORT, str(store), job(fmt, compress, str(out)))
                    )
                    runs.setdefault((kind, fmt, compress), []).append(found)
                if turn < s3_runs:
                    runs.setdefault(("s3", fmt, compress), []).append(
                        measure(EXPORT, str(store), job(fmt, compress, "s3"))
                    )
                    moto.empty()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for fmt, compress in KINDS:
        baseline = median(runs[("baseline", fmt, compress)])
        yield row(rows, f"baseline: DuckDB COPY {fmt} {compress}", baseline, None)
        for where, place in (("local", "local folder"), ("s3", "S3 (moto)")):
            if (where, fmt, compress) in runs:
                found = median(runs[(where, fmt, compress)])
                yield row(rows, f"lakeport {fmt}, {compress}, {place}", found, baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="events (repeatable)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (the median is kept)")
    parser.add_argument("--s3-runs", type=int, default=1, help="runs of each S3 export")
    args = parser.parse_args()
    lines = [
        "",
        f"{measured_on()}. Local runs and baselines: the median of {args.repeat} runs, taking "
        f"turns; S3 runs: the median of {min(args.s3_runs, args.repeat)}. Each run is a fresh "
        "process (imports included); peak RSS is the highest of the runs. One stream of ten "
        "text fields; the export writes `_stream`, `_ts`, `_source`, `_ingested_at` and the "
        "fields sorted, and the baseline selects the same columns from the stream's Parquet "
        "files (DuckDB writes times as `2026-11-01 09:00:00+00`, lakeport as ISO 8601 with "
        "`Z`, and quotes no text). vs baseline is the baseline's time over lakeport's (above 1 "
        "is faster).",
        "",
        "| events | run | seconds | events/s | MB/s | MB | peak RSS MiB | vs baseline |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    moto = Moto()
    try:
        for rows in args.rows or [1_000_000]:
            for line in measure_size(rows, args.repeat, moto, args.s3_runs):
                print(line, flush=True)
                lines.append(line)
    finally:
        moto.stop()
    write_section("Event export (`make bench-export`)", lines)


if __name__ == "__main__":
    main()
