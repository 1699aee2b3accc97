"""The profile commands: `profiles build|load|show` and `audience create|list|show|remove`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from pipelines.cli.root import Context, cli
from pipelines.output import COLUMNS_OPTION, Shown, activity, echo, emit_table, prints


@cli.group("profiles")
def profiles() -> None:
    """Build and look at user profiles."""


@profiles.command("build")
@click.argument("rules", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--memory-limit",
    default="2GB",
    show_default=True,
    help="DuckDB's memory limit; past it the build spills to the store's tmp/.",
)
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Replace the profiles even when the build makes none from the events there are.",
)
@prints
@click.pass_obj
def profiles_build(obj: Context, rules: Path, memory_limit: str, allow_empty: bool) -> Shown:
    """Rebuild the profiles table from the streams, by the rules in RULES (profiles.toml)."""
    from pipelines.profiles import build_profiles

    with activity("Building profiles"):
        result = build_profiles(
            obj.store(), rules, memory_limit=memory_limit, allow_empty=allow_empty
        )
    report = result.report
    document = {**asdict(report), "seconds": round(result.seconds, 3), "streams": result.streams}

    def text() -> None:
        rate = report.events / result.seconds if result.seconds else 0.0
        echo(
            f"built {report.profiles:,} profiles from {report.events:,} events "
            f"({', '.join(result.streams)}) and {report.identities:,} identity values "
            f"in {result.seconds:.1f} s ({rate:,.0f} events/s)"
        )
        if report.without_identity:
            echo(f"{report.without_identity:,} events had no identity value and were left out")
        for name, count in report.unconverted.items():
            echo(f"field {name}: {count:,} values did not convert to its type and were left out")

    return Shown(document, text)


@profiles.command("load")
@click.argument("url")
@click.option(
    "--by",
    required=True,
    metavar="FIELDS",
    help="The identity fields, comma-separated: user_id,email",
)
@click.option("--auth", "auth_name", metavar="NAME", help="The authorization for s3:// URLs.")
@click.pass_obj
def profiles_load(obj: Context, url: str, by: str, auth_name: str | None) -> None:
    """Replace the profiles with ready-made ones from a Parquet or CSV file (URL or path)."""
    from pipelines.profiles import load_profiles

    store = obj.store()
    auth = store.authorizations.get(auth_name) if auth_name else None
    fields = [name.strip() for name in by.split(",") if name.strip()]
    with activity(f"Loading profiles from {url}"):
        rows = load_profiles(store, url, fields, auth=auth)
    echo(f"loaded {rows:,} profiles from {url} (identity fields: {', '.join(fields)})")


@profiles.command("show")
@click.option("--where", "where", metavar="EXPR", help="An SQL condition on profile fields.")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=20, show_default=True)
@COLUMNS_OPTION
@prints
@click.pass_obj
def profiles_show(obj: Context, where: str | None, limit: int, chosen: str | None) -> Shown:
    """Show profiles (the first LIMIT, or those matching --where)."""
    import polars as pl

    with activity("Reading profiles"):
        if where:
            rows = pl.DataFrame(obj.audiences().matches(where, limit).read_all())
        else:
            rows = obj.store().profiles().head(limit).collect()
    return Shown.frame(rows, chosen, title=f"profiles: {rows.height} shown", empty="no profiles")


@cli.group("audience")
def audience() -> None:
    """Make and look at audiences: conditions on profile fields."""


@audience.command("create")
@click.argument("name")
@click.option("--where", "where", required=True, metavar="EXPR", help="An SQL condition.")
@click.pass_obj
def audience_create(obj: Context, name: str, where: str) -> None:
    """Create the audience NAME: the profiles for which EXPR holds."""
    audiences = obj.audiences()
    audiences.create(name, where)
    size = audiences.sizes()[name]
    echo(f"audience {name} created: {size:,} profiles")


@audience.command("list")
@prints
@click.pass_obj
def audience_list(obj: Context) -> Shown:
    """Every audience with its condition and size."""
    audiences = obj.audiences()
    conditions = audiences.conditions()
    with activity("Counting audiences"):
        broken = audiences.broken() if conditions else {}
        sizes = audiences.sizes() if len(conditions) > len(broken) else {}
    rows = [
        {
            "name": name,
            "profiles": sizes.get(name),
            "where": condition,
            **({"broken": broken[name]} if name in broken else {}),
        }
        for name, condition in conditions.items()
    ]

    def text() -> None:
        shown = [
            {**row, "profiles": "broken" if row["profiles"] is None else row["profiles"]}
            for row in rows
        ]
        columns = ["name", "profiles", "where"]
        emit_table(shown, columns, title="audiences", empty="no audiences yet")
        for name, reason in broken.items():
            echo(f"audience {name} is broken: {reason}", err=True)

    return Shown(rows, text)


@audience.command("show")
@click.argument("name")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=20, show_default=True)
@COLUMNS_OPTION
@prints
@click.pass_obj
def audience_show(obj: Context, name: str, limit: int, chosen: str | None) -> Shown:
    """Preview the first LIMIT profiles of the audience NAME."""
    with activity(f"Reading audience {name}"):
        frame = obj.audiences().members(name).head(limit).collect()
    title = f"audience {name}: {frame.height} shown"
    return Shown.frame(frame, chosen, title=title, empty="empty")


@audience.command("remove")
@click.argument("name")
@click.pass_obj
def audience_remove(obj: Context, name: str) -> None:
    """Remove the audience NAME."""
    obj.audiences().remove(name)
    echo(f"audience {name} removed")
