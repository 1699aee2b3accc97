"""Audiences: SQL conditions on profile fields, checked when they are made, run in DuckDB.

An audience's expression is parsed by DuckDB itself (`json_serialize_sql`) and its syntax tree
walked: only column references to profile fields, constants, comparisons, AND/OR/NOT, IS NULL,
IN lists, BETWEEN, CASE, casts and the pure functions of `FUNCTIONS` may appear. A statement, a
subquery, a window, a lambda or any other function is refused. The expression is then bound
against the profiles' columns, so a type error shows at creation, not at the first export.

Results stream out of DuckDB as Arrow batches and reach Polars users as LazyFrames.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engine import duck
from engine.errors import ConfigError

if TYPE_CHECKING:
    import polars as pl

FUNCTIONS = frozenset(
    [
        "list_contains",
        "list_has",
        "list_has_any",
        "list_has_all",
        "array_contains",
        "array_has",
        "list_position",
        "len",
        "length",
        "array_length",
        "cardinality",
        "list_extract",
        "array_extract",
        "element_at",
        "map_contains_key",
        "map_extract",
        "lower",
        "upper",
        "lcase",
        "ucase",
        "trim",
        "ltrim",
        "rtrim",
        "starts_with",
        "ends_with",
        "prefix",
        "suffix",
        "contains",
        "strlen",
        "regexp_matches",
        "regexp_full_match",
        "concat",
        "substring",
        "substr",
        "left",
        "right",
        "split_part",
        "abs",
        "round",
        "trunc",
        "floor",
        "ceil",
        "greatest",
        "least",
        "coalesce",
        "ifnull",
        "nullif",
        "date_trunc",
        "date_part",
        "datepart",
        "year",
        "month",
        "day",
        "hour",
        "minute",
        "epoch",
        "epoch_ms",
        "age",
        "date_diff",
        "datediff",
        "strftime",
        "strptime",
        "to_timestamp",
        "make_date",
        "current_date",
        "now",
        "current_timestamp",
        "today",
        # INTERVAL '30 days' is parsed as these
        "to_years",
        "to_months",
        "to_weeks",
        "to_days",
        "to_hours",
        "to_minutes",
        "to_seconds",
        "to_milliseconds",
        "to_microseconds",
    ]
)
"""The functions an audience may call: each pure (no I/O, nothing stored or changed)."""
_NODES = frozenset(
    (
        "COLUMN_REF",
        "CONSTANT",
        "COMPARISON",
        "CONJUNCTION",
        "OPERATOR",
        "FUNCTION",
        "CAST",
        "CASE",
        "BETWEEN",
        "TYPE",
    )
)
_WHERE = "SELECT 1 FROM profiles WHERE ("
BATCH_ROWS = 16 * 1024
"""Rows a batch of members: DuckDB gathers each batch whole before handing it over."""


def check(expression: str, columns: Mapping[str, pa.DataType]) -> str:
    """The expression, if it is a pure condition on the profile fields `columns`; else a
    ConfigError that says what is wrong and how to fix it."""
    if not expression.strip():
        raise ConfigError(
            "the audience's condition is empty: give one, e.g. --where \"country = 'US'\""
        )
    for mark in ("--", "/*", "*/", ";"):
        if mark in expression:
            raise ConfigError(
                f"the condition {expression!r} holds {mark!r}: comments and statement ends "
                "are not part of a condition; remove them"
            )
    con = duck.connect_plain()
    try:
        tree = json.loads(
            con.execute("SELECT json_serialize_sql(?)", [f"{_WHERE}{expression})"]).fetchall()[0][0]
        )
        if tree.get("error"):
            raise ConfigError(
                f"the condition {expression!r} is not an SQL expression: "
                f"{tree.get('error_message', 'it does not parse')}"
            )
        statements = tree["statements"]
        node = statements[0]["node"] if len(statements) == 1 else {}
        if (
            node.get("type") != "SELECT_NODE"
            or node.get("modifiers")
            or node.get("group_expressions")
            or node.get("having") is not None
            or node.get("qualify") is not None
            or node.get("from_table", {}).get("table_name") != "profiles"
            or node.get("where_clause") is None
        ):
            raise ConfigError(
                f"the condition {expression!r} is not one expression: give a condition on "
                "profile fields, not a statement or a query"
            )
        _walk(node["where_clause"], expression, columns)
        _bind(con, expression, columns)
    finally:
        con.close()
    return expression


def _walk(node: Any, expression: str, columns: Mapping[str, pa.DataType]) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, expression, columns)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("class")
    if kind is not None:
        if kind not in _NODES:
            what = {"SUBQUERY": "a subquery", "WINDOW": "a window function", "LAMBDA": "a lambda"}
            raise ConfigError(
                f"the condition {expression!r} holds {what.get(kind, kind.lower())}: only "
                "comparisons, AND/OR/NOT, IS NULL, IN, BETWEEN, CASE, casts and pure functions "
                "of profile fields may be used"
            )
        if kind == "FUNCTION" and not node.get("is_operator"):
            name = str(node.get("function_name", "")).lower()
            if name not in FUNCTIONS or node.get("schema") or node.get("catalog"):
                raise ConfigError(
                    f"the condition {expression!r} calls {name}(), which audiences may not use; "
                    f"the functions they may call are {', '.join(sorted(FUNCTIONS))}"
                )
        if kind == "COLUMN_REF":
            name = ".".join(node.get("column_names", []))
            if name not in columns:
                near = difflib.get_close_matches(name, list(columns), n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                raise ConfigError(
                    f"the condition {expression!r} names '{name}', which is not a profile "
                    f"field{hint}; the fields are {', '.join(columns)}"
                )
    for value in node.values():
        _walk(value, expression, columns)


def _bind(con: Any, expression: str, columns: Mapping[str, pa.DataType]) -> None:
    """Run the condition over a row of the profiles' shape, every field null: binder and
    type errors show now, also those DuckDB raises only when a row is evaluated (a string
    compared with a list casts it, and fails, per row)."""
    schema = pa.schema([pa.field(name, kind) for name, kind in columns.items()])
    row = pa.table([pa.nulls(1, f.type) for f in schema], schema=schema)
    con.register("profiles", row)
    try:
        con.execute(f"{_WHERE}{expression})").fetchall()
    except Exception as exc:  # DuckDB's binder and type errors
        message = str(exc).splitlines()[0]
        raise ConfigError(
            f"the condition {expression!r} cannot run on the profiles: {message}"
        ) from exc


def members(
    profiles: duck.TableScan,
    expression: str,
    *,
    spill: Path,
    columns: list[str] | None = None,
    limit: int | None = None,
) -> pa.RecordBatchReader:
    """The profiles that match, as a stream of record batches."""
    con = duck.connect(spill, ordered=True)
    duck.attach(con, "profiles", profiles)
    chosen = "*" if columns is None else ", ".join(duck.sql_name(c) for c in columns)
    query = f"SELECT {chosen} FROM profiles WHERE ({expression})"
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    return _closing(con.sql(query).to_arrow_reader(BATCH_ROWS), con)


def memberships(
    profiles: duck.TableScan,
    audiences: Mapping[str, str],
    *,
    spill: Path,
    columns: list[str] | None = None,
    where: str | None = None,
    limit: int | None = None,
    label: str = "audiences",
) -> pa.RecordBatchReader:
    """For each profile, the names of every audience it is in (a list named `label`, in name
    order), in one pass over the profiles however many audiences there are. `where` (a checked
    condition) and `limit` keep some of the profiles only: an export's audience and user limit.

    DuckDB gives each profile a bit mask, one bit an audience (in 63-bit words); the masks
    become lists of names in numpy, a batch at a time: building the lists in SQL cost more
    than the conditions.
    """
    con = duck.connect(spill, ordered=True)
    duck.attach(con, "profiles", profiles)
    chosen = ["_profile_id"] if columns is None else list(columns)
    names = sorted(audiences)
    words = []
    for start in range(0, len(names), _BITS):
        bits = " | ".join(
            f"(CASE WHEN ({audiences[name]}) THEN {1 << at} ELSE 0 END)"
            for at, name in enumerate(names[start : start + _BITS])
        )
        words.append(f"({bits})::BIGINT AS _mask_{start // _BITS}")
    selected = [duck.sql_name(c) for c in chosen] + words
    query = f"SELECT {', '.join(selected)} FROM profiles"
    if where is not None:
        query += f" WHERE ({where})"
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    reader = con.sql(query).to_arrow_reader(BATCH_ROWS)
    schema = pa.schema(
        [reader.schema.field(c) for c in chosen] + [pa.field(label, pa.list_(pa.string()))]
    )
    labels = pa.array(names, pa.string())

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            masks = [batch.column(f"_mask_{w}") for w in range(len(words))]
            listed = _names_of(masks, labels, batch.num_rows)
            yield pa.RecordBatch.from_arrays(
                [batch.column(c) for c in chosen] + [listed], schema=schema
            )

    return _closing(pa.RecordBatchReader.from_batches(schema, batches()), con)


_BITS = 63


def _names_of(masks: list[pa.Array], labels: pa.Array, rows: int) -> pa.Array:
    """The lists of audience names that the bit masks stand for."""
    import numpy as np

    if not masks:
        return pa.ListArray.from_arrays(
            pa.array(np.zeros(rows + 1, dtype=np.int32)), pa.array([], pa.string())
        )
    member = np.concatenate(
        [
            (mask.to_numpy()[:, None] >> np.arange(min(_BITS, len(labels) - w * _BITS))) & 1
            for w, mask in enumerate(masks)
        ],
        axis=1,
    ).astype(bool)
    offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(member.sum(axis=1), out=offsets[1:])
    audience = np.nonzero(member)[1]  # row by row, in name order
    return pa.ListArray.from_arrays(pa.array(offsets), labels.take(pa.array(audience)))


def sizes(profiles: duck.TableScan, audiences: Mapping[str, str], *, spill: Path) -> dict[str, int]:
    """How many profiles each audience holds, in one pass."""
    if not audiences:
        return {}
    con = duck.connect(spill)
    try:
        duck.attach(con, "profiles", profiles)
        names = sorted(audiences)
        counts = ", ".join(f"count(*) FILTER (WHERE ({audiences[n]}))" for n in names)
        row = con.execute(f"SELECT {counts} FROM profiles").fetchall()[0]
    finally:
        con.close()
    return {name: int(n) for name, n in zip(names, row, strict=True)}


def lazy(
    open_reader: Callable[[list[str] | None, int | None], pa.RecordBatchReader],
    schema: pa.Schema,
) -> pl.LazyFrame:
    """A Polars LazyFrame over a source of record batches: `open_reader(columns, limit)` runs
    when the frame is collected, with the columns Polars needs and its row limit."""
    import polars as pl
    from polars.io.plugins import register_io_source

    frame_schema = pl.DataFrame(schema.empty_table()).schema

    def source(
        columns: list[str] | None, predicate: pl.Expr | None, rows: int | None, _size: int | None
    ) -> Iterator[pl.DataFrame]:
        # A row limit is applied here only without a predicate: it counts matching rows.
        reader = open_reader(columns, rows if predicate is None else None)
        for batch in reader:
            frame = pl.DataFrame(batch)
            yield frame if predicate is None else frame.filter(predicate)

    return register_io_source(source, schema=frame_schema)


def _closing(reader: pa.RecordBatchReader, con: Any) -> pa.RecordBatchReader:
    """The reader, closing the connection once it is read to the end (or dropped)."""

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:
            con.close()

    return pa.RecordBatchReader.from_batches(reader.schema, batches())
