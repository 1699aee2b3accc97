"""Row fingerprints for the diff: 128 bits of XXH3 over a text that only one row can make.

The text of a row is its values joined by NUL. When no value is null or holds a NUL itself (all
of a CSV's rows: its reader refuses NUL), that join splits back into the values one way only.
A row that has a null or a NUL gets its join followed by one more NUL and each value's length
in bytes (-1 for null), which splits back one way too; it has more NULs than a plain join of
as many values, so the two kinds never meet. Different rows therefore hash different texts, and
XXH3-128 makes a collision between them a 2^-128 chance.

XXH3-128 is a specified algorithm (its output is the same in every implementation and version),
so a snapshot made today still compares tomorrow. It runs vectorized in Polars, several times
faster than MD5: the fingerprints are most of what a diff import costs beyond the import.
Checking for NULs reads each column's data buffer once (memchr); the lengths are only computed
for the rows that need them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

SCHEME = "xxh3-128-nul-1"
"""The definition above, recorded with each snapshot: fingerprints made another way are never
compared with these."""

FINGERPRINT_SCHEMA = pa.schema([("hi", pa.uint64()), ("lo", pa.uint64())])
"""The fingerprint as two 64-bit halves: Arrow has no 128-bit integer."""

_TEXT_TYPES = (pa.string(), pa.large_string())


def as_text(values: pa.Array) -> pa.Array:
    """A field's values as text. Times become their epoch microseconds, a form that does not
    depend on how any library prints a time."""
    if values.type in _TEXT_TYPES:
        return values
    if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
        values = values.cast(pa.int64())
    if pa.types.is_integer(values.type) or pa.types.is_boolean(values.type):
        return values.cast(pa.string())
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return _list_text(values)
    raise TypeError(f"fields of type {values.type} cannot be fingerprinted")


def _list_text(values: pa.Array) -> pa.Array:
    """Each list as its items, each item written as its length in bytes, ':' and itself, or
    '-' for a null item: text that splits back into the items one way only."""
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    items = as_text(values.flatten())
    spelled = pc.binary_join_element_wise(
        pc.cast(pc.binary_length(items), pa.string()), items, ":"
    ).fill_null("-")
    offsets = pc.subtract(values.offsets, values.offsets[0])  # a slice's start at 0
    lists = pa.ListArray.from_arrays(offsets, spelled, mask=values.is_null())
    return pc.binary_join(lists, "")


def _may_hold_nul(values: pa.Array) -> bool:
    data = values.buffers()[2]
    return data is not None and data.to_pybytes().find(b"\x00") >= 0


def fingerprints(batch: pa.RecordBatch, fields: Sequence[str]) -> pa.RecordBatch:
    """The fingerprint of each row of the batch over the fields (in this order)."""
    import polars as pl
    import polars_hash as plh

    if not fields:
        raise ValueError("a fingerprint needs at least one field")
    texts = [as_text(batch.column(name)) for name in fields]
    frame = pl.from_arrow(pa.record_batch(texts, names=[f"c{i}" for i in range(len(texts))]))
    assert isinstance(frame, pl.DataFrame)
    columns = [pl.col(f"c{i}") for i in range(len(texts))]
    text = pl.concat_str(columns, separator="\x00")
    if any(t.null_count or _may_hold_nul(t) for t in texts):
        odd = pl.any_horizontal(
            [c.is_null() | c.str.contains("\x00", literal=True) for c in columns]
        )
        lengths = [c.str.len_bytes().cast(pl.Int64).fill_null(-1).cast(pl.String) for c in columns]
        spelled = pl.concat_str(
            [
                pl.concat_str([c.fill_null("") for c in columns], separator="\x00"),
                pl.concat_str(lengths, separator=","),
            ],
            separator="\x00",
        )
        text = pl.when(odd).then(spelled).otherwise(text)
    digest = plh.col("text").nchash.xxh3_128()
    halves = frame.select(text.alias("text")).select(
        hi=(digest // pl.lit(1 << 64, dtype=pl.UInt128)).cast(pl.UInt64),
        lo=digest.cast(pl.UInt64, wrap_numerical=True),
    )
    return pa.RecordBatch.from_arrays(
        [halves["hi"].to_arrow(), halves["lo"].to_arrow()], schema=FINGERPRINT_SCHEMA
    )
