"""Encrypted imports: files encrypted by `gpg` on the command line (compressed or not, armored
or not, to an RSA or an Ed25519 key) import to the rows of the plain file; each way a message
is refused names the object and the fix and imports nothing; `inspect` reads encrypted objects;
the private key and its passphrase never reach the logs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import zstandard

from engine import pgp
from engine.auth import DefaultChain, pack_keys
from engine.secrets import Secret
from engine.store import Store
from tests.conftest import S3Server
from tests.pgp_keys import PASSPHRASE, Key
from tests.test_csv_import import events, job_file, run, run_json, stream_rows

ROWS = [
    f"u{i},u{i}@x.com,{'buy' if i % 3 else 'view'},2026-11-01T09:{i % 60:02d}:00Z"
    for i in range(3000)
]
PLAIN = events(*ROWS)


@pytest.fixture
def opened(tmp_path: Path, pgp_keys: dict[str, Key], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store whose 'partner' decrypts with the Ed25519 key and 'rsa' with the RSA key (their
    passphrase from the environment; the keys as `auth add` keeps them, without its checks,
    which tests/test_pgp_export.py makes), and 'keyless' has none."""
    monkeypatch.setenv("PGP_PASSPHRASE", PASSPHRASE)
    store = Store(tmp_path / "store")
    for name, key in (("partner", pgp_keys["ed25519"]), ("rsa", pgp_keys["rsa"])):
        store.authorizations.add(
            DefaultChain(
                name=name,
                pgp_decrypts_with=key.fingerprint,
                pgp_private_key=pack_keys([key.secret]),
                pgp_passphrase=Secret.from_env("PGP_PASSPHRASE"),
            )
        )
    store.authorizations.add(DefaultChain(name="keyless"))
    return store.path


def imported(store: Path, tmp_path: Path, bucket: Path, name: str, auth: str) -> list[Any]:
    job = job_file(
        tmp_path, bucket, file=name, auth=auth, timestamp="ts", name=name.replace(".", "-")
    )
    record = run_json(store, job)
    assert record["status"] == "succeeded", record.get("error")
    rows = stream_rows(store).filter(stream_rows(store)["_source"].str.ends_with(name))
    return rows.select("user_id", "email", "event", "_ts").rows()


@pytest.mark.parametrize(
    ("owner", "compress", "armor"),
    [("rsa", "gzip", False), ("ed25519", "none", True), ("ed25519", "zstd", False)],
)
def test_a_file_encrypted_by_gpg_imports_as_the_plain_file(
    owner: str,
    compress: str,
    armor: bool,
    opened: Path,
    tmp_path: Path,
    bucket: Path,
    pgp_keys: dict[str, Key],
) -> None:
    key = pgp_keys[owner]
    data = {"none": PLAIN, "gzip": gzip.compress(PLAIN), "zstd": zstandard.compress(PLAIN)}[
        compress
    ]
    suffix = {"none": "", "gzip": ".gz", "zstd": ".zst"}[compress]
    (bucket / f"plain.csv{suffix}").write_bytes(data)
    message = key.gpg(
        *(["--armor"] if armor else []), "--encrypt", "-r", key.fingerprint, data=data
    )
    (bucket / f"sealed.csv{suffix}.{'asc' if armor else 'gpg'}").write_bytes(message)
    auth = "rsa" if owner == "rsa" else "partner"
    expected = imported(opened, tmp_path, bucket, f"plain.csv{suffix}", auth)
    found = imported(
        opened, tmp_path, bucket, f"sealed.csv{suffix}.{'asc' if armor else 'gpg'}", auth
    )
    assert len(expected) == len(ROWS)
    assert found == expected


def test_an_encrypted_file_without_a_pgp_name_is_recognised_by_its_packets(
    opened: Path, tmp_path: Path, bucket: Path, pgp_keys: dict[str, Key]
) -> None:
    key = pgp_keys["ed25519"]
    (bucket / "events.csv").write_bytes(key.gpg("--encrypt", "-r", key.fingerprint, data=PLAIN))
    assert len(imported(opened, tmp_path, bucket, "events.csv", "partner")) == len(ROWS)


def test_each_refusal_names_the_object_and_the_fix_and_imports_nothing(
    opened: Path, tmp_path: Path, bucket: Path, pgp_keys: dict[str, Key]
) -> None:
    ed, other = pgp_keys["ed25519"], pgp_keys["other"]
    message = ed.gpg("--encrypt", "-r", ed.fingerprint, data=PLAIN)
    legacy = ed.gpg(
        "--encrypt", "-r", ed.fingerprint, "--rfc2440", "--cipher-algo", "3DES", data=PLAIN
    )
    files = {
        "other.csv.gpg": (other.gpg("--encrypt", "-r", other.fingerprint, data=PLAIN), "partner"),
        "cut.csv.gpg": (message[: len(message) // 2], "partner"),
        "legacy.csv.gpg": (legacy, "partner"),
        "clear.csv.gpg": (PLAIN, "partner"),
        "nokey.csv.gpg": (message, "keyless"),
    }
    said = {
        "other.csv.gpg": "is encrypted to key(s)",
        "cut.csv.gpg": "is a corrupted or truncated OpenPGP message: upload it again",
        "legacy.csv.gpg": "without integrity protection (no MDC)",
        "clear.csv.gpg": "is not an OpenPGP encrypted message: import it as a plain file",
        "nokey.csv.gpg": "authorization 'keyless' has no PGP private key: add one",
    }
    for name, (data, auth) in files.items():
        (bucket / name).write_bytes(data)
        job = job_file(tmp_path, bucket, file=name, auth=auth, name="x")
        result = run(opened, "run", str(job), "-o", "json")
        record = json.loads(result.stdout)
        assert record["status"] == "failed", name
        assert name in record["error"], record["error"]
        assert said[name] in record["error"], record["error"]
        assert "Traceback" not in result.output
    assert "events" not in Store(opened).stream_names()


def test_a_wrong_passphrase_is_named(
    opened: Path, tmp_path: Path, bucket: Path, pgp_keys: dict[str, Key], monkeypatch: Any
) -> None:
    ed = pgp_keys["ed25519"]
    (bucket / "e.csv.gpg").write_bytes(ed.gpg("--encrypt", "-r", ed.fingerprint, data=PLAIN))
    monkeypatch.setenv("PGP_PASSPHRASE", "not it")
    record = run_json(opened, job_file(tmp_path, bucket, file="e.csv.gpg", auth="partner"))
    assert "passphrase of the authorization's private key is wrong" in record["error"]


def test_inspect_reads_an_encrypted_object(
    opened: Path, bucket: Path, pgp_keys: dict[str, Key]
) -> None:
    ed = pgp_keys["ed25519"]
    sealed = bucket / "e.csv.gz.gpg"
    sealed.write_bytes(ed.gpg("--encrypt", "-r", ed.fingerprint, data=gzip.compress(PLAIN)))
    result = run(opened, "inspect", str(sealed), "--auth", "partner", "-o", "json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["fields"] == ["user_id", "email", "event", "ts"]
    assert found["compression"] == "gzip"


def test_the_private_key_and_passphrase_never_reach_the_logs(
    opened: Path, tmp_path: Path, bucket: Path, pgp_keys: dict[str, Key]
) -> None:
    ed = pgp_keys["ed25519"]
    (bucket / "e.csv.gpg").write_bytes(ed.gpg("--encrypt", "-r", ed.fingerprint, data=PLAIN))
    job = job_file(tmp_path, bucket, file="e.csv.gpg", auth="partner")
    result = run(opened, "-vv", "run", str(job))
    assert result.exit_code == 0, result.output
    assert "DEBUG" in result.output  # the logs were on
    secret_body = ed.secret.decode().split("\n\n", 1)[1][:64]
    for text in (result.output, *(p.read_text(errors="replace") for p in opened.rglob("*.log"))):
        assert PASSPHRASE not in text
        assert secret_body not in text
        assert "PRIVATE KEY" not in text


def test_an_encrypted_object_in_s3_imports(
    store: Store, s3: S3Server, pgp_keys: dict[str, Key], tmp_path: Path, monkeypatch: Any
) -> None:
    import dataclasses

    ed = pgp_keys["ed25519"]
    monkeypatch.setenv("PGP_PASSPHRASE", PASSPHRASE)
    store.authorizations.add(
        dataclasses.replace(
            s3.authorization(),
            name="sealed",
            **pgp.authorization_keys([], ("ed.asc", ed.secret), Secret.from_env("PGP_PASSPHRASE")),
        )
    )
    bucket = s3.new_bucket()
    s3.put(
        bucket,
        "in/e.csv.zst.gpg",
        ed.gpg("--encrypt", "-r", ed.fingerprint, data=zstandard.compress(PLAIN)),
    )
    job = job_file(tmp_path, bucket, file="e.csv.zst.gpg", directory="in", auth="sealed")
    record = run_json(store.path, job)
    assert record["status"] == "succeeded", record.get("error")
    assert record["rows_imported"] == len(ROWS)
