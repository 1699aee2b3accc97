"""Where data is: storage URLs parsed into locations, and what a listing finds there."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from engine.errors import ConfigError

Scheme = Literal["s3", "file", "memory"]


@dataclass(frozen=True)
class Location:
    """A parsed storage URL."""

    scheme: Scheme
    bucket: str
    """The S3 bucket; empty for local folders and memory."""
    key: str
    """The key inside the bucket, or the path for local folders and memory."""

    @property
    def url(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key}" if self.bucket else "s3://"
        if self.scheme == "memory":
            return f"memory://{self.key}"
        return self.key

    @property
    def fs_path(self) -> str:
        """The path the fsspec filesystem takes."""
        if self.scheme == "s3":
            return f"{self.bucket}/{self.key}".rstrip("/")
        return self.key

    def child(self, name: str) -> Location:
        base = self.key if not self.key or self.key.endswith("/") else self.key + "/"
        return Location(self.scheme, self.bucket, base + name)


def parse_url(url: str) -> Location:
    """Parse `s3://bucket/key`, `file:///path`, `memory://path` or a plain local path."""
    parsed = urlparse(url)
    if parsed.scheme in ("s3", "s3a"):
        if not parsed.netloc and parsed.path not in ("", "/"):
            raise ConfigError(f"'{url}' has no bucket: write s3://BUCKET/KEY")
        return Location("s3", parsed.netloc, parsed.path.lstrip("/"))
    if parsed.scheme == "memory":
        return Location("memory", "", "/" + (parsed.netloc + parsed.path).lstrip("/"))
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"'{url}' names a remote host: file:// URLs must be local")
        return Location("file", "", str(Path(parsed.path).resolve()))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive
        raise ConfigError(
            f"'{url}': lakeport reads s3://, file://, memory:// URLs and local paths, "
            f"not {parsed.scheme}://"
        )
    return Location("file", "", str(Path(url).expanduser().resolve()))


@dataclass(frozen=True)
class FileInfo:
    """An object in a bucket or a file in a folder."""

    url: str
    name: str
    """The last part of the key: what a file-name pattern is matched against."""
    size: int
    last_modified: datetime | None
    etag: str | None
    """S3's ETag; for local and memory files a version made of size and modification time."""


@dataclass(frozen=True)
class Listing:
    """What one level of a bucket or folder holds."""

    url: str
    directories: list[str]
    files: list[FileInfo]


@dataclass(frozen=True)
class BucketInfo:
    name: str
    created: datetime | None


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Reader(io.RawIOBase):
    """A raw, read-only stream whose subclasses give `read`; `readinto` is made of it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)
