"""The profile commands: `profiles build` and `profiles show`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from pipelines.cli import Context, cli
from pipelines.output import OUTPUT_OPTION, Output, activity, emit_json, emit_table


@cli.group("profiles")
def profiles() -> None:
    """Build and look at user profiles."""


@profiles.command("build")
@click.argument("rules", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--memory-limit",
    default="1GB",
    show_default=True,
    help="DuckDB's memory limit; past it the build spills to the store's tmp/.",
)
@OUTPUT_OPTION
@click.pass_obj
def profiles_build(obj: Context, rules: Path, memory_limit: str, output: Output) -> None:
    """Rebuild the profiles table from the streams, by the rules in RULES (profiles.toml)."""
    from pipelines.profiles import build_profiles

    with activity("Building profiles"):
        result = build_profiles(obj.store(), rules, memory_limit=memory_limit)
    report = result.report
    if output == "json":
        emit_json(
            {**asdict(report), "seconds": round(result.seconds, 3), "streams": result.streams}
        )
        return
    rate = report.events / result.seconds if result.seconds else 0.0
    click.echo(
        f"built {report.profiles:,} profiles from {report.events:,} events "
        f"({', '.join(result.streams)}) and {report.identities:,} identity values "
        f"in {result.seconds:.1f} s ({rate:,.0f} events/s)"
    )
    if report.without_identity:
        click.echo(f"{report.without_identity:,} events had no identity value and were left out")
    for name, count in report.unconverted.items():
        click.echo(f"field {name}: {count:,} values did not convert to its type and were left out")


@profiles.command("show")
@click.option("--where", "where", metavar="EXPR", help="An SQL condition on profile fields.")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=20, show_default=True)
@OUTPUT_OPTION
@click.pass_obj
def profiles_show(obj: Context, where: str | None, limit: int, output: Output) -> None:
    """Show profiles (the first LIMIT, or those matching --where)."""
    import polars as pl

    with activity("Reading profiles"):
        frame = obj.store().profiles()
        if where:
            frame = frame.filter(pl.sql_expr(where))
        rows = frame.head(limit).collect()
    found = rows.to_dicts()
    if output == "json":
        emit_json(found)
        return
    emit_table(found, rows.columns, title=f"profiles: {len(found)} shown", empty="no profiles")
