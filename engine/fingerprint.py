"""Row fingerprints for the diff: 128 bits of XXH3 over a text that only one row can make.

A row's text is its non-empty fields as name/value pairs, in the order of the names: `P` then
`name NUL kind value` pairs joined by NUL, where kind is `s` for text and `l` for a list (its
items written as `length:item`). A null value, empty text or an empty list leaves its pair out,
so a field that one file has and another lacks (common in JSON), a new column left empty
(common in CSV) or a reordering of the columns changes no fingerprint. When no name or value
holds a NUL (every CSV row: its reader refuses NUL), that text splits back into the pairs one
way only. A row with a NUL somewhere is written
`L`, the length of each name and value, NUL, then the pairs: that splits back one way too, and
its first letter keeps it apart from the other kind. Different rows therefore hash different
texts, and XXH3-128 makes a collision between them a 2^-128 chance.

XXH3-128 is a specified algorithm (its output is the same in every implementation and version),
so a snapshot made today still compares tomorrow. It runs vectorized in Polars, several times
faster than MD5: the fingerprints are most of what a diff import costs beyond the import.
Checking for NULs reads each column's data buffer once (memchr); the lengths are only computed
for the batches that need them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

SCHEME = "xxh3-128-pairs-2"
"""The definition above, recorded with each snapshot: fingerprints made another way are never
compared with these."""
PAIRS_1 = "xxh3-128-pairs-1"
"""The scheme before: an empty value was a pair of its own (a new empty column changed every
row). A snapshot made so is compared once the old way, and replaced by one of SCHEME."""
SCHEMES = (PAIRS_1, SCHEME)

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
    if _is_list(values.type):
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


def _empty_as_null(values: pa.Array) -> pa.Array:
    """Empty text (an empty CSV field, an empty list written as text) as no value."""
    import pyarrow.compute as pc

    if len(values) == 0:
        return values
    empty = pc.equal(pc.binary_length(values), 0)
    if not pc.any(empty).as_py():
        return values
    return pc.if_else(empty, pa.scalar(None, values.type), values)


def _may_hold_nul(values: pa.Array) -> bool:
    data = values.buffers()[2]
    return data is not None and data.to_pybytes().find(b"\x00") >= 0


def fingerprints(
    batch: pa.RecordBatch, fields: Sequence[str], scheme: str = SCHEME
) -> pa.RecordBatch:
    """The fingerprint of each row of the batch over the fields (in any order), made by
    `scheme` (one of SCHEMES)."""
    import polars as pl
    import polars_hash as plh

    if scheme not in SCHEMES:
        raise ValueError(f"unknown fingerprint scheme {scheme!r}")
    names = sorted(fields)
    values = [as_text(batch.column(name)) for name in names]
    if scheme != PAIRS_1:
        values = [_empty_as_null(v) for v in values]
    kinds = ["l" if _is_list(batch.schema.field(name).type) else "s" for name in names]
    frame = pl.from_arrow(pa.record_batch(values, names=[f"c{i}" for i in range(len(values))]))
    assert isinstance(frame, pl.DataFrame)
    columns = [pl.col(f"c{i}") for i in range(len(values))]
    # A null value leaves its pair out (`ignore_nulls`): a field the file lacks is no change.
    pairs = [
        pl.lit(f"{name}\x00{kind}") + column
        for name, kind, column in zip(names, kinds, columns, strict=True)
    ]
    if any(v.null_count for v in values):
        text = pl.lit("P") + pl.concat_str(pairs, separator="\x00", ignore_nulls=True)
    else:  # the same text, in one pass: no pair is left out
        parts: list[pl.Expr] = []
        for at, (name, kind, column) in enumerate(zip(names, kinds, columns, strict=True)):
            parts += [pl.lit(("P" if at == 0 else "\x00") + f"{name}\x00{kind}"), column]
        text = pl.concat_str(parts)
    odd_names = any("\x00" in name for name in names)
    if odd_names or any(_may_hold_nul(v) for v in values):
        lengths = [
            pl.lit(f"{len(name.encode())},") + (column.str.len_bytes() + 1).cast(pl.String)
            for name, column in zip(names, columns, strict=True)
        ]
        spelled = (
            pl.lit("L")
            + pl.concat_str(lengths, separator=";", ignore_nulls=True)
            + pl.lit("\x00")
            + pl.concat_str(pairs, separator="\x00", ignore_nulls=True)
        )
        odd = pl.lit(odd_names) | pl.any_horizontal(
            [c.str.contains("\x00", literal=True).fill_null(False) for c in columns]
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


def _is_list(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind))
