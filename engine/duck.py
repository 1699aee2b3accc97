"""DuckDB connections: the one place that opens them, with the store's spill folder and a
memory limit, so every query that outgrows memory spills instead of failing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class TableScan:
    """What DuckDB reads a table from: its Parquet files when they are local (DuckDB's own
    reader, several times faster than scanning Arrow), else a pyarrow dataset."""

    schema: pa.Schema
    dataset: Any
    files: tuple[str, ...] = ()


def attach(con: Any, name: str, table: TableScan) -> None:
    """Make `table` readable as `name` in the connection."""
    if table.files:
        listed = ", ".join(f"'{sql_text(f)}'" for f in table.files)
        con.execute(
            f"CREATE TEMP VIEW {sql_name(name)} AS "
            f"SELECT * FROM read_parquet([{listed}], union_by_name = true)"
        ).fetchall()
    else:
        con.register(name, table.dataset)


def connect(
    spill: Path,
    memory_limit: str = "256MB",
    threads: int | None = None,
    *,
    ordered: bool = False,
    views: bool = False,
) -> Any:
    """A new in-memory DuckDB connection, in UTC, spilling to `spill` past `memory_limit`.
    `ordered`: results keep the table's row order (an export's files, and what a user limit
    keeps, are then the same from run to run). `views`: Arrow results hold text as string
    views (Polars' own layout), not as plain strings."""
    import duckdb

    spill.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    settings = [
        "SET TimeZone = 'UTC'",
        f"SET temp_directory = '{sql_text(str(spill))}'",
        f"SET memory_limit = '{memory_limit}'",
        f"SET preserve_insertion_order = {'true' if ordered else 'false'}",
        "SET enable_progress_bar = false",
    ]
    if threads is not None:
        settings.append(f"SET threads = {int(threads)}")
    if views:
        settings += ["SET arrow_output_version = '1.4'", "SET produce_arrow_string_view = true"]
    for setting in settings:
        con.execute(setting).fetchall()
    return con


def connect_plain() -> Any:
    """A new in-memory connection for small work (parsing, binding): no spill folder."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'").fetchall()
    return con


def sql_text(text: str) -> str:
    """`text` for a single-quoted SQL literal."""
    return text.replace("'", "''")


def sql_name(name: str) -> str:
    """`name` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
