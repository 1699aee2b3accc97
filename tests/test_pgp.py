"""engine.pgp: keys read and checked, streams encrypted for `gpg -d` and decrypted from what
`gpg` wrote, and each way a message can be refused, by name."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.errors import BadInput
from engine.pgp import Decrypting, Encrypting, Keyring, PgpError, looks_encrypted, read_keys
from tests.pgp_keys import PASSPHRASE, Key, make_key


@pytest.fixture
def keys(pgp_keys: dict[str, Key]) -> dict[str, Key]:
    return pgp_keys


@dataclass
class Memory:
    parts: list[bytes] = field(default_factory=list)
    completed: bool = False
    aborted: bool = False

    def write(self, data: bytes | memoryview) -> None:
        self.parts.append(bytes(data))

    def complete(self) -> None:
        self.completed = True

    def abort(self) -> None:
        self.aborted = True


def chunks(data: bytes, size: int = 100_000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    ("kind", "algorithm"), [("rsa", "RSA 2048"), ("ed25519", "EdDSA (ed25519)")]
)
def test_keys_are_read_armored_or_binary_and_described(
    kind: str, algorithm: str, keys: dict[str, Key]
) -> None:
    key = keys[kind]
    for data in (key.public, key.public_binary):
        (info,) = read_keys(data, "--pgp-public-key k.asc")
        assert info.fingerprint == key.fingerprint
        assert info.algorithm == algorithm
        assert info.expires is None
        assert not info.secret
    (secret,) = read_keys(key.secret, "--pgp-private-key k.asc")
    assert secret.secret


def test_an_expired_or_revoked_key_and_a_file_without_a_key_are_refused(tmp_path: Path) -> None:
    old = make_key(
        tmp_path / "old",
        "Old <old@example.com>",
        "ed25519",
        "cv25519",
        expire="1d",
        faked="20200101T000000",
    )
    with pytest.raises(PgpError, match=r"expired on 2020-01-02: extend it"):
        read_keys(old.public, "--pgp-public-key old.asc")
    gone = make_key(tmp_path / "gone", "Gone <gone@example.com>", "ed25519", "cv25519")
    certificate = (gone.home / "openpgp-revocs.d" / f"{gone.fingerprint}.rev").read_text()
    gone.gpg("--import", data=certificate.replace(":-----BEGIN", "-----BEGIN").encode())
    with pytest.raises(PgpError, match=rf"the key {gone.fingerprint} .* is revoked"):
        read_keys(gone.gpg("--armor", "--export", gone.fingerprint), "--pgp-public-key g.asc")
    with pytest.raises(PgpError, match="no OpenPGP key could be read"):
        read_keys(b"not a key", "--pgp-public-key x.asc")


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_a_stream_encrypted_here_is_what_gpg_decrypts(kind: str, keys: dict[str, Key]) -> None:
    key = keys[kind]
    plain = os.urandom(300_000) + b"a,b\n" * 200_000
    target = Memory()
    with Keyring([key.public]) as ring:
        encrypting = Encrypting(target, ring, [key.fingerprint], name="x.csv.gpg")
        for part in chunks(plain):
            encrypting.write(part)
        encrypting.complete()
    assert target.completed
    message = b"".join(target.parts)
    assert looks_encrypted(message[:16])
    assert key.gpg("--decrypt", data=message) == plain


@pytest.mark.parametrize("armor", [False, True])
@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_what_gpg_encrypted_is_read_back_plain(
    kind: str, armor: bool, keys: dict[str, Key]
) -> None:
    key = keys[kind]
    plain = b"user_id,event\n" + b"u1,open\n" * 100_000
    message = key.gpg(
        *(["--armor"] if armor else []), "--encrypt", "-r", key.fingerprint, data=plain
    )
    assert looks_encrypted(message[:64])
    with Keyring([key.secret]) as ring:
        read = Decrypting(
            io.BytesIO(message), ring, name="s3://b/e.csv.gpg", passphrase=PASSPHRASE
        ).read()
    assert read == plain


def refused(message: bytes, secret: bytes, passphrase: str | None = PASSPHRASE) -> str:
    with Keyring([secret]) as ring:
        reader = Decrypting(
            io.BytesIO(message), ring, name="s3://b/e.csv.gpg", passphrase=passphrase
        )
        with pytest.raises(BadInput) as caught:
            reader.read()  # to the end, where gpg says what it found
    return str(caught.value)


def test_each_way_a_message_is_refused_says_why(keys: dict[str, Key], tmp_path: Path) -> None:
    key, other = keys["rsa"], keys["other"]
    plain = b"a,b\n" * 50_000
    message = key.gpg("--encrypt", "-r", key.fingerprint, data=plain)
    wrong_key = refused(message, other.secret)
    assert "s3://b/e.csv.gpg: is encrypted to key(s)" in wrong_key
    sub = [
        line.split(":")[4]
        for line in subprocess.run(
            ["gpg", "--homedir", str(key.home), "--list-keys", "--with-colons"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        if line.startswith("sub")
    ]
    assert sub[0] in wrong_key
    assert "wrong" in refused(message, key.secret, passphrase="nope").lower()
    assert "corrupted or truncated" in refused(message[: len(message) // 2], key.secret)
    assert "is not an OpenPGP encrypted message" in refused(plain, key.secret)
    legacy = key.gpg(
        "--encrypt",
        "-r",
        key.fingerprint,
        "--rfc2440",
        "--cipher-algo",
        "3DES",
        "--compress-algo",
        "none",
        data=plain,
    )
    assert "without integrity protection" in refused(legacy, key.secret)


def test_homes_are_removed(keys: dict[str, Key]) -> None:
    with Keyring([keys["rsa"].public]) as ring:
        home = Path(ring.home)
        assert home.stat().st_mode & 0o777 == 0o700
    assert not home.exists()


def test_no_key_material_reaches_the_logs_at_debug(
    keys: dict[str, Key], caplog: pytest.LogCaptureFixture
) -> None:
    key = keys["rsa"]
    message = key.gpg("--encrypt", "-r", key.fingerprint, data=b"a,b\n")
    with caplog.at_level(logging.DEBUG), Keyring([key.secret]) as ring:
        Decrypting(io.BytesIO(message), ring, name="m.gpg", passphrase=PASSPHRASE).read()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    body = key.secret.decode().splitlines()[3]  # a line of the armored secret key
    assert body not in logged
    assert "PRIVATE KEY" not in logged
    assert PASSPHRASE not in logged


def test_without_gpg_one_line_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from engine.errors import ConfigError
    from engine.pgp import gpg_binary

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"apt-get install gnupg") as caught:
        gpg_binary()
    assert "\n" not in str(caught.value)


def test_the_keyring_of_a_killed_process_is_removed_by_the_next_use(
    keys: dict[str, Key], tmp_path: Path
) -> None:
    """A run killed with SIGKILL cannot remove its keyring (which may hold a private key): the
    next keyring made on the machine removes the homes of processes that are gone."""
    import tempfile

    from engine.pgp import HOME_PREFIX

    gone = subprocess.Popen(["true"])
    gone.wait()
    left = Path(tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{gone.pid}-"))
    (left / "private-keys-v1.d").mkdir()
    alive = Path(tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-"))
    try:
        with Keyring([keys["ed25519"].public]) as ring:
            assert Path(ring.home).name.startswith(f"{HOME_PREFIX}{os.getpid()}-")
        assert not left.exists()
        assert alive.exists()  # this process is alive: its homes are its own to remove
    finally:
        shutil.rmtree(alive, ignore_errors=True)
        shutil.rmtree(left, ignore_errors=True)
