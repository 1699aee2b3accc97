"""Authorizations with OpenPGP keys, and exports encrypted to them: `gpg -d` by each recipient
gives back the plain export's bytes, in every format and for the event export; the manifest
records what is in the bucket; the keys are checked on adding and stay secret."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner

from engine import pgp
from engine.auth import DefaultChain
from engine.secrets import Secret
from engine.store import Source, Store
from pipelines import jobs
from pipelines.cli import cli
from pipelines.runs import RunRecord
from tests.conftest import S3Server
from tests.pgp_keys import PASSPHRASE, Key, make_key
from tests.test_audience_export import profiled, profiles_table


def lakeport(store: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--store", str(store), *args])


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.fixture
def sample(tmp_path: Path) -> Store:
    rows = [
        {
            "name": f"user {i} ={i}",
            "score": i / 3,
            "visits": i,
            "active": i % 2 == 0,
            "tags": [f"t{i % 3}", "x&y"],
            "attributes": [("tier", "gold" if i % 2 else "silver")],
        }
        for i in range(200)
    ]
    return profiled(tmp_path, profiles_table(rows))


def sealed(store: Store, keys: dict[str, Key], name: str = "sealed") -> None:
    """An authorization (the default chain: the exports here go to local folders) whose
    exports are encrypted to the RSA and the Ed25519 key."""
    store.authorizations.add(
        DefaultChain(
            name=name,
            **pgp.authorization_keys(
                [("rsa.asc", keys["rsa"].public), ("ed.gpg", keys["ed25519"].public_binary)],
                None,
                None,
            ),
        )
    )


def export(store: Store, bucket: Path, auth: str | None = None, **values: Any) -> RunRecord:
    fields = {
        "name": "export",
        "type": "audience-export",
        "audience": "everyone",
        "bucket": str(bucket),
        "filename": "audience",
        **({"auth": auth} if auth else {}),
        **values,
    }
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())
    record = jobs.run(store, jobs.load(text, "export.toml"))
    assert not record.failed, record.error
    return record


def data_files(bucket: Path, record: RunRecord) -> list[Path]:
    assert record.files is not None
    return [bucket / key for key in record.files[:-1]]


def test_auth_add_checks_the_keys_shows_them_and_keeps_them_secret(
    tmp_path: Path, pgp_keys: dict[str, Key]
) -> None:
    rsa, ed = pgp_keys["rsa"], pgp_keys["ed25519"]
    store = tmp_path / "store"
    passphrase = write(tmp_path, "passphrase", PASSPHRASE.encode() + b"\n")
    added = lakeport(
        store,
        "auth",
        "add",
        "partner",
        "--default-chain",
        "--pgp-public-key",
        str(write(tmp_path, "rsa.asc", rsa.public)),
        "--pgp-public-key",
        str(write(tmp_path, "ed.gpg", ed.public_binary)),
        "--pgp-private-key",
        str(write(tmp_path, "ed-secret.asc", ed.secret)),
        "--pgp-passphrase-file",
        str(passphrase),
    )
    assert added.exit_code == 0, added.output
    assert f"exports are encrypted to {rsa.fingerprint}, {ed.fingerprint}" in added.output
    assert f"encrypted imports are decrypted with {ed.fingerprint}" in added.output

    shown = lakeport(store, "auth", "show", "partner", "-o", "json")
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert document["pgp_recipients"] == [rsa.fingerprint, ed.fingerprint]
    assert [(k["use"], k["fingerprint"], k["algorithm"]) for k in document["pgp_keys"]] == [
        ("encrypts exports", rsa.fingerprint, "RSA 2048"),
        ("encrypts exports", ed.fingerprint, "EdDSA (ed25519)"),
        ("decrypts imports", ed.fingerprint, "EdDSA (ed25519)"),
    ]
    assert document["pgp_keys"][0]["user_ids"] == ["Rsa <rsa@example.com>"]
    assert document["pgp_keys"][0]["expires"] is None
    assert document["pgp_private_key"] == "stored"
    assert document["pgp_passphrase"] == "stored"
    text = lakeport(store, "auth", "show", "partner")
    lines = [" ".join(line.split()) for line in text.output.splitlines()]
    assert lines[-4:] == [
        f"pgp key (decrypts imports) {ed.fingerprint}",
        "algorithm EdDSA (ed25519)",
        "user id Ed <ed@example.com>",
        "expires never",
    ]

    # The key material and the passphrase are in the secrets file only.
    secret_text = ed.secret.decode().split("\n\n", 1)[1][:64]
    for path in store.rglob("*"):
        if path.is_file() and path.name != "secrets.json":
            data = path.read_bytes()
            assert PASSPHRASE.encode() not in data, path
            assert secret_text.encode() not in data, path
    for output in (added.output, shown.output, text.output):
        assert PASSPHRASE not in output
        assert "PRIVATE KEY" not in output
    rows = sqlite3.connect(store / "state.db").execute("SELECT * FROM authorizations").fetchall()
    assert "BEGIN PGP" not in repr(rows)


def test_auth_add_refuses_keys_it_cannot_use_and_says_why(
    tmp_path: Path, pgp_keys: dict[str, Key]
) -> None:
    store = tmp_path / "store"
    ed = pgp_keys["ed25519"]
    secret = str(write(tmp_path, "secret.asc", ed.secret))
    signing = make_key(tmp_path / "sign", "Sign <s@example.com>", "ed25519", None)
    cases = {
        "holds a private key: give the public key": ["--pgp-public-key", secret],
        "can only sign, not encrypt": [
            "--pgp-public-key",
            str(write(tmp_path, "sign.asc", signing.public)),
        ],
        "no OpenPGP key could be read": [
            "--pgp-public-key",
            str(write(tmp_path, "text.asc", b"not a key\n")),
        ],
        "is protected by a passphrase: give it with --pgp-passphrase-env": [
            "--pgp-private-key",
            secret,
        ],
        "the passphrase of the authorization's private key is wrong": [
            "--pgp-private-key",
            secret,
            "--pgp-passphrase-file",
            str(write(tmp_path, "wrong", b"wrong horse")),
        ],
        "holds no private keys": [
            "--pgp-private-key",
            str(write(tmp_path, "public.asc", ed.public)),
        ],
        "a PGP passphrase option only goes with --pgp-private-key": [
            "--pgp-passphrase-env",
            "PASS",
        ],
    }
    for said, options in cases.items():
        result = lakeport(store, "auth", "add", "partner", "--default-chain", *options)
        assert result.exit_code != 0, said
        assert said in result.output, result.output
        assert "Traceback" not in result.output
    listed = lakeport(store, "auth", "list", "-o", "json")
    assert json.loads(listed.stdout) == []  # nothing was added by a refused command


@pytest.mark.parametrize(
    ("format", "compress"),
    [
        ("csv", "none"),
        ("csv", "gzip"),
        ("csv", "zstd"),
        ("multi-csv", "zstd"),
        ("json", "gzip"),
        ("parquet", "zstd"),
    ],
)
def test_each_format_encrypted_is_the_plain_export_for_each_recipient(
    format: str, compress: str, sample: Store, tmp_path: Path, pgp_keys: dict[str, Key]
) -> None:
    sealed(sample, pgp_keys)
    plain_run = export(sample, tmp_path / "plain", format=format, compress=compress)
    sealed_run = export(sample, tmp_path / "sealed", "sealed", format=format, compress=compress)
    plain_files = data_files(tmp_path / "plain", plain_run)
    sealed_files = data_files(tmp_path / "sealed", sealed_run)
    assert [p.name + ".gpg" for p in plain_files] == [p.name for p in sealed_files]
    if compress != "none" and format != "parquet":
        assert all(p.name.endswith((".gz.gpg", ".zst.gpg")) for p in sealed_files)
    for clear, secret in zip(plain_files, sealed_files, strict=True):
        message = secret.read_bytes()
        assert pgp.looks_encrypted(message[:8])
        assert clear.read_bytes() not in message
        for owner in ("rsa", "ed25519"):
            assert pgp_keys[owner].gpg("--decrypt", data=message) == clear.read_bytes()
    assert sealed_run.files is not None
    document = json.loads((tmp_path / "sealed" / sealed_run.files[-1]).read_text())
    assert document["encryption"]["recipients"] == [
        pgp_keys["rsa"].fingerprint,
        pgp_keys["ed25519"].fingerprint,
    ]
    for listed, secret in zip(document["files"], sealed_files, strict=True):
        assert listed["key"] == secret.name
        assert listed["sha256"] == hashlib.sha256(secret.read_bytes()).hexdigest()
        assert listed["bytes"] == secret.stat().st_size
    assert sealed_run.bytes == sum(p.stat().st_size for p in sealed_files)


def test_encrypted_parts_stay_under_max_file_size(tmp_path: Path, pgp_keys: dict[str, Key]) -> None:
    rows = [{"name": f"{i:08d}" * 8, "visits": i} for i in range(40_000)]
    store = profiled(tmp_path, profiles_table(rows))
    sealed(store, pgp_keys)
    record = export(store, tmp_path / "out", "sealed", max_file_size="1MiB", fields=["name"])
    parts = data_files(tmp_path / "out", record)
    assert len(parts) >= 3
    assert all(p.stat().st_size <= 1 << 20 for p in parts), [p.stat().st_size for p in parts]
    lines = b"".join(pgp_keys["ed25519"].gpg("--decrypt", data=p.read_bytes()) for p in parts)
    assert lines.count(b"\n") == 40_000 + len(parts)  # each part starts with the header


def test_a_failed_encrypted_export_leaves_nothing_and_says_why(
    sample: Store, tmp_path: Path, pgp_keys: dict[str, Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.errors import StorageError
    from engine.storage import folders

    sealed(sample, pgp_keys)

    def broken(self: Any, data: Any) -> int:
        raise StorageError("the disk is full")

    monkeypatch.setattr(folders._LocalFile, "write", broken)
    for format in ("csv", "parquet"):
        bucket = tmp_path / format
        text = (
            f'name = "x"\ntype = "audience-export"\naudience = "everyone"\n'
            f'bucket = "{bucket}"\nauth = "sealed"\nformat = "{format}"\n'
        )
        record = jobs.run(sample, jobs.load(text, "x.toml"))
        assert record.failed
        assert record.error == "the disk is full"
        assert [p for p in bucket.rglob("*") if p.is_file()] == []


def test_stored_keys_that_are_not_the_ones_added_are_refused(
    sample: Store, tmp_path: Path, pgp_keys: dict[str, Key]
) -> None:
    """The fingerprints are pinned: a secrets file whose keys were swapped encrypts nothing."""
    sealed(sample, pgp_keys)
    entries = json.loads(sample.secrets.path.read_text())
    swapped = pgp.authorization_keys([("o.asc", pgp_keys["other"].public)], None, None)
    (key,) = [k for k, v in entries.items() if v.startswith('["')]
    entries[key] = swapped["pgp_public_keys"].reveal()
    sample.secrets.path.write_text(json.dumps(entries))
    text = (
        f'name = "x"\ntype = "audience-export"\naudience = "everyone"\n'
        f'bucket = "{tmp_path / "out"}"\nauth = "sealed"\n'
    )
    record = jobs.run(sample, jobs.load(text, "x.toml"))
    assert record.failed
    assert "are not the ones it was added with" in (record.error or "")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_an_event_export_to_s3_is_encrypted(
    store: Store, s3: S3Server, pgp_keys: dict[str, Key]
) -> None:
    rsa = pgp_keys["rsa"]
    base = s3.authorization()
    store.authorizations.add(base)
    store.authorizations.add(
        dataclasses.replace(
            base,
            name="sealed",
            **pgp.authorization_keys([("rsa.asc", rsa.public)], None, None),
        )
    )
    store.append(
        "clicks",
        [pa.record_batch({"user": ["a", "b", "c"], "page": ["/", "/x", "/y"]})],
        source=Source("k1", "k1"),
        job="load",
    )
    bucket = s3.new_bucket()
    found = {}
    for auth in ("moto", "sealed"):
        text = (
            f'name = "events-{auth}"\ntype = "event-export"\nbucket = "{bucket}"\n'
            f'directory = "{auth}"\nauth = "{auth}"\ncompress = "zstd"\n'
            'filename = "events"\n'  # the same names in both runs, whatever the second
        )
        record = jobs.run(store, jobs.load(text, "e.toml"))
        assert not record.failed, record.error
        assert record.files is not None
        client = s3.client()
        found[auth] = {
            key.rsplit("/", 1)[1]: client.get_object(Bucket=bucket, Key=key)["Body"].read()
            for key in record.files
        }
    plain_key = next(k for k in found["moto"] if k.endswith(".csv.zst"))
    assert (
        rsa.gpg("--decrypt", data=found["sealed"][plain_key + ".gpg"]) == (found["moto"][plain_key])
    )
    manifest = json.loads(next(v for k, v in found["sealed"].items() if k.endswith(".json")))
    assert manifest["encryption"]["recipients"] == [rsa.fingerprint]
    assert manifest["files"][0]["sha256"] == (
        hashlib.sha256(found["sealed"][plain_key + ".gpg"]).hexdigest()
    )


def test_a_secret_in_a_pgp_field_never_prints() -> None:
    fields = pgp.authorization_keys([], None, None)
    assert fields == {}
    auth = DefaultChain(name="x", pgp_passphrase=Secret("a very secret phrase"))
    assert "a very secret phrase" not in repr(auth)
    assert "a very secret phrase" not in json.dumps(auth.describe())
