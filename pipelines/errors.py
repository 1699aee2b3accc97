"""Errors raised by the jobs and the CLI."""

from __future__ import annotations

from engine.errors import ConfigError


class UsageError(ConfigError):
    """A command was called with options that do not fit together."""
