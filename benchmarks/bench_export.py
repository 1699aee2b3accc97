"""Audience exports: every format, uncompressed and zstd, to a local folder and to S3 (moto).

N ready-made profiles (user_id, email, names, country, created_at, score, is_member, tags with
0-5 items, purchase_ids with 0-5, attributes with 0-4 entries) are loaded into a store and an
audience holds all of them (not timed). Timed, each in a fresh process (imports included):
the `audience-export` job in csv, multi-csv, json and parquet, with no compression and with
zstd, to a local folder and to the moto S3 server on 127.0.0.1; and the baselines, the same
content written with no lakeport in the way, from the profiles table's Parquet files to a local
file: Polars `list.join("&")` + `write_csv` of the whole frame (CSV), and DuckDB `COPY ... TO`
(CSV with zstd, JSON, Parquet).

    python -m benchmarks.bench_export --rows 1000000 --rows 10000000
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks.common import (
    DATA,
    Measured,
    measure,
    measured_on,
    median,
    write_parquet,
    write_section,
)

CHUNK = 1_000_000
LOAD = """
import sys
from engine import Store
from engine.audiences import Audiences
from pipelines.profiles import load_profiles
store = Store(sys.argv[1])
load_profiles(store, sys.argv[2], ["user_id"])
Audiences(store).create("everyone", "_profile_id IS NOT NULL")
"""
EXPORT = """
import sys
from engine import Store
from pipelines import jobs
store = Store(sys.argv[1])
record = jobs.run(store, jobs.load(sys.argv[2], "bench"))
assert not record.failed, record.error
print(record.users, record.bytes)
"""
FILES = """
from deltalake import DeltaTable
files = DeltaTable(sys.argv[1] + "/profiles").file_uris()
"""
POLARS_CSV = (
    "import sys, os, polars as pl"
    + FILES
    + """
frame = pl.read_parquet(files)
def text(name, kind):
    if isinstance(kind, pl.Datetime):
        return pl.col(name).dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")
    return pl.col(name)
columns = []
for name, kind in frame.schema.items():
    if isinstance(kind, pl.List):
        columns.append(pl.col(name).cast(pl.List(pl.String)).list.join("&"))
    elif isinstance(kind, pl.Map):
        pair = pl.element().struct.field("key") + "=" + pl.element().struct.field("value")
        columns.append(pl.col(name).map.entries().list.eval(pair).list.join("&").alias(name))
    else:
        columns.append(text(name, kind))
frame.select(columns).write_csv(sys.argv[2] + "/baseline.csv")
print(frame.height, os.path.getsize(sys.argv[2] + "/baseline.csv"))
"""
)
DUCKDB_COPY = (
    "import sys, os, duckdb"
    + FILES
    + """
out, options = sys.argv[2] + "/baseline", sys.argv[3]
con = duckdb.connect()
con.execute("SET enable_progress_bar = false").fetchall()
listed = ", ".join(f"'{f}'" for f in files)
con.execute(f"COPY (SELECT * FROM read_parquet([{listed}])) TO '{out}' ({options})").fetchall()
print(con.execute(f"SELECT count(*) FROM read_parquet([{listed}])").fetchall()[0][0],
      os.path.getsize(out))
"""
)
BASELINES = {
    ("csv", "none"): ("Polars list.join + write_csv", POLARS_CSV, ""),
    ("csv", "zstd"): ("DuckDB COPY csv zstd", DUCKDB_COPY, "FORMAT csv, COMPRESSION zstd"),
    ("json", "none"): ("DuckDB COPY json", DUCKDB_COPY, "FORMAT json"),
    ("json", "zstd"): ("DuckDB COPY json zstd", DUCKDB_COPY, "FORMAT json, COMPRESSION zstd"),
    ("parquet", "zstd"): ("DuckDB COPY parquet zstd", DUCKDB_COPY, "FORMAT parquet"),
}
FORMATS = ("csv", "multi-csv", "json", "parquet")
PLACES = {
    "local": "local folder",
    "local again": "local folder, over the same names",
    "s3": "S3 (moto)",
    "s3 again": "S3 (moto), over the same names",
}
"""Where each export goes. `over the same names`: the run right after, whose file names are
taken: it writes staged files and puts them in place once every file is complete (a rename in a
folder, a server-side copy in S3), so that a failed run leaves the previous export as it was."""


def generate_profiles(rows: int) -> Path:
    """Ready-made profiles, the issue's shape: tags 0-5, purchase_ids 0-5, attributes 0-4."""
    path = DATA / f"export_profiles_{rows}.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(7)
    names = np.array(["Ada", "Alan", "Grace", "Katherine", "Mary", "Linus", "Barbara", "Edsger"])
    tags = np.array(["vip", "new", "churn-risk", "newsletter", "beta", "mobile"])
    keys = np.array(["tier", "channel", "plan", "locale"])
    values = np.array(["gold", "silver", "web", "app", "pro", "free", "en-US", "fr-FR"])

    def listed(counts: np.ndarray, items: pa.Array) -> pa.ListArray:
        offsets = np.zeros(len(counts) + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), items)

    def tables() -> Iterator[pa.Table]:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            at = np.arange(start, start + n)
            tag_counts = rng.integers(0, 6, n)
            purchase_counts = rng.integers(0, 6, n)
            attribute_counts = rng.integers(0, 5, n)
            entries = int(attribute_counts.sum())
            offsets = np.zeros(n + 1, dtype=np.int32)
            np.cumsum(attribute_counts, out=offsets[1:])
            # Each profile's keys are distinct: the first k of the four, in order.
            key_index = np.arange(entries) - np.repeat(offsets[:-1], attribute_counts)
            table = pa.table(
                {
                    "user_id": pa.array(np.char.add("u", at.astype(str))),
                    "email": pa.array(
                        np.char.add(np.char.add("user", at.astype(str)), "@example.com"),
                        mask=at % 10 == 0,
                    ),
                    "first_name": pa.array(names[rng.integers(0, len(names), n)]),
                    "last_name": pa.array(names[rng.integers(0, len(names), n)]),
                    "country": pa.array(
                        np.array(["US", "GB", "FR", "DE", "ES"])[rng.integers(0, 5, n)]
                    ),
                    "created_at": pa.array(
                        rng.integers(1_600_000_000_000_000, 1_790_000_000_000_000, n),
                        pa.timestamp("us", tz="UTC"),
                    ),
                    "score": pa.array(rng.integers(0, 1000, n)),
                    "is_member": pa.array(rng.integers(0, 2, n).astype(bool)),
                    "tags": listed(
                        tag_counts, pa.array(tags[rng.integers(0, len(tags), tag_counts.sum())])
                    ),
                    "purchase_ids": listed(
                        purchase_counts,
                        pa.array(rng.integers(1, 10**9, purchase_counts.sum())),
                    ),
                    "attributes": pa.MapArray.from_arrays(
                        pa.array(offsets),
                        pa.array(keys[key_index]),
                        pa.array(values[rng.integers(0, len(values), entries)]),
                    ),
                }
            )
            yield table

    return write_parquet(path, tables())


class Moto:
    """The moto S3 server on 127.0.0.1 in a process of its own (it keeps objects in memory,
    which must not count in the runs' RSS), without authentication."""

    def __init__(self) -> None:
        import subprocess
        import sys
        import time
        import urllib.request

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        import boto3

        self.client: Any = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="AKIABENCH",
            aws_secret_access_key="bench-secret",
        )
        self.client.create_bucket(Bucket="exports")

    def authorize(self, store: Path) -> None:
        """Add the authorization `moto` for this server to the store (in a process of its
        own, as the runs are)."""
        measure(
            "import sys\nfrom engine import Store\nfrom engine.auth import AwsKeys\n"
            "from engine.secrets import Secret\n"
            "Store(sys.argv[1]).authorizations.add(AwsKeys(name='moto', "
            "access_key_id='AKIABENCH', secret_key=Secret('bench-secret'), "
            f"region='us-east-1', endpoint_url='{self.endpoint}'))",
            str(store),
        )

    def empty(self) -> None:
        """Delete every object (moto keeps them in memory)."""
        listed = self.client.list_objects_v2(Bucket="exports").get("Contents", [])
        for found in listed:
            self.client.delete_object(Bucket="exports", Key=found["Key"])

    def stop(self) -> None:
        self.server.terminate()
        self.server.wait()


def job(fmt: str, compress: str, where: str) -> str:
    bucket = 'bucket = "exports"\nauth = "moto"' if where == "s3" else f'bucket = "{where}"'
    return (
        f'name = "bench"\ntype = "audience-export"\naudience = "everyone"\n{bucket}\n'
        f'format = "{fmt}"\ncompress = "{compress}"\nfilename = "{{AUDIENCE}}-{{JOB}}"\n'
    )


def row(rows: int, what: str, m: Measured, baseline: Measured | None) -> str:
    """A table row: rows and bytes (the run's output), time, rates, peak RSS and the ratio."""
    users, size = (int(v) for v in m.output.split())
    ratio = f"{baseline.seconds / m.seconds:.2f}x" if baseline is not None else ""
    return (
        f"| {rows:,} | {what} | {m.seconds:.2f} | {users / m.seconds:,.0f} | "
        f"{size / m.seconds / 1e6:,.0f} | {size / 1e6:,.0f} | {m.peak_rss_mib:,.0f} | {ratio} |"
    )


def measure_size(rows: int, repeat: int, moto: Moto, s3_runs: int) -> list[str]:
    """The table's rows for one size: medians of `repeat` runs (the kinds taking turns)."""
    source = generate_profiles(rows)
    work = Path(tempfile.mkdtemp(prefix="lakeport-bench-export-"))
    store = work / "store"
    runs: dict[tuple[str, ...], list[Measured]] = {}
    try:
        measure(LOAD, str(store), str(source))
        moto.authorize(store)
        for turn in range(repeat):
            for fmt in FORMATS:
                for compress in ("none", "zstd"):
                    if fmt == "parquet" and compress == "none":
                        continue
                    out = work / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    if (fmt, compress) in BASELINES:
                        _, code, options = BASELINES[(fmt, compress)]
                        key = ("baseline", fmt, compress)
                        runs.setdefault(key, []).append(
                            measure(code, str(store), str(out), options)
                        )
                        shutil.rmtree(out)
                        out.mkdir()
                    spec = job(fmt, compress, str(out))
                    runs.setdefault(("local", fmt, compress), []).append(
                        measure(EXPORT, str(store), spec)
                    )
                    # The same names again: written staged, put in place once all are complete.
                    runs.setdefault(("local again", fmt, compress), []).append(
                        measure(EXPORT, str(store), spec)
                    )
                    shutil.rmtree(out)
                    if turn < s3_runs:
                        for where in ("s3", "s3 again"):
                            runs.setdefault((where, fmt, compress), []).append(
                                measure(EXPORT, str(store), job(fmt, compress, "s3"))
                            )
                        moto.empty()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = []
    for fmt in FORMATS:
        for compress in ("none", "zstd"):
            base_key = ("baseline", fmt if fmt != "multi-csv" else "csv", compress)
            baseline = median(runs[base_key]) if base_key in runs else None
            if ("baseline", fmt, compress) in runs:
                name = BASELINES[(fmt, compress)][0]
                lines.append(row(rows, f"baseline: {name}", median(runs[base_key]), None))
            for where in PLACES:
                key = (where, fmt, compress)
                if key in runs:
                    what = f"lakeport {fmt}, {compress}, {PLACES[where]}"
                    lines.append(row(rows, what, median(runs[key]), baseline))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="profiles (repeatable)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (the median is kept)")
    parser.add_argument(
        "--s3-runs", type=int, default=1, help="runs of each S3 export (moto is slow to repeat)"
    )
    args = parser.parse_args()
    lines = [
        "",
        f"{measured_on()}. Local runs and baselines: the median of {args.repeat} runs, the "
        f"kinds taking turns; S3 runs: the median of {min(args.s3_runs, args.repeat)}. Each "
        "run is a fresh process (imports included); peak RSS is the highest of the runs. The "
        "export writes every profile field (with `_profile_id` and `_identities`); the "
        "baselines read the same Parquet files and write the same fields. vs baseline is the "
        "baseline's time over lakeport's (above 1 is faster); multi-csv is set against the "
        "CSV baseline. `over the same names` is the run right after, when the names are taken: "
        "its files are staged, then put in place (a rename locally, a server-side copy in S3).",
        "",
        "| users | run | seconds | users/s | MB/s | MB | peak RSS MiB | vs baseline |",
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
    write_section("Audience export (`make bench-export`)", lines)


if __name__ == "__main__":
    main()
