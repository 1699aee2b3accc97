"""Secrets: a value type that never prints itself, and the store that keeps them.

A stored secret is kept by reference in `state.db`: `env:NAME` (read from the environment when
used) or `store:ID` (kept in a 0600 JSON file in a 0700 folder). The secrets file is the only file
a secret value is ever written to; lakeport refuses to read it when group or others can.
"""

from __future__ import annotations

import json
import os
import re
import secrets as _random
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from engine.errors import SecretError

ENV_PREFIX = "env:"
STORE_PREFIX = "store:"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Every value revealed in this process, so log handlers can mask them (see `redact`). Values
# shorter than this are not masked: masking a one-letter "secret" would garble every message,
# and no real credential is that short.
_REDACT_MIN_LENGTH = 8
_revealed: set[str] = set()


class Secret:
    """A secret value whose repr and str never show it.

    The value is either held (a secret typed in, not yet stored) or loaded on use from its
    reference (`env:NAME`, `store:ID`).
    """

    __slots__ = ("_loader", "_value", "ref")

    def __init__(
        self,
        value: str | None = None,
        *,
        ref: str | None = None,
        loader: Callable[[], str] | None = None,
    ) -> None:
        if value is None and loader is None:
            raise ValueError("a Secret needs a value or a loader")
        self._value = value
        self._loader = loader
        self.ref = ref

    @classmethod
    def from_env(cls, name: str) -> Secret:
        """A secret read from the environment variable `name` each time it is used."""
        if not _ENV_NAME.match(name):
            raise SecretError(
                f"'{name}' is not an environment variable name: use letters, digits and _"
            )

        def load() -> str:
            value = os.environ.get(name)
            if not value:
                raise SecretError(
                    f"environment variable {name} is not set or empty: export it before running"
                )
            return value

        return cls(ref=ENV_PREFIX + name, loader=load)

    def reveal(self) -> str:
        """The value itself: call only at the boundary that hands it to a client library."""
        value = self._value if self._value is not None else self._loader()  # type: ignore[misc]
        if len(value) >= _REDACT_MIN_LENGTH:
            _revealed.add(value)
        return value

    def describe(self) -> str:
        """Where the secret lives, without its value: `env:NAME`, `stored`, or `***`."""
        if self.ref is None:
            return "***"
        if self.ref.startswith(ENV_PREFIX):
            return self.ref
        return "stored"

    def __repr__(self) -> str:
        return f"Secret({self.describe()})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def redact(text: str) -> str:
    """Replace every secret value revealed in this process by `***`."""
    for value in _revealed:
        if value and value in text:
            text = text.replace(value, "***")
    return text


class SecretsFile:
    """A JSON file of stored secrets, 0600 in a 0700 folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "secrets.json"

    def put(self, value: Secret) -> Secret:
        """Store `value` and return a Secret that refers to it."""
        entries = self._read()
        key = _random.token_hex(8)
        entries[key] = value.reveal()
        self._write(entries)
        return self._reference(key)

    def delete(self, ref: str) -> None:
        if not ref.startswith(STORE_PREFIX):
            return
        entries = self._read()
        if entries.pop(ref.removeprefix(STORE_PREFIX), None) is not None:
            self._write(entries)

    def load(self, ref: str) -> Secret:
        """A Secret for a reference read from the state database."""
        if ref.startswith(ENV_PREFIX):
            return Secret.from_env(ref.removeprefix(ENV_PREFIX))
        if ref.startswith(STORE_PREFIX):
            return self._reference(ref.removeprefix(STORE_PREFIX))
        raise SecretError(f"unknown secret reference kind in state.db: {ref.split(':', 1)[0]!r}")

    def _reference(self, key: str) -> Secret:
        def load() -> str:
            entries = self._read()
            if key not in entries:
                raise SecretError(
                    f"a stored secret is missing from {self.path}: add the authorization again"
                )
            return entries[key]

        return Secret(ref=STORE_PREFIX + key, loader=load)

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        self._check_private(self.folder, "folder", "700")
        self._check_private(self.path, "file", "600")
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SecretError(
                f"the secrets file {self.path} cannot be read ({type(exc).__name__}): "
                "restore it from a backup or remove it and add the authorizations again"
            ) from None
        if not isinstance(entries, dict):
            raise SecretError(f"the secrets file {self.path} is not a JSON object")
        return {str(k): str(v) for k, v in entries.items()}

    def _write(self, entries: dict[str, str]) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".secrets-", suffix=".tmp")
        try:
            # mkstemp creates the file 0600 already; say so, in case the umask is unusual.
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(entries, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def _check_private(path: Path, what: str, mode: str) -> None:
        current = stat.S_IMODE(path.stat().st_mode)
        if current & 0o077:
            raise SecretError(
                f"the secrets {what} {path} can be read by group or others "
                f"(mode {current:o}): run `chmod {mode} {path}`, and rotate the secrets in it "
                "if others may have read them"
            )
