"""Multi-CSV: a batch of profiles as several tables that share a `join_key`.

- `users`: `join_key` and every scalar field;
- one table per list field: `join_key,value`, a row per item (an empty or null list has none);
- one table per map field: `join_key,key,value`, a row per entry.

`join_key` is a 64-bit hash of the user's identity (BY) fields, in decimal: the same user
has the same key in every table of an export. It may change between exports (it depends on the
hash's implementation), as the seed product documents.
"""

from __future__ import annotations

from collections.abc import Collection

import polars as pl
import pyarrow as pa

JOIN_KEY = "join_key"
USERS = "users"


def tables(schema: pa.Schema, by: list[str], hidden: Collection[str] = ()) -> dict[str, pl.Schema]:
    """The tables a schema makes, with their columns: `users`, then each list and map field,
    in order."""
    empty = pa.RecordBatch.from_pylist([], schema)
    return {name: frame.schema for name, frame in explode(empty, by, hidden).items()}


def explode(
    batch: pa.RecordBatch, by: list[str], hidden: Collection[str] = ()
) -> dict[str, pl.DataFrame]:
    """The batch's rows in each table (vectorized: explode and unnest, no per-row Python).
    `hidden` fields are read for the key but not written (identity fields not chosen)."""
    frame = pl.DataFrame(batch)
    missing = [name for name in by if name not in frame.columns]
    if missing:
        raise ValueError(f"the identity fields {missing} are not among the exported fields")
    key = pl.struct(by).hash(seed=0).cast(pl.String).alias(JOIN_KEY)
    frame = frame.with_columns(key).drop(hidden)
    out: dict[str, pl.DataFrame] = {}
    scalars = [JOIN_KEY]
    for name, kind in frame.schema.items():
        if name == JOIN_KEY:
            continue
        if isinstance(kind, pl.List):
            out[name] = frame.select(JOIN_KEY, pl.col(name).alias("value")).explode(
                "value", empty_as_null=False, keep_nulls=False
            )
        elif isinstance(kind, pl.Map):
            out[name] = (
                frame.select(JOIN_KEY, pl.col(name).map.entries().alias("entry"))
                .explode("entry", empty_as_null=False, keep_nulls=False)
                .unnest("entry")
            )
        else:
            scalars.append(name)
    return {USERS: frame.select(scalars), **out}
