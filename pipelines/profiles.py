"""`lakeport profiles build` and `profiles load`: make the profiles table.

The steps: load and check the rules, pick the streams (those named in [sources], or all),
build in DuckDB and numpy (engine.profiles.build), and replace the profiles table in one
commit, the rules kept with it so later builds and exports know the identity fields.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.auth import Authorization
from engine.errors import ConfigError
from engine.profiles import config as profiles_config
from engine.profiles.build import BuildReport, StreamInput, build
from engine.profiles.config import ProfilesConfig
from engine.readers.tables import open_table
from engine.store import Store


@dataclass
class BuildResult:
    """What a build made, for the CLI and for scripts."""

    report: BuildReport
    seconds: float
    streams: list[str]


def build_profiles(
    store: Store, path: str | Path, *, memory_limit: str = "2GB", allow_empty: bool = False
) -> BuildResult:
    """Build the profiles from the rules in `path` and replace the store's profiles table.

    A build that would make no profile from events that exist (none has an identity value) is
    refused unless `allow_empty`: the profiles there are kept."""
    started = time.monotonic()
    config = profiles_config.load(path)
    if config.sources is not None:
        chosen = [(source.stream, source.rename) for source in config.sources]
    else:
        chosen = [(info.name, {}) for info in store.streams()]
    if not chosen:
        raise ConfigError(
            f"the store {store.tables.url} has no streams to build profiles from: import some first"
        )
    streams = [StreamInput(name, store.stream_scan(name), rename) for name, rename in chosen]
    rows, report, connection = build(
        streams,
        config,
        store.profiles_scan(),
        spill=store.path / "tmp" / "profiles",
        memory_limit=memory_limit,
    )
    try:
        if report.events and not report.identities and not allow_empty:
            raise ConfigError(
                f"the build would make 0 profiles from {report.events:,} events: none of them "
                f"has a value in by = {list(config.by)}; the profiles there are kept. Check "
                "`by` (and [sources] renames), or pass --allow-empty to replace them anyway"
            )
        report.profiles = store.replace_profiles(rows, config.to_json())
    finally:
        connection.close()
    return BuildResult(report, time.monotonic() - started, [name for name, _ in chosen])


def load_profiles(
    store: Store, url: str, by: list[str], *, auth: Authorization | None = None
) -> int:
    """Replace the profiles with ready-made ones from a Parquet or CSV file (local or S3),
    streamed batch by batch; the rows loaded.

    The identity fields `by` must be columns of the file. Each profile gets `_identities` from
    them, and a `_profile_id` (1, 2, ... in file order) unless the file has one.
    """
    config = ProfilesConfig(by=tuple(by), fields=())
    rows = open_table(url, auth)
    missing = [name for name in by if name not in rows.schema.names]
    if missing:
        rows.close()
        raise ConfigError(
            f"--by names {', '.join(missing)}, which {url} does not have; its columns are "
            f"{', '.join(rows.schema.names)}"
        )
    return store.replace_profiles(_with_profile_fields(rows, config.by), config.to_json())


def _with_profile_fields(rows: pa.RecordBatchReader, by: tuple[str, ...]) -> pa.RecordBatchReader:
    """Each batch with `_identities` (its non-empty `by` values, in `by` order) and, unless the
    rows have one, a `_profile_id` counting from 1."""
    has_id = "_profile_id" in rows.schema.names
    schema = rows.schema.append(pa.field("_identities", IDENTITIES))
    if not has_id:
        schema = schema.insert(0, pa.field("_profile_id", pa.int64()))

    def batches() -> Iterator[pa.RecordBatch]:
        start = 1
        for batch in rows:
            columns = [*batch.columns, _identities(batch, by)]
            if not has_id:
                ids = np.arange(start, start + batch.num_rows, dtype=np.int64)
                columns.insert(0, pa.array(ids))
            start += batch.num_rows
            yield pa.RecordBatch.from_arrays(columns, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


IDENTITIES = pa.list_(pa.struct([("field", pa.string()), ("value", pa.string())]))


def _identities(batch: pa.RecordBatch, by: tuple[str, ...]) -> pa.Array:
    """For each row, its identity values as `{field, value}` entries, built column-wise."""
    import pyarrow.compute as pc

    rows, fields = batch.num_rows, len(by)
    values = [pc.cast(batch.column(name), pa.string()) for name in by]
    present = [np.asarray(pc.fill_null(pc.not_equal(v, ""), False), dtype=bool) for v in values]
    # Row by row, then field by field: the index of entry (row, field) in the stacked columns.
    order = (np.arange(rows)[:, None] + np.arange(fields)[None, :] * rows).ravel()
    keep = np.stack(present, axis=1).ravel()
    chosen = order[keep]
    entries = pa.StructArray.from_arrays(
        [
            pc.take(pa.array(by, pa.string()), pa.array(chosen // max(rows, 1))),
            pc.take(pa.concat_arrays(values), pa.array(chosen)),
        ],
        names=["field", "value"],
    )
    offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(np.stack(present, axis=1).sum(axis=1), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), entries, type=IDENTITIES)
