"""`lakeport profiles build`: read the profiles file, build from the streams, replace the table.

The steps: load and check the rules, pick the streams (those named in [sources], or all),
build in DuckDB and numpy (engine.profiles.build), and replace the profiles table in one
commit, the rules kept with it so later builds and exports know the identity fields.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError
from engine.profiles import config as profiles_config
from engine.profiles.build import BuildReport, StreamInput, build
from engine.store import Store


@dataclass
class BuildResult:
    """What a build made, for the CLI and for scripts."""

    report: BuildReport
    seconds: float
    streams: list[str]


def build_profiles(store: Store, path: str | Path, *, memory_limit: str = "1GB") -> BuildResult:
    """Build the profiles from the rules in `path` and replace the store's profiles table."""
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
    streams = [StreamInput(name, store.stream_dataset(name), rename) for name, rename in chosen]
    rows, report, connection = build(
        streams,
        config,
        store.profiles_dataset(),
        spill=store.path / "tmp" / "profiles",
        memory_limit=memory_limit,
    )
    try:
        report.profiles = store.replace_profiles(rows, config.to_json())
    finally:
        connection.close()
    return BuildResult(report, time.monotonic() - started, [name for name, _ in chosen])
