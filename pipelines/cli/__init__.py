"""The `lakeport` command, a module for each group of commands (auth, store and bucket, jobs,
profiles and audiences, smtp, the scheduler), each registering on the one root group
(`root.cli`). Importing this package registers them all; none of them imports another.
"""

from __future__ import annotations

from pipelines.cli import auth, jobs, profiles, scheduler, smtp, store
from pipelines.cli.root import cli, main

__all__ = ["auth", "cli", "jobs", "main", "profiles", "scheduler", "smtp", "store"]
