"""Where an export's files go: names from a template, their timestamp, part and extension.

The one place that decides object keys, apart from how files are written. A template holds
text and the placeholders {TIMESTAMP}, {AUDIENCE}, {JOB} and {PART}; the extension follows the
format, the compression and the encryption (`.csv.gz`, `.json.zst`, `.parquet`,
`.csv.zst.gpg`). No key may leave the export's
directory: `..` segments, a leading `/`, backslashes and control characters are refused, in the
template and in the values put into it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from engine import codecs
from engine.errors import ConfigError

PLACEHOLDERS = ("TIMESTAMP", "AUDIENCE", "JOB", "PART", "STREAM")
DEFAULT_TEMPLATE = "lakeport-{AUDIENCE}-{TIMESTAMP}"
DEFAULT_TIMESTAMP_FORMAT = "YYYYMMDDHHmmss"
EXTENSIONS = {"csv": ".csv", "multi-csv": ".csv", "json": ".json", "parquet": ".parquet"}
"""The extension of each format (multi-CSV writes several .csv files)."""
TOKENS = ("YYYY", "YY", "MM", "DD", "HH", "mm", "ss", "unix")
"""Timestamp tokens: year, two-digit year, month, day, hour, minute, second, epoch seconds."""
ENCRYPTED = ".gpg"
"""The extension of an encrypted file, after the others (compressed, then encrypted)."""
PART_DIGITS = 4
ALL_STREAMS = "all"
"""{STREAM} in the name of an export's manifest: it lists every stream's files."""
NAME_BYTES = 150
"""The longest file name an export writes (UTF-8 bytes). Local file systems allow 255 bytes a
name, and a file is written first under a longer one (`.NAME.part-PID`, or staged as
`.lakeport-staged-RUN-NAME` when the name is taken)."""
SEGMENT_BYTES = 255
"""The longest name of a directory in a path."""

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TOKEN = re.compile("|".join(TOKENS))
_BETWEEN_TOKENS = re.compile(r"^[-_.T]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_template(template: str, placeholders: tuple[str, ...] = PLACEHOLDERS) -> str:
    """A file name template made of text and `placeholders`, or a ConfigError that says what
    to change."""
    if not template.strip():
        raise ConfigError(f"the file name template is empty: the default is {DEFAULT_TEMPLATE}")
    for name in _PLACEHOLDER.findall(template):
        if name not in placeholders:
            raise ConfigError(
                f"the file name template {template!r} holds {{{name}}}: the placeholders are "
                + ", ".join(f"{{{p}}}" for p in placeholders)
            )
    if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
        raise ConfigError(
            f"the file name template {template!r} has an unmatched brace: write placeholders "
            "as {TIMESTAMP}"
        )
    _check_path(template, f"the file name template {template!r}")
    return template


def check_timestamp_format(text: str) -> str:
    """A timestamp format made of TOKENS, with `-`, `_`, `.` or `T` between them."""
    if not _TOKEN.search(text) or not _BETWEEN_TOKENS.match(_TOKEN.sub("", text)):
        raise ConfigError(
            f"the timestamp format {text!r} is not made of the tokens {', '.join(TOKENS)} "
            "(with -, _, . or T between them), e.g. YYYYMMDDHHmmss or YYYY-MM-DDTHH-mm-ss"
        )
    return text


def format_timestamp(moment: datetime, text: str) -> str:
    """`moment` (made UTC) written in the format `text`."""
    when = moment.astimezone(UTC)
    values = {
        "YYYY": f"{when.year:04d}",
        "YY": f"{when.year % 100:02d}",
        "MM": f"{when.month:02d}",
        "DD": f"{when.day:02d}",
        "HH": f"{when.hour:02d}",
        "mm": f"{when.minute:02d}",
        "ss": f"{when.second:02d}",
        "unix": str(int(when.timestamp())),
    }
    return _TOKEN.sub(lambda match: values[match.group(0)], text)


def check_directory(directory: str) -> str:
    """An export's directory in its bucket (empty for the top), or a ConfigError."""
    _check_path(directory.strip("/") or ".", f"the directory {directory!r}")
    for segment in directory.split("/"):
        if len(segment.encode()) > SEGMENT_BYTES:
            raise ConfigError(
                f"the directory has a name of {len(segment.encode())} bytes ({segment[:40]}…): "
                f"the longest a file system allows is {SEGMENT_BYTES}; shorten it"
            )
    return directory


def _check_path(text: str, what: str) -> None:
    if _CONTROL.search(text) or "\\" in text:
        raise ConfigError(f"{what} holds a control character or a backslash: remove it")
    if text.startswith("/") or ".." in text.split("/"):
        raise ConfigError(
            f"{what} would put files outside the export's directory: remove the "
            "leading / or the .. segment"
        )


@dataclass(frozen=True)
class FileNames:
    """The keys of one export run's files."""

    directory: str
    template: str
    timestamp: str
    """The run's start, already written in the job's timestamp format."""
    audience: str
    """The value of {AUDIENCE} (empty for an export of events)."""
    job: str
    format: str
    compress: str = "none"
    stream: str | None = None
    """The stream of a file set of its own (an event export split by stream): its data files
    have its name at {STREAM}, or after the name when the template has none; the manifest,
    of every set, has `all` at {STREAM}."""
    encrypted: bool = False
    """Data files are OpenPGP messages: `.gpg` after the other extensions."""

    def __post_init__(self) -> None:
        check_template(self.template)
        if self.format not in EXTENSIONS:
            raise ConfigError(f"format {self.format!r}: one of {', '.join(EXTENSIONS)}")
        codecs.check(self.compress)
        check_directory(self.directory)

    def stem(self, part: int | None = None) -> str:
        """The file name without its extension; with a part number when the export is split
        (added as `-0001` when the template has no {PART})."""
        number = "" if part is None else f"{part:0{PART_DIGITS}d}"
        values = {
            "TIMESTAMP": self.timestamp,
            "AUDIENCE": self.audience,
            "JOB": self.job,
            "PART": number,
            "STREAM": self.stream or ALL_STREAMS,
        }
        name = _PLACEHOLDER.sub(lambda match: values[match.group(1)], self.template)
        if self.stream is not None and "{STREAM}" not in self.template:
            name = f"{name}-{self.stream}"
        if part is not None and "{PART}" not in self.template:
            name = f"{name}-{number}"
        _check_path(name, f"the file name {name!r}")
        return name

    def data(self, part: int | None = None, table: str | None = None) -> str:
        """The key of a data file; for multi-CSV, `table` is `users` or a list or map field."""
        stem = self.stem(part)
        if table is not None:
            if self.format != "multi-csv":
                raise ValueError("only multi-CSV exports have several tables")
            _check_path(table, f"the field name {table!r}")
            stem = f"{stem}_{table}"
        suffix = EXTENSIONS[self.format] + (
            ""
            if self.format == "parquet"
            else codecs.SUFFIXES[self.compress]  # Parquet's is inside
        )
        return self._key(stem + suffix + (ENCRYPTED if self.encrypted else ""))

    def manifest(self) -> str:
        """The key of the manifest, written last."""
        return self._key(f"{self.stem()}_manifest.json")

    def _key(self, name: str) -> str:
        if len(name.encode()) > NAME_BYTES:
            raise ConfigError(
                f"the file name {name[:40]}… is {len(name.encode())} bytes long: lakeport "
                f"writes names of up to {NAME_BYTES} (a file is written under a longer "
                "temporary name first, and a file system allows 255): shorten `filename`"
            )
        directory = self.directory.strip("/")
        return f"{directory}/{name}" if directory else name
