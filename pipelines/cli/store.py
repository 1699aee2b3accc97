"""The store and bucket commands: `store init|vacuum|info`, `ls`, `streams`, `stream show`,
`demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipelines.cli.root import Context, cli
from pipelines.output import COLUMNS_OPTION, Shown, activity, echo, human_bytes, prints


@cli.group("store")
def store_group() -> None:
    """Create the store, or show where it keeps its state and tables."""


@store_group.command("init")
@click.option("--tables", metavar="URL", help="Keep the Delta tables in s3://BUCKET/PREFIX.")
@click.option("--auth", "auth_name", metavar="NAME", help="The authorization for --tables.")
@click.pass_obj
def store_init(obj: Context, tables: str | None, auth_name: str | None) -> None:
    """Create the store (state.db here; tables here or in S3) and say where it is."""
    from engine.store import Store

    store = Store(obj.store_path, tables=tables, tables_auth=auth_name)
    echo(f"store {store.path.resolve()}: tables in {store.tables.url}")


@store_group.command("vacuum")
@click.argument("streams", nargs=-1, metavar="[STREAM]...")
@prints
@click.pass_obj
def store_vacuum(obj: Context, streams: tuple[str, ...]) -> Shown:
    """Remove the data files of STREAMs (all when none) that no Delta commit references:
    what an append that died before its commit left. Appends under way are not touched."""
    store = obj.store()
    removed = {name: store.remove_unreferenced(name) for name in streams or store.stream_names()}

    def text() -> None:
        for name, urls in removed.items():
            for url in urls:
                echo(f"removed {url}")
            files = f"{len(urls)} unreferenced file{'' if len(urls) == 1 else 's'}"
            echo(f"stream '{name}': {files} removed")
        if not removed:
            echo("no streams")

    return Shown(removed, text)


@store_group.command("info")
@prints
@click.pass_obj
def store_info(obj: Context) -> Shown:
    """Show where the store keeps its state and tables, and what it holds."""
    store = obj.store()
    info = {
        "path": str(store.path.resolve()),
        "tables": store.tables.url,
        "tables_auth": store.state.get_setting("tables_auth"),
        "state_schema_version": store.state.schema_version(),
        "authorizations": len(store.state.list_authorizations()),
        "streams": len(store.streams()),
    }
    return Shown.fields(info)


# Buckets and folders


@cli.command("ls")
@click.argument("url", required=False)
@click.option("--auth", "auth_name", metavar="NAME", help="The authorization for s3:// URLs.")
@prints
@click.pass_obj
def ls(obj: Context, url: str | None, auth_name: str | None) -> Shown:
    """List buckets (no URL), or the directories and files under URL.

    URL is s3://BUCKET/PREFIX/, file:///PATH, a local path, or memory://PATH.
    """
    from engine import storage

    auth = obj.store().authorizations.get(auth_name) if auth_name else None
    if url is None:
        if auth is None:
            raise click.UsageError("listing buckets needs --auth NAME (or give a URL)")
        with activity("Listing buckets"):
            buckets = storage.list_buckets(auth)
        return Shown.table(
            [{"bucket": b.name, "created": b.created} for b in buckets],
            ["bucket", "created"],
            document=[{"name": b.name, "created": b.created} for b in buckets],
            empty="no buckets",
        )
    with activity(f"Listing {url}"):
        listing = storage.list_directory(url, auth)
    document = {
        "url": listing.url,
        "directories": listing.directories,
        "files": [
            {
                "url": f.url,
                "name": f.name,
                "size": f.size,
                "last_modified": f.last_modified,
                "etag": f.etag,
            }
            for f in listing.files
        ],
    }
    rows: list[dict[str, Any]] = [{"name": d, "size": "DIR"} for d in listing.directories]
    rows += [
        {
            "name": f.name,
            "size": human_bytes(f.size),
            "bytes": f.size,
            "modified": f.last_modified,
            "etag": f.etag,
        }
        for f in listing.files
    ]
    return Shown.table(
        rows,
        ["name", "size", "bytes", "modified", "etag"],
        document=document,
        title=listing.url,
        empty="empty",
        right=["size", "bytes"],
        wrap=["name"],
    )


# Streams


@cli.command("streams")
@prints
@click.pass_obj
def streams(obj: Context) -> Shown:
    """List the streams in the store, with row counts and fields."""
    with activity("Reading stream logs"):
        found = obj.store().streams()
    return Shown.table(
        [
            {
                "stream": s.name,
                "rows": f"{s.rows:,}",
                "version": s.version,
                "fields": ", ".join(s.fields),
            }
            for s in found
        ],
        ["stream", "rows", "version", "fields"],
        document=[
            {"name": s.name, "rows": s.rows, "version": s.version, "fields": s.fields}
            for s in found
        ],
        empty="no streams yet",
        right=["rows", "version"],
    )


@cli.group("stream")
def stream() -> None:
    """Look at one stream."""


@stream.command("show")
@click.argument("name")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--rejected", is_flag=True, help="Show the rows the imports rejected instead.")
@COLUMNS_OPTION
@prints
@click.pass_obj
def stream_show(obj: Context, name: str, limit: int, rejected: bool, chosen: str | None) -> Shown:
    """Show the first rows of the stream NAME."""
    with activity(f"Reading stream {name}"):
        store = obj.store()
        frame = (store.rejected(name) if rejected else store.stream(name)).head(limit).collect()
    title = f"stream {name}: first {frame.height} rows"
    return Shown.frame(frame, chosen, title=title, empty="the stream is empty")


@cli.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to put the demo store and bucket (default: a new temporary folder).",
)
def demo(folder: Path | None) -> None:
    """Run lakeport end to end on a local folder acting as the bucket."""
    from pipelines.demo import run_demo

    run_demo(folder)
