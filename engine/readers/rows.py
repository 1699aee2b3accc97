"""What every reader shares: the bad row it hands to the quarantine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be imported: where it is, why, and its text."""

    line: int
    reason: str
    text: str
