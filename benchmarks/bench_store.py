"""Store append: lakeport's exactly-once append against a bare `write_deltalake`, same data.

Generates N event rows (10 text fields) into a Parquet file under benchmarks/data/, then, each in
a fresh process, streams it in record batches into a new Delta table:

- baseline: `deltalake.write_deltalake(path, reader, mode="append")`
- lakeport: `Store(path).append("events", reader, source=..., job=...)` (adds `_ts`,
  `_ingested_at`, `_source`, `_job`, checks field types, commits with an application transaction)

Reports wall seconds, rows/s and peak RSS of each process, and writes a section of RESULTS.md.

    python -m benchmarks.bench_store --rows 1000000 --rows 5000000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.common import DATA, Measured, measure, measured_on, write_section

BATCH = 65_536

READ = """
import sys, pyarrow as pa, pyarrow.parquet as pq
source = pq.ParquetFile(sys.argv[1])
reader = pa.RecordBatchReader.from_batches(
    source.schema_arrow, source.iter_batches(batch_size={batch})
)
"""
RUN = {
    "baseline": READ
    + """
from deltalake import write_deltalake
write_deltalake(sys.argv[2], reader, mode="append")
""",
    "lakeport": READ
    + """
from engine import Source, Store
Store(sys.argv[2]).append("events", reader, source=Source(sys.argv[1], "bench"), job="bench")
""",
}


def _text(values: Any) -> Any:
    return pc.cast(values, pa.string())


def generate(rows: int) -> Path:
    """N events with 10 text fields, written once and reused."""
    path = DATA / f"events_{rows}.parquet"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    events = ["page_view", "click", "signup", "purchase", "logout"]
    countries = ["GB", "US", "DE", "FR", "JP", "BR"]
    schema = pa.schema(
        [
            (name, pa.string())
            for name in (
                "event_id",
                "user_id",
                "email",
                "event",
                "country",
                "amount",
                "currency",
                "page",
                "user_agent",
                "timestamp",
            )
        ]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, BATCH):
            n = min(BATCH, rows - start)
            ids = pa.array(range(start, start + n), pa.int64())
            users = pc.divide(ids, 5)
            writer.write_batch(
                pa.record_batch(
                    [
                        pc.binary_join_element_wise("e-", _text(ids), ""),
                        pc.binary_join_element_wise("u-", _text(users), ""),
                        pc.binary_join_element_wise("user", _text(users), "@example.com", ""),
                        pa.array([events[i % 5] for i in range(n)]),
                        pa.array([countries[i % 6] for i in range(n)]),
                        _text(pc.divide(pc.cast(pc.multiply(ids, 7), pa.float64()), 100.0)),
                        pa.array(["EUR"] * n),
                        pc.binary_join_element_wise(
                            "/products/", _text(pc.bit_wise_and(ids, 1023)), ""
                        ),
                        pa.array(
                            ["Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/140.0"] * n
                        ),
                        _text(
                            pc.cast(
                                pc.add(pc.multiply(ids, 1_000_000), 1_790_000_000_000_000),
                                pa.timestamp("us", "UTC"),
                            )
                        ),
                    ],
                    schema=schema,
                )
            )
    return path


def run_once(kind: str, data: Path, target: Path) -> Measured:
    return measure(RUN[kind].format(batch=BATCH), str(data), str(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="rows (repeatable)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the median is kept")
    args = parser.parse_args()
    sizes = args.rows or [1_000_000]
    lines = [
        "",
        f"{measured_on()}; median of {args.repeat} "
        "runs, each a fresh process (imports included); 10 text fields per row, read from "
        "Parquet in 64 Ki-row batches into a new local Delta table.",
        "",
        "| rows | run | seconds | rows/s | peak RSS MiB |",
        "|---:|---|---:|---:|---:|",
    ]
    for rows in sizes:
        data = generate(rows)
        for kind in ("baseline", "lakeport"):
            runs = []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory(dir=DATA) as scratch:
                    runs.append(run_once(kind, data, Path(scratch) / "table"))
            runs.sort(key=lambda m: m.seconds)
            mid = runs[len(runs) // 2]
            name = "write_deltalake (baseline)" if kind == "baseline" else "Store.append"
            line = (
                f"| {rows:,} | {name} | {mid.seconds:.2f} | {rows / mid.seconds:,.0f} | "
                f"{max(m.peak_rss_mib for m in runs):.0f} |"
            )
            print(line, flush=True)
            lines.append(line)
    write_section("Store append (`make bench-store`)", lines)


if __name__ == "__main__":
    main()
