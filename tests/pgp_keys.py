"""OpenPGP keys for tests, made by gpg on the command line in homes of their own: each `Key`
can run gpg as its owner would (`key.gpg("--decrypt", data=...)`)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

PASSPHRASE = "correct horse"


@dataclass
class Key:
    home: Path
    fingerprint: str
    public: bytes
    public_binary: bytes
    secret: bytes

    def gpg(self, *args: str, data: bytes = b"") -> bytes:
        done = subprocess.run(
            [
                "gpg",
                "--homedir",
                str(self.home),
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                PASSPHRASE,
                "--trust-model",
                "always",
                *args,
            ],
            input=data,
            capture_output=True,
            check=True,
        )
        return done.stdout


def make_key(
    home: Path,
    uid: str,
    primary: str,
    sub: str | None,
    *,
    expire: str = "never",
    faked: str | None = None,
) -> Key:
    home.mkdir(mode=0o700)
    extra = [f"--faked-system-time={faked}"] if faked else []
    base = [
        "gpg",
        "--homedir",
        str(home),
        "--batch",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        PASSPHRASE,
        *extra,
    ]
    subprocess.run(
        [*base, "--quick-gen-key", uid, primary, "default", expire], check=True, capture_output=True
    )
    listed = subprocess.run(
        ["gpg", "--homedir", str(home), "--list-keys", "--with-colons"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fingerprint = next(line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr"))
    if sub is not None:  # without one, an Ed25519 key can only sign
        subprocess.run(
            [*base, "--quick-add-key", fingerprint, sub, "encr", expire],
            check=True,
            capture_output=True,
        )

    def export(*how: str) -> bytes:
        return subprocess.run([*base, *how, fingerprint], capture_output=True, check=True).stdout

    return Key(
        home,
        fingerprint,
        export("--armor", "--export"),
        export("--export"),
        export("--armor", "--export-secret-keys"),
    )
