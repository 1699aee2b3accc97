"""Typed tables, for ready-made profiles (`lakeport profiles load`): a Parquet file, or a CSV
file whose column types are inferred, as a stream of record batches.

The bytes come through engine.storage (its errors name the object and the fix) and, for CSV,
through `TextSource` like every import's: decompressed by magic bytes within the limits,
checked as UTF-8, NUL bytes refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from engine import storage
from engine.auth import Authorization
from engine.errors import ConfigError
from engine.readers.source import Limits, TextSource

BATCH_ROWS = 64 * 1024
PARQUET = (".parquet", ".pq")
CSV = (".csv", ".csv.gz", ".csv.zst", ".tsv", ".tsv.gz", ".tsv.zst")


def open_table(
    url: str, auth: Authorization | None = None, *, limits: Limits | None = None
) -> pa.RecordBatchReader:
    """The file's rows, by its name: Parquet, or CSV (comma; tab for .tsv) with inferred types."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    name = storage.parse_url(url).key.lower()
    if name.endswith(PARQUET):
        handle = storage.open_random(url, auth)
        try:
            parquet = pq.ParquetFile(handle)
        except pa.ArrowInvalid as exc:
            handle.close()
            raise ConfigError(f"{url} is not a Parquet file: {exc}") from exc
        return pa.RecordBatchReader.from_batches(
            parquet.schema_arrow, parquet.iter_batches(batch_size=BATCH_ROWS)
        )
    if name.endswith(CSV):
        source = TextSource(
            storage.open_input(url, auth), name=url, limits=limits, validate_utf8=True
        )
        tab = name.removesuffix(".gz").removesuffix(".zst").endswith(".tsv")
        try:
            reader = pacsv.open_csv(
                source,
                read_options=pacsv.ReadOptions(block_size=source.limits.max_line_bytes),
                parse_options=pacsv.ParseOptions(delimiter="\t" if tab else ","),
                convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
            )
        except pa.ArrowInvalid as exc:
            source.close()
            raise ConfigError(f"{url} cannot be read as CSV: {exc}") from exc
        return pa.RecordBatchReader.from_batches(reader.schema, _rows(reader, url))
    raise ConfigError(
        f"{url}: profiles load from Parquet (.parquet) or CSV (.csv, .csv.gz, .csv.zst, .tsv); "
        "name the file by its format"
    )


def _rows(reader: pa.RecordBatchReader, url: str) -> Iterator[pa.RecordBatch]:
    """The batches; a later row that does not fit the types read from the first rows is an
    error that says so (CSV types are inferred from the start of the file)."""
    try:
        yield from reader
    except pa.ArrowInvalid as exc:
        raise ConfigError(
            f"{url} cannot be read as CSV further on: {exc}. Its column types are inferred "
            "from its first rows; convert it to Parquet to give them explicitly"
        ) from exc
