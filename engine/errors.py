"""Errors raised by the engine.

Every error says what went wrong, where (bucket, object key, line, field) and how to fix it.
Errors are split by what a caller can do about them: a `TransientError` may succeed if retried
later (an endpoint that is down, a throttled request); a `TerminalError` will fail the same way
until something is changed (a wrong key, a missing bucket, a bad file).
"""

from __future__ import annotations


class LakeportError(Exception):
    """Base of every error lakeport raises on purpose."""


class TransientError(LakeportError):
    """Retrying later may succeed."""


class TerminalError(LakeportError):
    """Retrying will fail the same way until something is changed."""


class ConfigError(TerminalError):
    """A setting, an option or a stored object is missing or invalid."""


class SecretError(TerminalError):
    """A secret cannot be stored or resolved."""


class StorageError(TerminalError):
    """A bucket, folder or object cannot be reached as asked."""


class NoSuchBucket(StorageError):
    """The bucket does not exist (or is not visible to these credentials)."""


class NoSuchKey(StorageError):
    """The object or folder does not exist."""


class AccessDenied(StorageError):
    """The credentials are valid but lack a permission."""


class InvalidCredentials(StorageError):
    """The access key id is unknown or the secret key does not match it."""


class ExpiredCredentials(StorageError):
    """The session token has expired."""


class EndpointUnreachable(TransientError):
    """The storage endpoint did not answer."""


class StoreError(TerminalError):
    """The store (streams, state) cannot do what was asked."""


class BadInput(TerminalError):
    """An object's content cannot be imported as it is: names the object, the line and why."""

    def __init__(self, name: str, line: int | None, reason: str) -> None:
        self.object = name
        self.line = line
        self.reason = reason
        where = f"{name}, line {line}" if line is not None else name
        super().__init__(f"{where}: {reason}")


class LimitExceeded(TerminalError):
    """An object passes a limit that protects the machine (size, ratio, line length)."""


class SourceChanged(TransientError):
    """The object changed (or its bytes came cut short or altered) while it was read."""


class Interrupted(BaseException):
    """The process was asked to stop (SIGTERM), raised like KeyboardInterrupt is for SIGINT.

    Not a LakeportError: like KeyboardInterrupt it goes through every `except Exception`, and a
    run that meets it is recorded `interrupted`.
    """

    def __init__(self, signal_name: str) -> None:
        self.signal_name = signal_name
        super().__init__(signal_name)
