"""Errors raised by the jobs and the CLI."""

from __future__ import annotations

from engine.errors import ConfigError


class SpecError(ConfigError):
    """A job file that does not validate: names the file, the field and the fix."""

    def __init__(self, source: str, key: str | None, problem: str) -> None:
        where = f"{source}: field '{key}'" if key else source
        super().__init__(f"{where} {problem}")
