"""Printing results: rich tables for people, JSON for machines (`--output json`)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, ParamSpec, cast

import click

from engine.secrets import redact

Output = Literal["text", "json"]

OUTPUT_KEY = "lakeport.output"
"""Where the chosen --output is kept (click's context meta, which every context shares), so
that an error is printed the same way as the result would have been."""


def _remember(ctx: click.Context, param: click.Parameter, value: Output) -> Output:
    ctx.meta[OUTPUT_KEY] = value
    return value


OUTPUT_OPTION = click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    callback=_remember,
    help="Print a table (text) or one JSON document (json); errors too.",
)


@dataclass(frozen=True)
class Shown:
    """What a command prints: `document` under `--output json`, `text()` for people."""

    document: Any
    text: Callable[[], None]

    @classmethod
    def table(
        cls,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str],
        *,
        document: Any = None,
        **how: Any,
    ) -> Shown:
        """Rows as a table (`emit_table`'s options in `how`); as JSON, the rows themselves
        unless `document` says otherwise."""
        return cls(rows if document is None else document, lambda: emit_table(rows, columns, **how))

    @classmethod
    def frame(cls, frame: Any, chosen: str | None, *, title: str, empty: str) -> Shown:
        """A Polars frame's rows, its `--columns` chosen."""
        frame = frame.select(choose_columns(frame.columns, chosen))
        return cls.table(frame.to_dicts(), frame.columns, title=title, empty=empty)

    @classmethod
    def fields(cls, document: Mapping[str, Any]) -> Shown:
        """One object, a field a line."""
        rows = [{"field": k, "value": v} for k, v in document.items()]
        return cls(document, lambda: emit_table(rows, ["field", "value"]))

    def print(self, output: Output) -> None:
        if output == "json":
            emit_json(self.document)
        else:
            self.text()


P = ParamSpec("P")


def prints(command: Callable[P, Shown]) -> Callable[P, None]:
    """A command that returns what it shows: `--output` (added here) picks how it prints."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        output = cast(Output, kwargs.pop("output"))
        command(*args, **kwargs).print(output)

    return OUTPUT_OPTION(run)


def emit_error(error: BaseException, output: Output | None) -> None:
    """A user-facing error: one line on stderr; under `--output json` also a JSON document
    on stdout, for the program that reads it."""
    from engine.errors import TransientError

    message = redact(str(error))
    if output == "json":
        kind = type(error).__name__
        emit_json(
            {
                "error": {
                    "kind": kind,
                    "message": message,
                    "retry": isinstance(error, TransientError),
                }
            }
        )
    echo(f"lakeport: error: {message}", err=True)


_CONTROLS = [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]
_BIDI = [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_SHOWN = {c: f"\\x{c:02x}" for c in _CONTROLS} | {c: f"\\u{c:04x}" for c in _BIDI}
_JSON_SHOWN = {c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)} | {c: f"\\u{c:04x}" for c in _BIDI}


def shown(text: str) -> str:
    """`text` safe for a terminal: control characters (an ESC that would colour the screen,
    a carriage return that would overwrite the line) and bidirectional overrides escaped
    (`\\x1b`); line breaks and tabs kept."""
    return text.translate(_SHOWN)


def echo(text: str = "", *, err: bool = False) -> None:
    """Print a line for people: secrets masked, control characters escaped."""
    click.echo(shown(redact(text)), err=err)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def emit_json(document: Any) -> None:
    # json escapes C0 controls itself; C1 controls and bidirectional overrides are escaped
    # the JSON way too (`\\u009b`), which keeps the document's values as they are.
    text = json.dumps(document, default=_plain, ensure_ascii=False, indent=2)
    click.echo(redact(text).translate(_JSON_SHOWN))


COLUMNS_OPTION = click.option(
    "--columns",
    "-c",
    "chosen",
    metavar="A,B,C",
    help="Only these columns, in this order (names separated by commas).",
)

MIN_CELL = 8
"""Below this many characters a column, a table is shown one record at a time instead."""


def choose_columns(columns: Sequence[str], chosen: str | None) -> list[str]:
    """The columns named in `--columns` (all when None), or a usage error listing them."""
    if not chosen:
        return list(columns)
    names = [name.strip() for name in chosen.split(",") if name.strip()]
    unknown = [name for name in names if name not in columns]
    if unknown or not names:
        raise click.BadParameter(
            f"no column {', '.join(unknown) or '(none named)'}: the columns are "
            + ", ".join(columns),
            param_hint="--columns",
        )
    return names


def emit_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    title: str | None = None,
    empty: str = "nothing to show",
    right: Sequence[str] = (),
    wrap: Sequence[str] = (),
) -> None:
    """Rows as a table that fits the terminal: a cell too long for its column ends in …
    (the columns in `wrap` fold onto more lines instead); with more columns than the width
    holds at MIN_CELL characters each, one record at a time, a field a line."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if title:
        console.print(shown(title), highlight=False, markup=False, soft_wrap=True)
    if not rows:
        console.print(f"({empty})", highlight=False, markup=False)
        return
    cells = [[shown(redact(_cell(row.get(column)))) for column in columns] for row in rows]
    if len(columns) * (MIN_CELL + 2) > console.width:
        _emit_records(console, columns, cells)
        return
    natural = [
        max([len(shown(column)), *(_width(row[at]) for row in cells)])
        for at, column in enumerate(columns)
    ]
    widths = _fit(natural, console.width - 2 * (len(columns) - 1))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, width in zip(columns, widths, strict=True):
        folds = column in wrap
        table.add_column(
            Text(_cut(shown(column), width)),
            justify="right" if column in right else "left",
            overflow="fold" if folds else "ellipsis",
            no_wrap=not folds,
            width=width,
        )
    for row in cells:
        table.add_row(
            *(
                Text(cell if column in wrap else _cut(cell, width))  # Text: never markup
                for column, cell, width in zip(columns, row, widths, strict=True)
            )
        )
    console.print(table, highlight=False)


def _width(cell: str) -> int:
    return max((len(line) for line in cell.splitlines()), default=0)


def _fit(natural: list[int], room: int) -> list[int]:
    """Column widths within `room`: every column its natural width if they all fit; else
    the narrow ones theirs, and the rest an even share of what is left."""
    if sum(natural) <= room:
        return natural
    widths = list(natural)
    left, open_columns = room, sorted(range(len(natural)), key=lambda at: natural[at])
    while open_columns:
        share = max(left // len(open_columns), 1)
        at = open_columns[0]
        if natural[at] <= share:
            open_columns.pop(0)
            left -= natural[at]
            continue
        for at in open_columns:
            widths[at] = share
        break
    return widths


def _cut(text: str, width: int) -> str:
    """Each line of `text` at most `width` characters, a cut one ending in …."""
    return "\n".join(
        line if len(line) <= width else line[: max(width - 1, 0)] + "…"
        for line in text.splitlines() or [""]
    )


def _emit_records(console: Any, columns: Sequence[str], cells: list[list[str]]) -> None:
    """Each record as `field  value` lines, values cut to the width with …."""
    from rich.text import Text

    name_width = min(max(len(c) for c in columns), console.width // 3)
    room = max(console.width - name_width - 2, MIN_CELL)
    for at, row in enumerate(cells, start=1):
        console.print(Text(f"-- record {at} --", style="bold"))
        for column, cell in zip(columns, row, strict=True):
            name = shown(column)[:name_width].ljust(name_width)
            value = cell.replace("\n", " ")
            if len(value) > room:
                value = value[: room - 1] + "…"
            console.print(Text(f"{name}  {value}"), highlight=False, soft_wrap=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    return str(value)


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


@contextmanager
def activity(message: str) -> Iterator[None]:
    """A spinner on stderr while something runs, when stderr is a terminal; silent otherwise."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


@contextmanager
def bytes_progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar of bytes read on a terminal (stderr); None elsewhere."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        f"[bold]{label}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update
