"""The write side of storage: folders that exports write their files to.

`folder(url, auth)` gives the `Destination` of an s3://, file:// or memory:// URL (or a plain
local path). Every file a destination opens appears under its name only when it is complete:

- a local folder writes a hidden name beside the file, then renames it;
- memory (fsspec's in-process filesystem: exports inside a job that reads them back) does the
  same under memory://;
- an S3 prefix writes one multipart upload a file, completed at the end
  (engine.storage.upload.S3Folder).

Each tells `on_begin` what it begins (a temporary name, an upload's id) before it begins it, so
that a run that dies can be undone by the next (`undo`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from engine.auth import Authorization
from engine.errors import ConfigError
from engine.storage import check_inside
from engine.storage.locations import parse_url


class Target(Protocol):
    """One file being written: it exists under its name only after `complete`."""

    def write(self, data: bytes | memoryview) -> Any: ...

    def complete(self) -> None: ...

    def abort(self) -> None: ...


Begun = Callable[[dict[str, str]], None]
"""Told what a target has begun, before it begins it (a temporary file, an upload's id), so
that a run that dies can be undone by the next."""


class Destination(Protocol):
    """Where an export's files go."""

    def open(self, key: str, on_begin: Begun | None = None) -> Target: ...

    def promote(self, staged: str, key: str) -> None:
        """Put the complete file `staged` under `key` (replacing what is there)."""
        ...

    def read(self, key: str) -> bytes | None:
        """A (small) file's bytes; None: no such file."""
        ...

    def undo(self, begun: dict[str, str]) -> None:
        """Take back what a target began (as `on_begin` heard it) and did not complete."""
        ...

    def remove(self, key: str) -> None:
        """Remove a completed file (an export that fails takes back what it wrote)."""
        ...

    def size(self, key: str) -> int | None:
        """The size of a completed file as the destination reports it (None: no such file)."""
        ...

    def link(self, key: str, seconds: int) -> str:
        """Where a reader gets the file: a link valid for `seconds` (presigned, in S3)."""
        ...


def folder(url: str, auth: Authorization | None) -> Destination:
    """The destination at `url`: an S3 prefix (with `auth`), a local folder or memory."""
    location = parse_url(url)
    if location.scheme == "s3":
        if auth is None:
            raise ConfigError(f"{url} is in S3: exports there need an authorization (auth)")
        from engine.storage.upload import S3Folder

        return S3Folder(location.url, auth)
    if location.scheme == "memory":
        return MemoryFolder(location.key)
    return LocalFolder(Path(location.key))


def _hidden(name: str) -> str:
    """The name a file is written under until it is complete."""
    return f".{name}.part-{os.getpid()}"


class LocalFolder:
    """A local folder as a destination."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def open(self, key: str, on_begin: Begun | None = None) -> Target:
        target = self.folder / key
        # Before any folder is made: a directory that is a link to elsewhere is not followed.
        check_inside(str(self.folder), str(target), "the export file")
        return _LocalFile(target, on_begin)

    def remove(self, key: str) -> None:
        (self.folder / key).unlink(missing_ok=True)

    def promote(self, staged: str, key: str) -> None:
        (self.folder / staged).replace(self.folder / key)

    def read(self, key: str) -> bytes | None:
        path = self.folder / key
        return path.read_bytes() if path.is_file() else None

    def undo(self, begun: dict[str, str]) -> None:
        if "temp" in begun:
            Path(begun["temp"]).unlink(missing_ok=True)

    def size(self, key: str) -> int | None:
        path = self.folder / key
        return path.stat().st_size if path.is_file() else None

    def link(self, key: str, seconds: int) -> str:
        return (self.folder / key).resolve().as_uri()


class _LocalFile:
    def __init__(self, target: Path, on_begin: Begun | None = None) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self.target = target
        self.path = target.with_name(_hidden(target.name))
        if on_begin is not None:
            on_begin({"temp": str(self.path)})
        self.handle = self.path.open("wb")

    def write(self, data: bytes | memoryview) -> int:
        return self.handle.write(data)

    def complete(self) -> None:
        self.handle.close()
        self.path.replace(self.target)

    def abort(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


class MemoryFolder:
    """A folder of fsspec's in-process memory filesystem (memory://) as a destination: what
    a job embedded in a program exports, for the program to read back."""

    def __init__(self, root: str) -> None:
        import fsspec

        self.fs = fsspec.filesystem("memory")
        self.root = "/" + root.strip("/")

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def open(self, key: str, on_begin: Begun | None = None) -> Target:
        return _MemoryFile(self.fs, self.path(key), on_begin)

    def remove(self, key: str) -> None:
        if self.fs.isfile(self.path(key)):
            self.fs.rm_file(self.path(key))

    def promote(self, staged: str, key: str) -> None:
        self.fs.mv(self.path(staged), self.path(key))

    def read(self, key: str) -> bytes | None:
        path = self.path(key)
        return bytes(self.fs.cat_file(path)) if self.fs.isfile(path) else None

    def undo(self, begun: dict[str, str]) -> None:
        if "temp" in begun and self.fs.isfile(begun["temp"]):
            self.fs.rm_file(begun["temp"])

    def size(self, key: str) -> int | None:
        path = self.path(key)
        return int(self.fs.size(path)) if self.fs.isfile(path) else None

    def link(self, key: str, seconds: int) -> str:
        return f"memory://{self.path(key)}"


class _MemoryFile:
    def __init__(self, fs: Any, target: str, on_begin: Begun | None = None) -> None:
        folder, _, name = target.rpartition("/")
        self.fs = fs
        self.target = target
        self.path = f"{folder}/{_hidden(name)}"
        if on_begin is not None:
            on_begin({"temp": self.path})
        self.handle = fs.open(self.path, "wb")

    def write(self, data: bytes | memoryview) -> int:
        written: int = self.handle.write(data)
        return written

    def complete(self) -> None:
        self.handle.close()
        self.fs.mv(self.path, self.target)

    def abort(self) -> None:
        self.handle.close()
        if self.fs.isfile(self.path):
            self.fs.rm_file(self.path)
