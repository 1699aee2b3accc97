"""What every reader shares: the bad row it hands to the quarantine."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import BadInput, LakeportError

LINE = "_line"
"""The field every reader adds: the 1-based line of the object where the row starts."""


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be imported: where it is, why, and its text."""

    line: int
    reason: str
    text: str

    def error(self, name: str) -> BadInput:
        """The row as the error that fails an import of object `name`."""
        return BadInput(name, self.line, f"{self.reason}: {self.text[:200]!r}")


class ReadAgain(LakeportError):
    """A reader that streams found, part way through, fields it had not announced: nothing
    read may be committed, and the object must be read again by a reader that stages it."""
