"""Multi-CSV: a batch of profiles as several tables that share a `join_key`.

- `users`: `join_key` and every scalar field;
- one table per list field: `join_key,value`, a row per item (an empty or null list has none);
- one table per map field: `join_key,key,value`, a row per entry.

`join_key` is a 64-bit hash of the user's identity (BY) fields, in decimal: the same user
has the same key in every table of an export. It may change between exports (it depends on the
hash's implementation), as the seed product documents. The tables are cut with Arrow's list
kernels over whole columns: no per-row work.
"""

from __future__ import annotations

from collections.abc import Collection

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine.writers.cells import rebased

JOIN_KEY = "join_key"
USERS = "users"


def tables(schema: pa.Schema, by: list[str], hidden: Collection[str] = ()) -> dict[str, pa.Schema]:
    """The tables a schema makes, with their columns: `users`, then each list and map field,
    in order."""
    empty = pa.RecordBatch.from_pylist([], schema)
    return {name: rows.schema for name, rows in explode(empty, by, hidden).items()}


def explode(
    batch: pa.RecordBatch, by: list[str], hidden: Collection[str] = ()
) -> dict[str, pa.RecordBatch]:
    """The batch's rows in each table. `hidden` fields are read for the key but not written
    (identity fields that were not chosen)."""
    missing = [name for name in by if name not in batch.schema.names]
    if missing:
        raise ValueError(f"the identity fields {missing} are not among the exported fields")
    keys = pl.DataFrame(batch.select(by)).select(pl.struct(by).hash(seed=0)).to_series()
    key = pc.cast(keys.to_arrow(), pa.string())
    users: dict[str, pa.Array] = {JOIN_KEY: key}
    out: dict[str, pa.RecordBatch] = {}
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if field.name in hidden:
            continue
        kind = field.type
        if pa.types.is_map(kind):
            listed = rebased(column)
            entries = pc.list_flatten(listed)
            owners = pc.take(key, pc.list_parent_indices(listed))
            names, values = entries.flatten()
            out[field.name] = pa.RecordBatch.from_arrays(
                [owners, names, values], names=[JOIN_KEY, "key", "value"]
            )
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            owners = pc.take(key, pc.list_parent_indices(column))
            out[field.name] = pa.RecordBatch.from_arrays(
                [owners, pc.list_flatten(column)], names=[JOIN_KEY, "value"]
            )
        else:
            users[field.name] = column
    return {USERS: pa.RecordBatch.from_pydict(users), **out}
