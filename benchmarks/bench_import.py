"""CSV and JSON import: lakeport against pyarrow + deltalake, from a local folder and from S3
(moto).

Generates an events CSV (user_id, email, event, url, ts, amount, campaign, country, user_agent,
session_id; about 230 bytes a row) and a second version with 5% of the rows changed and 5%
added, then measures in one run, each in a fresh process (imports included):

- lakeport `csv-import` of the file from a local folder, and from a moto S3 server (its own
  process on 127.0.0.1);
- the baseline on the same local file: `pyarrow.csv.read_csv` (every field as text) +
  `deltalake.write_deltalake` of the table;
- lakeport's diff import of the second version (after importing the first) against raw DuckDB
  anti-joins of the two files' rows: by a 64-bit hash, counting, and exact, writing the rows;
- lakeport's `json-import` of the same events as NDJSON, and of a nested variant, against
  `pyarrow.json.read_json` + `deltalake.write_deltalake` of the same file.

    python -m benchmarks.bench_import --rows 1000000 --rows 10000000 [--json-only]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from benchmarks.common import (
    DATA,
    Measured,
    measure,
    measured_on,
    median,
    write_section,
    written,
)

FIELDS = [
    "user_id",
    "email",
    "event",
    "url",
    "ts",
    "amount",
    "campaign",
    "country",
    "user_agent",
    "session_id",
]
CHUNK = 500_000

IMPORT = """
import sys
from engine.store import Store
from pipelines import jobs
store = Store(sys.argv[1])
if len(sys.argv) > 3:
    from engine.auth import AwsKeys
    from engine.secrets import Secret
    store.authorizations.add(AwsKeys(name="bench", access_key_id="AKIABENCH0000000",
        secret_key=Secret("bench"), region="us-east-1", endpoint_url=sys.argv[3]))
for text in sys.argv[2].split("\\n---\\n"):
    record = jobs.run(store, jobs.load(text, "bench"))
    assert record.status == "succeeded", record.error
print(record.rows_imported, record.rows_skipped)
"""

BASELINE = """
import sys, pyarrow as pa, pyarrow.csv as pacsv
from deltalake import write_deltalake
names = sys.argv[3].split(",")
table = pacsv.read_csv(sys.argv[1], convert_options=pacsv.ConvertOptions(
    column_types={n: pa.string() for n in names}))
write_deltalake(sys.argv[2], table, mode="append")
print(table.num_rows)
"""

EXACT_ANTI_JOIN = """
import sys, duckdb
cols = sys.argv[3]
con = duckdb.connect()
con.execute("SET temp_directory = '" + sys.argv[4] + "'")
con.execute("SET enable_progress_bar = false")
con.execute(f'''
    COPY (SELECT n.* FROM read_csv('{sys.argv[2]}', all_varchar = true) n
          ANTI JOIN read_csv('{sys.argv[1]}', all_varchar = true) o USING ({cols}))
    TO '{sys.argv[4]}/new-rows.parquet' (FORMAT parquet)
''')
print(con.execute(f"SELECT count(*) FROM '{sys.argv[4]}/new-rows.parquet'").fetchone()[0])
"""


ANTI_JOIN = """
import sys, duckdb
cols = sys.argv[3]
con = duckdb.connect()
con.execute("SET temp_directory = '" + sys.argv[4] + "'")
con.execute("SET enable_progress_bar = false")
rows = con.execute(f'''
    WITH new AS (SELECT hash({cols}) AS h FROM read_csv('{sys.argv[2]}', all_varchar = true)),
         old AS (SELECT hash({cols}) AS h FROM read_csv('{sys.argv[1]}', all_varchar = true))
    SELECT count(*) FROM new ANTI JOIN old USING (h)
''').fetchone()[0]
print(rows)
"""


def _text(values: pa.Array) -> pa.Array:
    return pc.cast(values, pa.string())


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _rows(start: int, count: int, changed: bool) -> pa.Table:
    ids = pa.array(range(start, start + count), pa.int64())
    users = _text(pc.divide(ids, 4))
    events = ["page_view", "add_to_cart", "purchase", "signup", "search"]
    event = pa.array([events[i % 5] for i in range(start, start + count)])
    if changed:  # every 20th row gets another event: 5% of the rows change
        twentieth = pc.equal(pc.subtract(ids, pc.multiply(pc.divide(ids, 20), 20)), 0)
        event = pc.if_else(twentieth, "refund", event)
    seconds = pc.add(pc.multiply(ids, 3), 1_793_500_000)
    return pa.table(
        {
            "user_id": _join("u", users),
            "email": _join("user", users, "@example.com"),
            "event": event,
            "url": _join(
                "https://shop.example.com/products/",
                _text(pc.bit_wise_and(ids, 4095)),
                "?utm_source=newsletter&utm_medium=email",
            ),
            "ts": _text(pc.cast(pc.multiply(seconds, 1_000_000), pa.timestamp("us", "UTC"))),
            "amount": _text(pc.divide(pc.cast(pc.bit_wise_and(ids, 65535), pa.float64()), 100.0)),
            "campaign": _join("campaign-2026-11-", _text(pc.bit_wise_and(ids, 63)), "-autumn-sale"),
            "country": pa.array([("GB", "US", "DE", "FR", "ES")[i % 5] for i in range(count)]),
            "user_agent": pa.repeat(
                pa.scalar("Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Firefox/140.0"), count
            ),
            "session_id": _join("s-", _text(pc.divide(ids, 7)), "-2026-11-01-a9f3c2e1"),
        }
    )


def generate(rows: int) -> tuple[Path, Path]:
    """Version 1, and version 2 with 5% of rows changed and 5% added."""
    first = DATA / f"events_{rows}_20261101.csv"
    second = DATA / f"events_{rows}_20261102.csv"
    if first.exists() and second.exists():
        return first, second
    DATA.mkdir(parents=True, exist_ok=True)
    for path, changed, total in ((first, False, rows), (second, True, rows + rows // 20)):
        with written(path) as part, pacsv.CSVWriter(part, _rows(0, 1, False).schema) as writer:
            for start in range(0, total, CHUNK):
                writer.write_table(
                    _rows(start, min(CHUNK, total - start), changed and start < rows)
                )
    return first, second


def job_toml(
    name: str,
    bucket: str,
    prefix: str,
    *,
    diff: bool = False,
    auth: str = "",
    kind: str = "csv-import",
) -> str:
    lines = [
        f'name = "{name}"',
        f'type = "{kind}"',
        f'bucket = "{bucket}"',
        f'prefix = "{prefix}"',
        'stream = "events"',
        'timestamp = "ts"',
    ]
    if diff:
        lines.append("diff = true")
    if auth:
        lines += [f'auth = "{auth}"', 'directory = "in"']
    return "\n".join(lines) + "\n"


JSON_BASELINE = """
import sys, pyarrow.json as pj
from deltalake import write_deltalake
table = pj.read_json(sys.argv[1])
write_deltalake(sys.argv[2], table, mode="append")
print(table.num_rows)
"""


def generate_json(rows: int) -> tuple[Path, Path]:
    """The events as NDJSON (`amount` a number), and a nested variant: a `user` object (id,
    email, address.country) and a `tags` array."""
    import polars as pl

    flat = DATA / f"json_events_{rows}_20261101.ndjson"
    nested = DATA / f"json_nested_{rows}_20261101.ndjson"
    if flat.exists() and nested.exists():
        return flat, nested
    DATA.mkdir(parents=True, exist_ok=True)
    with (
        written(flat) as flat_part,
        written(nested) as nested_part,
        flat_part.open("wb") as flat_out,
        nested_part.open("wb") as nested_out,
    ):
        for start in range(0, rows, CHUNK):
            frame = pl.from_arrow(_rows(start, min(CHUNK, rows - start), False))
            assert isinstance(frame, pl.DataFrame)
            frame = frame.with_columns(pl.col("amount").cast(pl.Float64))
            frame.write_ndjson(flat_out)
            frame.select(
                pl.struct(
                    id=pl.col("user_id"),
                    email=pl.col("email"),
                    address=pl.struct(country=pl.col("country")),
                ).alias("user"),
                "event",
                "url",
                "ts",
                "amount",
                "campaign",
                "user_agent",
                "session_id",
                pl.concat_list("event", "campaign").alias("tags"),
            ).write_ndjson(nested_out)
    return flat, nested


def measure_json(rows: int, moto: MotoServer, repeat: int) -> list[str]:
    """The JSON rows of the table for one size, each the median of `repeat` runs."""
    lines = []
    for label, path in zip(("flat", "nested"), generate_json(rows), strict=True):
        prefix = path.name.rsplit("_", 1)[0] + "_"
        bucket_name = f"bench-json-{label}-{rows}"
        moto.upload(bucket_name, path)
        runs: dict[str, list[Measured]] = {}
        for _ in range(repeat):
            with bucket_of(path) as (work, bucket):
                local = job_toml("l", str(bucket), prefix, kind="json-import")
                s3 = job_toml("s", bucket_name, prefix, auth="bench", kind="json-import")
                measured = {
                    "baseline": measure(JSON_BASELINE, str(path), str(work / "baseline")),
                    "local": measure(IMPORT, str(work / "local"), local),
                    "s3": measure(IMPORT, str(work / "s3"), s3, moto.endpoint),
                }
                for name, result in measured.items():
                    runs.setdefault(name, []).append(result)
        m = {name: median(results) for name, results in runs.items()}
        size = path.stat().st_size
        lines += [
            row(
                rows,
                f"{label}: pyarrow read_json + write_deltalake (baseline)",
                m["baseline"],
                size,
            ),
            row(rows, f"{label}: lakeport json-import, local folder", m["local"], size),
            row(rows, f"{label}: lakeport json-import, S3 (moto)", m["s3"], size),
        ]
    return lines


@contextlib.contextmanager
def bucket_of(path: Path) -> Iterator[tuple[Path, Path]]:
    """A work folder for one run, and a bucket folder in it that holds `path` (a hard link);
    both removed after."""
    work = Path(tempfile.mkdtemp(dir=DATA))
    try:
        bucket = work / "bucket"
        bucket.mkdir()
        os.link(path, bucket / path.name)
        yield work, bucket
    finally:
        shutil.rmtree(work, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class MotoServer:
    """moto in its own process, so it does not share a GIL with what is measured."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        server = Path(sys.executable).parent / "moto_server"
        self.process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("moto_server did not start")

    def upload(self, bucket: str, path: Path) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="AKIABENCH0000000",
            aws_secret_access_key="bench",
        )
        client.create_bucket(Bucket=bucket)
        client.upload_file(str(path), bucket, f"in/{path.name}")
        client.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def row(rows: int, what: str, m: Measured, size: int) -> str:
    return (
        f"| {rows:,} | {what} | {m.seconds:.2f} | {rows / m.seconds:,.0f} | "
        f"{size / 1e6 / m.seconds:,.0f} | {m.peak_rss_mib:,.0f} |"
    )


def measure_size(rows: int, moto: MotoServer, repeat: int) -> list[str]:
    """Every row of the table for one file size, each the median of `repeat` runs."""
    first, second = generate(rows)
    size, added = first.stat().st_size, second.stat().st_size
    prefix = f"events_{rows}_"
    cols = ", ".join(FIELDS)
    moto_bucket = f"bench-{rows}"
    moto.upload(moto_bucket, first)
    runs: dict[str, list[Measured]] = {}
    for _ in range(repeat):
        with bucket_of(first) as (work, bucket):
            measured = {
                "baseline": measure(BASELINE, str(first), str(work / "baseline"), ",".join(FIELDS)),
                "local": measure(IMPORT, str(work / "local"), job_toml("l", str(bucket), prefix)),
                "s3": measure(
                    IMPORT,
                    str(work / "s3"),
                    job_toml("s", moto_bucket, prefix, auth="bench"),
                    moto.endpoint,
                ),
            }
            diff_job = job_toml("diff", str(bucket), prefix, diff=True)
            measure(IMPORT, str(work / "diff"), diff_job)  # version 1: the snapshot
            os.link(second, bucket / second.name)
            measured["diff"] = measure(IMPORT, str(work / "diff"), diff_job)
            measured["hash"] = measure(ANTI_JOIN, str(first), str(second), cols, str(work))
            measured["exact"] = measure(EXACT_ANTI_JOIN, str(first), str(second), cols, str(work))
            for name, result in measured.items():
                runs.setdefault(name, []).append(result)
    m = {name: median(results) for name, results in runs.items()}
    versions = rows + rows // 20
    imported, unchanged = m["diff"].output.split()
    return [
        row(rows, "pyarrow read_csv + write_deltalake (baseline)", m["baseline"], size),
        row(rows, "lakeport csv-import, local folder", m["local"], size),
        row(rows, "lakeport csv-import, S3 (moto)", m["s3"], size),
        row(
            versions,
            f"lakeport diff import of version 2 ({imported} imported, {unchanged} unchanged)",
            m["diff"],
            added,
        ),
        row(
            versions,
            f"DuckDB 64-bit hash anti-join, count only ({m['hash'].output.strip()} new rows)",
            m["hash"],
            added,
        ),
        row(
            versions,
            f"DuckDB exact anti-join, rows to Parquet ({m['exact'].output.strip()} new rows)",
            m["exact"],
            added,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="rows (repeatable)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each size up to 2M rows (the median is kept)"
    )
    parser.add_argument(
        "--repeat-large",
        type=int,
        default=3,
        help="runs of each larger size: figures on this machine vary by up to 40%% from one run "
        "to the next, the baselines' most",
    )
    parser.add_argument("--json-only", action="store_true", help="only the JSON import runs")
    args = parser.parse_args()
    sizes = args.rows or [1_000_000]
    lines = [
        "",
        f"{measured_on()}. Each figure is the median of {args.repeat} runs up to 2M rows and of "
        f"{args.repeat_large} above, the runs of each kind taking turns; each run a fresh "
        "process (imports included); peak RSS is the highest of the runs. Every field is read "
        "as text; lakeport also parses `ts` into `_ts` and adds "
        "`_line`, `_source`, `_job`, `_ingested_at`. S3 is a moto server in its own process on "
        "127.0.0.1. The diff row imports version 2 (5% of rows changed, 5% added) after version "
        "1. Its baselines: DuckDB counting the new rows by a 64-bit hash of each row (fast, not "
        "collision-free), and DuckDB's exact anti-join on every column writing the new rows to "
        "Parquet (set semantics).",
        "",
        "| rows | run | seconds | rows/s | MB/s | peak RSS MiB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    json_lines = [
        "",
        f"{measured_on()}. Same runs as above, on the same events as NDJSON (`amount` a number), "
        "and on a nested variant (a `user` object with `address.country` inside, and a `tags` "
        "array). lakeport flattens the objects to dotted fields, keeps every number's exact "
        "text, and adds `_line`, `_source`, `_job`, `_ingested_at`; the baseline keeps "
        "pyarrow's types (numbers as doubles, `ts` as a timestamp, structs as structs).",
        "",
        "| rows | run | seconds | rows/s | MB/s | peak RSS MiB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    moto = MotoServer()
    try:
        for rows in sizes:
            repeat = args.repeat if rows <= 2_000_000 else args.repeat_large
            if not args.json_only:
                results = measure_size(rows, moto, repeat)
                for line in results:
                    print(line, flush=True)
                lines += results
            results = measure_json(rows, moto, repeat)
            for line in results:
                print(line, flush=True)
            json_lines += results
    finally:
        moto.stop()
    if not args.json_only:
        write_section("CSV import (`make bench-import`)", lines)
    write_section("JSON import (`make bench-import`)", json_lines)


if __name__ == "__main__":
    main()
