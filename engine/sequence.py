"""Continuous imports: files named `<prefix><timestamp><rest>`, taken in timestamp order.

The timestamp right after the prefix may be, tried in this order:

- `YYYY-MM-DDTHH:MM:SS` (`_`, `-` or a space may stand for `T`; the time parts may be joined by
  `-`, `_` or nothing): `2026-11-01T09:30:00`, `2026-11-01_09-30-00`
- `YYYYMMDDHHMMSS`: `20261101093000`
- epoch milliseconds, 13 digits: `1793523600000`
- `YYYY-MM-DD`: `2026-11-01`
- epoch seconds, 10 digits: `1793523600`
- `YYYYMMDD`: `20261101`

Times in names are taken as UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.storage import FileInfo

FORMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"(\d{4})-(\d\d)-(\d\d)[T_ \-](\d\d)[:\-_]?(\d\d)[:\-_]?(\d\d)(?!\d)"),
        "datetime",
    ),
    (re.compile(r"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?!\d)"), "datetime"),
    (re.compile(r"(\d{13})(?!\d)"), "epoch_ms"),
    (re.compile(r"(\d{4})-(\d\d)-(\d\d)(?!\d)"), "date"),
    (re.compile(r"(\d{10})(?!\d)"), "epoch_s"),
    (re.compile(r"(\d{4})(\d\d)(\d\d)(?!\d)"), "date"),
)


@dataclass(frozen=True)
class Dated:
    """A file with the time its name carries."""

    file: FileInfo
    time: datetime

    @property
    def key(self) -> tuple[datetime, str]:
        return (self.time, self.file.name)


def name_time(name: str, prefix: str) -> datetime | None:
    """The timestamp after `prefix` (a regular expression) in a file name; None if none."""
    matched = re.match(prefix, name)
    if matched is None:
        return None
    rest = name[matched.end() :]
    for pattern, kind in FORMS:
        found = pattern.match(rest)
        if found is None:
            continue
        try:
            return _to_time(found.groups(), kind)
        except ValueError:
            continue
    return None


def _to_time(parts: tuple[str, ...], kind: str) -> datetime:
    if kind == "epoch_ms":
        return datetime.fromtimestamp(int(parts[0]) / 1000, UTC)
    if kind == "epoch_s":
        return datetime.fromtimestamp(int(parts[0]), UTC)
    year, month, day, hour, minute, second = ([int(p) for p in parts] + [0, 0, 0])[:6]
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def dated(files: Iterable[FileInfo], prefix: str) -> list[Dated]:
    """The files whose names match, oldest first (same time: by name)."""
    found = []
    for info in files:
        when = name_time(info.name, prefix)
        if when is not None:
            found.append(Dated(info, when))
    return sorted(found, key=lambda d: d.key)


def next_after(
    files: Iterable[FileInfo], prefix: str, last: tuple[datetime, str] | None
) -> Dated | None:
    """The oldest matching file newer than `last` (the time and name of the last import)."""
    for candidate in dated(files, prefix):
        if last is None or candidate.key > last:
            return candidate
    return None
