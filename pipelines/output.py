"""Printing results: rich tables for people, JSON for machines (`--output json`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, Literal

import click

from engine.secrets import redact

Output = Literal["text", "json"]

OUTPUT_OPTION = click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Print a table (text) or one JSON document (json).",
)


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


def emit_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    title: str | None = None,
    empty: str = "nothing to show",
    right: Sequence[str] = (),
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(soft_wrap=True)
    if title:
        console.print(shown(title), highlight=False, markup=False)
    if not rows:
        console.print(f"({empty})", highlight=False, markup=False)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    for row in rows:
        # Text: a cell's brackets are never read as rich markup.
        table.add_row(*(Text(shown(redact(_cell(row.get(column))))) for column in columns))
    console.print(table, highlight=False)


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
