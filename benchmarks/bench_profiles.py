"""Profiles and audiences: a build from events with two identity fields, and memberships.

1. N events over N/5 users, appended to a stream (not timed). Users are `user_id`s; one user in
   five is also known by an email, and their events carry the id, the email (written in mixed
   case) or both, so the build must merge identities to find them. Timed, each in a fresh
   process: `profiles build` (latest country, summed amount, set of events, first and last
   seen), and the baseline, a DuckDB GROUP BY user_id with the same aggregations over the
   stream's Parquet files, written to Parquet.
2. N ready-made profiles (ids, names, country, created_at, score, is_member, tags,
   purchase_ids, attributes) as Parquet: `profiles load`, then 20 audiences, then the
   memberships of every profile (every audience each is in, one pass), all timed apart.

    python -m benchmarks.bench_profiles --rows 1000000 --rows 10000000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
RULES = """
by = ["user_id", "email"]
[normalize]
email = ["trim", "lower"]
[fields.country]
from = "country"
agg = "latest"
[fields.spent]
from = "amount"
agg = "sum"
type = "float"
[fields.events]
from = "event"
agg = "set"
"""
APPEND = """
import sys, pyarrow.parquet as pq, pyarrow as pa
from engine import Source, Store
source = pq.ParquetFile(sys.argv[2])
reader = pa.RecordBatchReader.from_batches(source.schema_arrow, source.iter_batches(65536))
Store(sys.argv[1]).append("events", reader, source=Source(sys.argv[2]), job="bench")
"""
BUILD = """
import sys
from engine import Store
from pipelines.profiles import build_profiles
result = build_profiles(Store(sys.argv[1]), sys.argv[2])
print(result.report.profiles, result.report.events)
"""
BASELINE = """
import sys, duckdb
con = duckdb.connect()
con.execute("SET temp_directory = '" + sys.argv[2] + "'").fetchall()
con.execute("SET enable_progress_bar = false").fetchall()
con.execute(f'''
    COPY (
        SELECT user_id, arg_max(country, _ts) AS country, sum(TRY_CAST(amount AS DOUBLE)) AS spent,
               list_sort(list(DISTINCT event)) AS events, min(_ts), max(_ts), count(*)
        FROM read_parquet('{sys.argv[1]}/*.parquet') GROUP BY user_id
    ) TO '{sys.argv[2]}/profiles.parquet' (FORMAT parquet)
''').fetchall()
print(con.execute(f"SELECT count(*) FROM '{sys.argv[2]}/profiles.parquet'").fetchall()[0][0])
"""
LOAD = """
import sys
from engine import Store
from pipelines.profiles import load_profiles
print(load_profiles(Store(sys.argv[1]), sys.argv[2], ["user_id", "email"]))
"""
AUDIENCES = [
    ("us", "country = 'US'"),
    ("gb", "country = 'GB'"),
    ("high-score", "score > 900"),
    ("low-score", "score < 100"),
    ("members", "is_member"),
    ("non-members", "NOT is_member"),
    ("vip", "list_contains(tags, 'vip')"),
    ("new-tag", "list_contains(tags, 'new')"),
    ("buyers", "len(purchase_ids) >= 3"),
    ("no-purchase", "len(purchase_ids) = 0"),
    ("recent", "created_at > TIMESTAMP '2026-06-01'"),
    ("old", "created_at < TIMESTAMP '2025-06-01'"),
    ("gold", "element_at(attributes, 'tier')[1] = 'gold'"),
    ("a-names", "first_name LIKE 'A%'"),
    ("example-mail", "email LIKE '%@example.com'"),
    ("us-members", "country = 'US' AND is_member"),
    ("vip-high", "list_contains(tags, 'vip') AND score > 500"),
    ("fr-or-de", "country IN ('FR', 'DE')"),
    ("mid", "score BETWEEN 400 AND 600"),
    ("no-email", "email IS NULL"),
]
MEMBERSHIPS = """
import sys, polars as pl
from engine import Store
from engine.audiences import Audiences
audiences = Audiences(Store(sys.argv[1]))
for name, condition in {audiences}:
    if name not in audiences.conditions():
        audiences.create(name, condition)
members = audiences.memberships()
in_any = members.filter(pl.col("audiences").list.len() > 0).select(pl.len()).collect()
print(in_any.item())
"""


def generate_events(rows: int) -> Path:
    path = DATA / f"profile_events_{rows}.parquet"
    if path.exists():
        return path
    users = max(rows // 5, 1)

    def tables() -> Iterator[pa.Table]:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            at = pa.array(range(start, start + n), pa.int64())
            user = pc.bit_wise_and(pc.multiply(at, 2_654_435_761), (1 << 62) - 1)
            user = pc.cast(pc.divide(user, 1 << 20), pa.int64())
            user = pc.subtract(user, pc.multiply(pc.divide(user, users), users))
            both = pc.equal(pc.subtract(user, pc.multiply(pc.divide(user, 5), 5)), 0)
            kind = pc.subtract(at, pc.multiply(pc.divide(at, 10), 10))  # 0-9, per event
            uid = pc.binary_join_element_wise("u", pc.cast(user, pa.string()), "")
            email = pc.binary_join_element_wise(
                pc.if_else(pc.less(kind, 5), " User", "user"),
                pc.cast(user, pa.string()),
                "@Example.com",
                "",
            )
            # Users known by both: the id (kinds 0-3), the email (4-6) or both (7-9).
            has_uid = pc.or_(pc.invert(both), pc.or_(pc.less(kind, 4), pc.greater(kind, 6)))
            has_email = pc.and_(both, pc.greater_equal(kind, 4))
            table = pa.table(
                {
                    "user_id": pc.if_else(has_uid, uid, pa.scalar(None, pa.string())),
                    "email": pc.if_else(has_email, email, pa.scalar(None, pa.string())),
                    "event": pc.take(
                        pa.array(["page_view", "add_to_cart", "purchase", "signup"]),
                        pc.subtract(kind, pc.multiply(pc.divide(kind, 4), 4)),
                    ),
                    "country": pc.take(
                        pa.array(["US", "GB", "FR", "DE", "ES"]),
                        pc.subtract(user, pc.multiply(pc.divide(user, 5), 5)),
                    ),
                    "amount": pc.cast(pc.divide(pc.cast(kind, pa.float64()), 4), pa.string()),
                    "_ts": pc.cast(
                        pc.add(pc.multiply(at, 1_000_000), 1_790_000_000_000_000),
                        pa.timestamp("us", tz="UTC"),
                    ),
                }
            )
            yield table

    return write_parquet(path, tables())


def generate_profiles(rows: int) -> Path:
    path = DATA / f"ready_profiles_{rows}.parquet"
    if path.exists():
        return path
    names = pa.array(["Ada", "Alan", "Grace", "Katherine", "Mary", "Linus", "Barbara", "Edsger"])

    def tables() -> Iterator[pa.Table]:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            at = pa.array(range(start, start + n), pa.int64())
            mixed = pc.bit_wise_and(pc.multiply(at, 2_654_435_761), (1 << 31) - 1)

            def pick(values: pa.Array, salt: int, mixed: pa.Array = mixed) -> pa.Array:
                index = pc.divide(pc.add(mixed, salt), 7)
                return pc.take(
                    values,
                    pc.subtract(index, pc.multiply(pc.divide(index, len(values)), len(values))),
                )

            score = pc.subtract(mixed, pc.multiply(pc.divide(mixed, 1000), 1000))
            purchases = pc.subtract(score, pc.multiply(pc.divide(score, 6), 6))
            offsets = pc.cumulative_sum(pc.cast(purchases, pa.int32()))
            offsets = pa.concat_arrays([pa.array([0], pa.int32()), offsets])
            total = offsets[-1].as_py()
            tag_count = pc.subtract(score, pc.multiply(pc.divide(score, 3), 3))
            tag_offsets = pa.concat_arrays(
                [pa.array([0], pa.int32()), pc.cumulative_sum(pc.cast(tag_count, pa.int32()))]
            )
            tag_total = tag_offsets[-1].as_py()
            tag_values = pc.take(
                pa.array(["vip", "new", "churn-risk", "newsletter"]),
                pa.array([i % 4 for i in range(tag_total)], pa.int64()),
            )
            tiers = pick(pa.array(["gold", "silver", "bronze"]), 3)
            pairs = np.column_stack([tiers.to_numpy(zero_copy_only=False), np.full(n, "web")])
            attributes = pa.MapArray.from_arrays(
                pa.array(range(0, 2 * n + 1, 2), pa.int32()),
                pa.array(["tier", "channel"] * n),
                pa.array(pairs.ravel()),
            )
            table = pa.table(
                {
                    "user_id": pc.binary_join_element_wise("u", pc.cast(at, pa.string()), ""),
                    "email": pc.if_else(
                        pc.equal(pc.subtract(at, pc.multiply(pc.divide(at, 10), 10)), 0),
                        pa.scalar(None, pa.string()),
                        pc.binary_join_element_wise(
                            "user", pc.cast(at, pa.string()), "@example.com", ""
                        ),
                    ),
                    "first_name": pick(names, 1),
                    "last_name": pick(names, 5),
                    "country": pick(pa.array(["US", "GB", "FR", "DE", "ES"]), 2),
                    "created_at": pc.cast(
                        pc.add(pc.multiply(mixed, 30_000_000), 1_700_000_000_000_000),
                        pa.timestamp("us", tz="UTC"),
                    ),
                    "score": score,
                    "is_member": pc.equal(
                        pc.subtract(score, pc.multiply(pc.divide(score, 2), 2)), 0
                    ),
                    "tags": pa.ListArray.from_arrays(tag_offsets, tag_values),
                    "purchase_ids": pa.ListArray.from_arrays(
                        offsets, pa.array(range(total), pa.int64())
                    ),
                    "attributes": attributes,
                }
            )
            yield table

    return write_parquet(path, tables())


def row(rows: int, what: str, m: Measured) -> str:
    return (
        f"| {rows:,} | {what} | {m.seconds:.2f} | {rows / m.seconds:,.0f} | {m.peak_rss_mib:,.0f} |"
    )


def measure_size(rows: int, repeat: int) -> list[str]:
    """The rows of the table for one size, each the median of `repeat` runs (taking turns)."""
    events = generate_events(rows)
    ready = generate_profiles(rows)
    work = Path(tempfile.mkdtemp(prefix="lakeport-bench-profiles-"))
    runs: dict[str, list[Measured]] = {}
    try:
        store = work / "store"
        measure(APPEND, str(store), str(events))
        rules = work / "profiles.toml"
        rules.write_text(RULES)
        for turn in range(repeat):
            shutil.rmtree(store / "profiles", ignore_errors=True)  # each build is a first one
            (work / "baseline").mkdir(exist_ok=True)
            loaded_store = work / f"loaded-{turn}"
            measured = {
                "baseline": measure(
                    BASELINE, str(store / "streams" / "events"), str(work / "baseline")
                ),
                "build": measure(BUILD, str(store), str(rules)),
                "load": measure(LOAD, str(loaded_store), str(ready)),
                "members": measure(MEMBERSHIPS.format(audiences=AUDIENCES), str(loaded_store)),
            }
            shutil.rmtree(loaded_store, ignore_errors=True)
            for name, result in measured.items():
                runs.setdefault(name, []).append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    baseline, built, loaded, members = (
        median(runs[name]) for name in ("baseline", "build", "load", "members")
    )
    profiles, _ = built.output.split()
    return [
        row(
            rows,
            f"DuckDB GROUP BY user_id, to Parquet (baseline; {baseline.output.strip()} groups)",
            baseline,
        ),
        row(rows, f"lakeport profiles build ({profiles} profiles from two identity fields)", built),
        row(rows, "lakeport profiles load (ready-made profiles, Parquet)", loaded),
        row(
            rows,
            f"memberships in 20 audiences, one pass ({members.output.strip()} profiles in any)",
            members,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, action="append", help="events and profiles (repeatable)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (the median is kept)")
    args = parser.parse_args()
    lines = [
        "",
        f"{measured_on()}. The median of {args.repeat} runs of each, the kinds taking turns, "
        "each a fresh process (imports included); peak RSS is the highest of the runs. The "
        "events carry a user_id, an email or both (one user in five has both, and the emails are "
        "written in mixed case), so the build merges identities; the baseline groups by "
        "user_id alone, with the same aggregations, and would split those users. The "
        "memberships run creates the 20 audiences (each condition checked) and lists every "
        "audience of every profile.",
        "",
        "| rows | run | seconds | rows/s | peak RSS MiB |",
        "|---:|---|---:|---:|---:|",
    ]
    for rows in args.rows or [1_000_000]:
        for line in measure_size(rows, args.repeat):
            print(line, flush=True)
            lines.append(line)
    write_section("Profiles and audiences (`make bench-profiles`)", lines)


if __name__ == "__main__":
    main()
