"""What every reader shares: the bad row it hands to the quarantine."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import BadInput, LakeportError

LINE = "_line"
"""The field every reader adds: the 1-based line of the object where the row starts."""
RESERVED = ("_ts", LINE, "_ingested_at", "_source", "_job")
"""The names of the columns lakeport adds to every row (engine.store_rows): no field of a
file may take one, in any case (a stream's field names are case-insensitive)."""


def check_names(name: str, line: int | None, names: list[str], fix: str) -> None:
    """Refuse `names` (a file's fields, in order) that a stream cannot hold side by side:
    two that differ only in case, or one of lakeport's own column names. `fix` says how
    to rename a field in the job, or None."""
    reserved = {r.casefold(): r for r in RESERVED}
    seen: dict[str, str] = {}
    for field in names:
        control = next((c for c in field if ord(c) < 0x20 or ord(c) == 0x7F), None)
        if control is not None:
            raise BadInput(
                name,
                line,
                f"the field name {field!r} holds a control character ({control!r}), which a "
                f"stream's field names cannot hold: {fix}",
            )
        folded = field.casefold()
        if folded in reserved:
            raise BadInput(
                name,
                line,
                f"the field '{field}' has the name of a column lakeport adds to every row "
                f"({', '.join(RESERVED)}): {fix}",
            )
        if folded in seen:
            raise BadInput(
                name,
                line,
                f"the fields '{seen[folded]}' and '{field}' differ only in case, and a stream's "
                f"field names are case-insensitive: {fix}",
            )
        seen[folded] = field


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
