"""OpenPGP through the system `gpg`: the one module that runs it.

Each use is a fresh keyring: a 0700 home holding only the keys given, removed afterwards (with
its agent). python-gnupg reads and lists keys; the data itself streams through a `gpg` process
of our own, so that neither direction holds a whole file or writes plaintext to disk:

- `Encrypting` is a write target in front of another: what is written goes to gpg's stdin, a
  thread carries gpg's output to the target behind, `complete` waits for gpg and completes it.
- `Decrypting` reads an encrypted stream as plaintext; the end of the stream is reached only
  when gpg says the message was whole (its MDC or AEAD checked), else it raises the reason.

Integrity is required: a message without an MDC is refused. The errors name the object and the
fix: the wrong key (with the key ids the message is for), the wrong passphrase, a corrupted or
truncated message, one without integrity protection, and data that is not encrypted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from engine.auth import pack_keys
from engine.errors import BadInput, ConfigError, TerminalError
from engine.secrets import Secret

if TYPE_CHECKING:
    from engine.auth import Authorization

CHUNK = 256 * 1024
ALGORITHMS = {
    "1": "RSA",
    "2": "RSA",
    "3": "RSA",
    "16": "ElGamal",
    "17": "DSA",
    "18": "ECDH",
    "19": "ECDSA",
    "22": "EdDSA",
}
"""OpenPGP public-key algorithm ids, as gpg lists them."""
BAD_PASSPHRASE = 11
"""libgpg-error's code for a wrong passphrase (an ERROR status carries it, with its source)."""
PACKET_TAGS = {1, 3}
"""The packets an encrypted message starts with: a public-key or a symmetric-key session key."""


# python-gnupg logs what it sends gpg at DEBUG, key material included: never below WARNING.
logging.getLogger("gnupg").setLevel(logging.WARNING)


class PgpError(TerminalError):
    """An OpenPGP message or key cannot be used: says which and the fix."""


def gpg_binary() -> str:
    """The system gpg, or a ConfigError with the command that installs it."""
    found = shutil.which("gpg")
    if found is None:
        raise ConfigError(
            "PGP needs the gpg program, which is not installed: install GnuPG "
            "(apt-get install gnupg, dnf install gnupg2, or brew install gnupg)"
        )
    return found


@dataclass(frozen=True)
class KeyInfo:
    """One key as `auth show` gives it (never its secret parts)."""

    fingerprint: str
    algorithm: str
    user_ids: tuple[str, ...]
    expires: datetime | None
    secret: bool
    subkeys: tuple[str, ...] = ()
    """The key ids of its subkeys (an encrypted message names the subkey it is for)."""
    can_encrypt: bool = True
    """Whether it (or a subkey) may encrypt: a signing-only key cannot be a recipient."""

    @property
    def key_ids(self) -> tuple[str, ...]:
        return (self.fingerprint[-16:], *self.subkeys)


class Keyring:
    """A fresh gpg home holding `keys` (armored or binary key files' bytes), for one use.

    `with Keyring(keys) as ring:` imports them; leaving removes the home and stops its agent.
    With `pinned` (fingerprints), the keys must be exactly those: an authorization's keys are
    checked against the fingerprints it was added with.
    """

    def __init__(
        self, keys: Sequence[bytes], *, source: str = "the keys", pinned: Sequence[str] = ()
    ) -> None:
        self.keys = keys
        self.source = source
        self.pinned = pinned
        self.home = ""
        self.infos: list[KeyInfo] = []

    def __enter__(self) -> Keyring:
        import gnupg

        binary = gpg_binary()
        sweep_homes()
        # Short: gpg's agent socket lives in the home, and socket paths are short.
        self.home = tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-")
        os.chmod(self.home, 0o700)
        try:
            self.gpg = gnupg.GPG(gpgbinary=binary, gnupghome=self.home)
            for data in self.keys:
                imported = self.gpg.import_keys(data)
                if not imported.fingerprints:
                    raise PgpError(
                        f"{self.source}: no OpenPGP key could be read ({imported.summary()}): "
                        "give an ASCII-armored (.asc) or binary (.gpg) key file, as "
                        "`gpg --export` or `gpg --export-secret-keys` writes it"
                    )
            self.infos = self._listed()
            found = {info.fingerprint for info in self.infos}
            if self.pinned and found != set(self.pinned):
                raise PgpError(
                    f"{self.source}: the stored keys ({', '.join(sorted(found))}) are not the "
                    f"ones it was added with ({', '.join(self.pinned)}): add it again"
                )
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self._remove()

    def _listed(self) -> list[KeyInfo]:
        secret = {k["fingerprint"] for k in self.gpg.list_keys(secret=True)}
        found = []
        for key in self.gpg.list_keys():
            fingerprint = key["fingerprint"]
            uids = tuple(key.get("uids") or ())
            trust = key.get("trust", "")
            if trust == "r" or key.get("revoked"):
                named = f"{self.source}: the key {fingerprint} ({', '.join(uids)})"
                raise PgpError(f"{named} is revoked: use its replacement")
            expires = _moment(key.get("expires"))
            if trust == "e" or (expires is not None and expires <= datetime.now(UTC)):
                raise PgpError(
                    f"{self.source}: the key {fingerprint} ({', '.join(uids)}) expired on "
                    f"{expires:%Y-%m-%d}: extend it (gpg --quick-set-expire) or use a new one"
                    if expires
                    else f"{self.source}: the key {fingerprint} has expired: use a new one"
                )
            algorithm = ALGORITHMS.get(str(key.get("algo")), f"algorithm {key.get('algo')}")
            if key.get("curve"):
                algorithm = f"{algorithm} ({key['curve']})"
            elif key.get("length"):
                algorithm = f"{algorithm} {key['length']}"
            subkeys = tuple(str(s[0]) for s in key.get("subkeys") or ())
            found.append(
                KeyInfo(
                    fingerprint,
                    algorithm,
                    uids,
                    expires,
                    fingerprint in secret,
                    subkeys,
                    can_encrypt="E" in str(key.get("cap", "")),
                )
            )
        return found

    def _remove(self) -> None:
        if not self.home:
            return
        _remove_home(self.home)
        self.home = ""

    def command(self, *args: str) -> list[str]:
        return [
            gpg_binary(),
            "--homedir",
            self.home,
            "--batch",
            "--no-tty",
            "--status-fd",
            "2",
            *args,
        ]


HOME_PREFIX = "lp-gpg-"
"""A keyring's home: `lp-gpg-PID-…` in the temporary folder, named by the process using it."""


def sweep_homes(folder: str | None = None) -> list[str]:
    """Remove the keyring homes of processes that are gone (a run killed with SIGKILL could
    not remove its own, which may hold a private key); the homes removed."""
    base = Path(folder or tempfile.gettempdir())
    removed = []
    for home in base.glob(f"{HOME_PREFIX}*-*"):
        pid = home.name.removeprefix(HOME_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or not home.is_dir() or home.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or another user's: not ours to remove)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _remove_home(str(home))
        removed.append(str(home))
    return removed


def _remove_home(home: str) -> None:
    """Stop a keyring home's agent and remove the home."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["gpgconf", "--homedir", home, "--kill", "all"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    shutil.rmtree(home, ignore_errors=True)


def read_keys(data: bytes, source: str) -> list[KeyInfo]:
    """The keys in a key file's bytes (checked: none expired or revoked)."""
    with Keyring([data], source=source) as ring:
        return ring.infos


def authorization_keys(
    public: Sequence[tuple[str, bytes]],
    private: tuple[str, bytes] | None,
    passphrase: Secret | None,
) -> dict[str, Any]:
    """An authorization's PGP fields (engine.auth) from key files given as (name, bytes):
    each checked (readable, not expired or revoked, a public key that can encrypt, a private
    key that the passphrase unlocks)."""
    fields: dict[str, Any] = {}
    recipients: list[str] = []
    for name, data in public:
        for info in read_keys(data, name):
            if info.secret:
                raise PgpError(
                    f"{name} holds a private key: give the public key, as "
                    f"`gpg --armor --export {info.fingerprint}` writes it (a private key goes "
                    "with --pgp-private-key)"
                )
            if not info.can_encrypt:
                raise PgpError(
                    f"{name}: the key {info.fingerprint} can only sign, not encrypt: give a key "
                    "with an encryption subkey (gpg --quick-add-key FPR cv25519 encr)"
                )
            if info.fingerprint not in recipients:
                recipients.append(info.fingerprint)
    if public:
        fields["pgp_recipients"] = tuple(recipients)
        fields["pgp_public_keys"] = pack_keys([data for _, data in public])
    if private is not None:
        name, data = private
        secret = [info for info in read_keys(data, name) if info.secret]
        if len(secret) != 1:
            raise PgpError(
                f"{name} holds {len(secret) or 'no'} private keys: give one, as "
                "`gpg --armor --export-secret-keys FPR` writes it"
            )
        try:
            check_unlocks(data, None if passphrase is None else passphrase.reveal(), name)
        except PgpError as exc:
            if passphrase is not None or "passphrase" not in str(exc):
                raise
            raise PgpError(
                f"{name}: the private key is protected by a passphrase: give it with "
                "--pgp-passphrase-env VAR or --pgp-passphrase-file FILE"
            ) from None
        fields["pgp_decrypts_with"] = secret[0].fingerprint
        fields["pgp_private_key"] = pack_keys([data])
        if passphrase is not None:
            fields["pgp_passphrase"] = passphrase
    elif passphrase is not None:
        raise ConfigError("a PGP passphrase goes with --pgp-private-key, which is not given")
    return fields


@dataclass(frozen=True)
class Recipients:
    """The public keys an export is encrypted to: their key files, and the fingerprints they
    must have."""

    keys: tuple[bytes, ...] = dc_field(repr=False)
    fingerprints: tuple[str, ...]
    source: str

    def keyring(self) -> Keyring:
        """Their keyring (checked: pinned, not expired, not revoked), for `with`."""
        return Keyring(self.keys, source=self.source, pinned=self.fingerprints)

    def seal(self, ring: Keyring) -> Callable[[Any, str], Encrypting]:
        """What encrypts one file of an export (engine.writers.sink's seal)."""
        return lambda target, key: Encrypting(target, ring, self.fingerprints, name=key)

    def overhead(self, size: int) -> int:
        """The most the encryption adds to `size` bytes: a session key packet per recipient
        (about 530 bytes for RSA 4096) and the packet lengths and MDC, measured below 1/4096
        of the size; with room to spare."""
        return 1024 * len(self.fingerprints) + 1024 + size // 2048


def export_keys(auth: Authorization) -> Recipients:
    """The public keys `auth`'s exports are encrypted to."""
    return Recipients(
        tuple(auth.public_key_files()),
        auth.pgp_recipients,
        f"the PGP public keys of authorization '{auth.name}'",
    )


def import_keys(auth: Authorization | None, name: str) -> tuple[Keyring, str | None]:
    """A keyring holding `auth`'s private key, and its passphrase, to decrypt the encrypted
    object `name`; a PgpError that says how to add the key when there is none."""
    data = None if auth is None else auth.private_key_file()
    if auth is None or data is None:
        whose = (
            "the import has no authorization"
            if auth is None
            else (f"authorization '{auth.name}' has no PGP private key")
        )
        raise PgpError(
            f"{name} is OpenPGP-encrypted and {whose}: add one with `lakeport auth add NAME "
            "... --pgp-private-key FILE` and set `auth` in the job"
        )
    assert auth.pgp_decrypts_with is not None
    passphrase = None if auth.pgp_passphrase is None else auth.pgp_passphrase.reveal()
    ring = Keyring(
        [data],
        source=f"the PGP private key of authorization '{auth.name}'",
        pinned=[auth.pgp_decrypts_with],
    )
    return ring, passphrase


def described(auth: Authorization) -> list[dict[str, Any]]:
    """`auth`'s keys as `auth show` gives them: use, fingerprint, algorithm, user ids, expiry."""
    shown: list[dict[str, Any]] = []
    uses: list[tuple[str, Keyring]] = []
    if auth.encrypts:
        uses.append(("encrypts exports", export_keys(auth).keyring()))
    if auth.pgp_decrypts_with:
        uses.append(("decrypts imports", import_keys(auth, "")[0]))
    for use, ring in uses:
        with ring:
            shown += [
                {
                    "use": use,
                    "fingerprint": info.fingerprint,
                    "algorithm": info.algorithm,
                    "user_ids": list(info.user_ids),
                    "expires": None if info.expires is None else info.expires.isoformat(),
                }
                for info in ring.infos
            ]
    return shown


def check_unlocks(secret_key: bytes, passphrase: str | None, source: str) -> None:
    """That `passphrase` unlocks `secret_key` (a message to it is decrypted), or a PgpError."""
    with Keyring([secret_key], source=source) as ring:
        (info,) = ring.infos
        message = _Kept()
        encrypting = Encrypting(message, ring, [info.fingerprint], name=source)
        encrypting.write(b"lakeport")
        encrypting.complete()
        reading = Decrypting(io.BytesIO(message.data), ring, name=source, passphrase=passphrase)
        try:
            reading.read()
        except BadInput as exc:
            raise PgpError(f"{source}: {exc.reason}") from None
        finally:
            reading.close()


class _Kept:
    """A write target in memory (for a few bytes)."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes | memoryview) -> None:
        self.data += bytes(data)

    def complete(self) -> None:
        pass

    def abort(self) -> None:
        pass


class Encrypting:
    """A write target that encrypts what it is given to `recipients` (fingerprints in `ring`)
    and writes the message to `target` as gpg makes it (see the module)."""

    def __init__(self, target: Any, ring: Keyring, recipients: Sequence[str], *, name: str):
        self.target = target
        self.name = name
        chosen = [arg for fpr in recipients for arg in ("--recipient", fpr)]
        self.process = subprocess.Popen(
            ring.command(
                "--trust-model",
                "always",
                "--compress-algo",
                "none",
                "--encrypt",
                *chosen,
                "--output",
                "-",
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _widen(self.process)
        self.error: BaseException | None = None
        self._status = _Collected(self.process.stderr)
        self._pump = threading.Thread(target=self._carry, name="lakeport-pgp-out", daemon=True)
        self._pump.start()

    def _carry(self) -> None:
        assert self.process.stdout is not None
        try:
            while chunk := self.process.stdout.read1(CHUNK):  # type: ignore[attr-defined]
                self.target.write(chunk)
        except BaseException as exc:  # the target's error is the run's: kept, gpg stopped
            self.error = exc
            self.process.kill()

    def write(self, data: bytes | memoryview) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
        except BrokenPipeError:
            self._raise(None)

    def complete(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        self._pump.join()
        code = self.process.wait()
        self._status.text()
        _close_pipes(self.process)
        if code != 0 or self.error is not None:
            self._raise(code)
        self.target.complete()

    def abort(self) -> None:
        self.process.kill()
        self.process.wait()
        self._pump.join()
        self._status.text()
        _close_pipes(self.process)
        self.target.abort()

    def _raise(self, code: int | None) -> None:
        self._pump.join()
        if self.error is not None:
            raise self.error
        raise PgpError(f"{self.name}: gpg could not encrypt: {self._status.text().strip()[-300:]}")


class Decrypting(io.RawIOBase):
    """The plaintext of the encrypted stream `source` (see the module): `name` is the object
    in errors; `passphrase` unlocks the secret key in `ring`."""

    def __init__(
        self,
        source: IO[bytes],
        ring: Keyring,
        *,
        name: str,
        passphrase: str | None = None,
        owns: bool = False,
    ):
        """`owns`: closing this closes `source` and removes `ring`."""
        super().__init__()
        self.name = name
        self._source = source
        self._ring = ring if owns else None
        args = ["--pinentry-mode", "loopback"]
        read_end = None
        if passphrase is not None:
            read_end, write_end = os.pipe()
            os.write(write_end, passphrase.encode() + b"\n")
            os.close(write_end)
            args += ["--passphrase-fd", str(read_end)]
        else:
            args += ["--passphrase", ""]
        self.process = subprocess.Popen(
            ring.command(*args, "--decrypt", "--output", "-"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=() if read_end is None else (read_end,),
        )
        if read_end is not None:
            os.close(read_end)
        _widen(self.process)
        self._status = _Collected(self.process.stderr)
        self._feeding = threading.Thread(
            target=self._feed, args=(source,), daemon=True, name="lakeport-pgp-in"
        )
        self.source_error: BaseException | None = None
        self._feeding.start()
        self._done = False

    def _feed(self, source: IO[bytes]) -> None:
        assert self.process.stdin is not None
        try:
            while chunk := source.read(CHUNK):
                self.process.stdin.write(chunk)
        except BrokenPipeError:
            pass  # gpg stopped: its status says why
        except BaseException as exc:
            self.source_error = exc
            self.process.kill()
        finally:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.process.stdin.close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        assert self.process.stdout is not None
        if self._done:
            return 0
        count = self.process.stdout.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            return int(count)
        self._finish()
        return 0

    def _finish(self) -> None:
        self._done = True
        self._feeding.join()
        code = self.process.wait()
        status = self._status.lines()
        _close_pipes(self.process)
        if self.source_error is not None:
            raise self.source_error
        problem = _decrypt_problem(status, code)
        if problem is not None:
            raise BadInput(self.name, None, problem)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._feeding.join()
            self._status.text()
            _close_pipes(self.process)
            if self._ring is not None:
                self._source.close()
                self._ring.__exit__()
        finally:
            super().close()


def _decrypt_problem(status: list[str], code: int) -> str | None:
    """Why a decryption failed, from gpg's status lines; None when the message was whole."""
    words = [line.split() for line in status if line.startswith("[GNUPG:] ")]
    said = {w[1] for w in words if len(w) > 1}
    if code == 0 and "DECRYPTION_OKAY" in said and ("GOODMDC" in said or "DECRYPTION_INFO" in said):
        return None
    if "NODATA" in said and "ENC_TO" not in said and "BEGIN_DECRYPTION" not in said:
        return "is not an OpenPGP encrypted message: import it as a plain file, or re-encrypt it"
    codes = {int(w[3]) & 0xFFFF for w in words if len(w) > 3 and w[1] == "ERROR" and w[3].isdigit()}
    if "BAD_PASSPHRASE" in said or "MISSING_PASSPHRASE" in said or BAD_PASSPHRASE in codes:
        return (
            "the passphrase of the authorization's private key is wrong: give the right one "
            "(--pgp-passphrase-env or --pgp-passphrase-file in `lakeport auth add`)"
        )
    if "NO_SECKEY" in said:
        ids = sorted({w[2] for w in words if len(w) > 2 and w[1] in ("ENC_TO", "NO_SECKEY")})
        return (
            f"is encrypted to key(s) {', '.join(ids)}, and the authorization's private key is "
            "none of them: add the right key with `lakeport auth add ... --pgp-private-key`"
        )
    errors = {w[2] for w in words if len(w) > 2 and w[1] == "ERROR"}
    if any(e.startswith("nomdc") for e in errors) or any(
        "integrity protect" in line for line in status
    ):
        return (
            "is encrypted without integrity protection (no MDC), so a change to it could not be "
            "seen: encrypt it again with a current gpg (which adds one)"
        )
    told = " ".join(
        line.removeprefix("gpg: ") for line in status if not line.startswith("[GNUPG:]")
    )
    return f"is a corrupted or truncated OpenPGP message: upload it again (gpg said: {told[-200:]})"


PIPE_BYTES = 1 << 20
"""The pipes to and from gpg hold this much (Linux's default is 64 KiB): fewer, larger reads
and writes, and fewer switches between gpg and the threads that feed and drain it."""
F_SETPIPE_SZ = 1031


def _widen(process: subprocess.Popen[bytes]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError, AttributeError):
                import fcntl

                fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_BYTES)


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError, ValueError):
                pipe.close()


class _Collected:
    """A process's stderr, read by a thread as it comes (gpg would stall on a full pipe)."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        self._parts: list[bytes] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes] | None) -> None:
        if stream is not None:
            for line in iter(stream.readline, b""):
                self._parts.append(line)

    def text(self) -> str:
        self._thread.join(timeout=10)
        return b"".join(self._parts).decode("utf-8", "replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()


NAMED = (".gpg", ".pgp", ".asc")
"""The extensions of an encrypted object."""
HEAD = 64
"""Bytes enough to tell an OpenPGP message (a packet header, or the armor line)."""


def plain(handle: IO[bytes], *, name: str, auth: Authorization | None) -> IO[bytes]:
    """The object's bytes as stored, or decrypted with `auth`'s private key when it is an
    OpenPGP message (by its name or its first bytes). Closing it closes `handle` and removes
    the keyring."""
    head = bytes(handle.read(HEAD))
    source = cast(IO[bytes], _Prefixed(handle, head))
    if not (name.lower().endswith(NAMED) or looks_encrypted(head)):
        return source
    try:
        ring, passphrase = import_keys(auth, name)
        ring.__enter__()
    except BaseException:
        source.close()
        raise
    return cast(IO[bytes], Decrypting(source, ring, name=name, passphrase=passphrase, owns=True))


class _Prefixed(io.RawIOBase):
    """A handle's bytes with `head` (already read) first; closing closes the handle."""

    def __init__(self, handle: IO[bytes], head: bytes) -> None:
        super().__init__()
        self._handle = handle
        self._head = head

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """The handle's own reads once the head is given (no copy of a plain object's bytes)."""
        if not self._head:
            return self._handle.read(size)
        if size is None or size < 0:
            data, self._head = self._head + self._handle.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            count = min(len(view), len(self._head))
            view[:count], self._head = self._head[:count], self._head[count:]
            return count
        data = self._handle.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._handle.close()
        finally:
            super().close()


def looks_encrypted(head: bytes) -> bool:
    """Whether bytes start an OpenPGP message: ASCII armor, or a session-key packet."""
    if head.lstrip().startswith(b"-----BEGIN PGP MESSAGE-----"):
        return True
    if not head or not head[0] & 0x80:
        return False
    first = head[0]
    tag = first & 0x3F if first & 0x40 else (first >> 2) & 0x0F
    return tag in PACKET_TAGS


def _moment(epoch: Any) -> datetime | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(int(epoch), UTC)
