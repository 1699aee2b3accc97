"""Reading the small text files a user writes (job and profiles files, which TOML says are
UTF-8): one clear error for a file that cannot be read or is not UTF-8."""

from __future__ import annotations

from pathlib import Path

from engine.errors import ConfigError


def read_text(path: Path, what: str) -> str:
    """The file's text; a ConfigError naming the file, and the line of the first byte that is
    not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"the {what} {path} is not UTF-8 (line {line}, bytes "
            f"{exc.object[exc.start : exc.start + 4].hex(' ')}): save it as UTF-8"
        ) from None
