"""Secrets never print themselves, live in a private file, and a readable file is refused."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest

from engine.auth import AwsKeys, DelegatedRole
from engine.errors import ConfigError, SecretError
from engine.secrets import Secret, SecretsFile, redact
from engine.store import Store


def test_a_secret_never_shows_its_value() -> None:
    secret = Secret("hunter2-very-secret")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret}"
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    keys = AwsKeys(name="a", access_key_id="AKIA00000000", secret_key=secret)
    assert "hunter2" not in repr(keys)
    assert secret.reveal() == "hunter2-very-secret"
    assert redact("token=hunter2-very-secret;") == "token=***;"


def test_env_reference_is_read_at_use(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = Secret.from_env("MY_SECRET_KEY")
    assert secret.describe() == "env:MY_SECRET_KEY"
    with pytest.raises(SecretError, match="MY_SECRET_KEY is not set"):
        secret.reveal()
    monkeypatch.setenv("MY_SECRET_KEY", "from-env")
    assert secret.reveal() == "from-env"


def test_secrets_file_is_private(tmp_path: Path) -> None:
    secrets = SecretsFile(tmp_path / "secrets")
    stored = secrets.put(Secret("s3cr3t-value"))
    assert stored.describe() == "stored"
    assert stat.S_IMODE(secrets.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(secrets.path.stat().st_mode) == 0o600
    assert secrets.load(stored.ref or "").reveal() == "s3cr3t-value"


@pytest.mark.parametrize(("target", "mode"), [("file", 0o644), ("file", 0o640), ("folder", 0o755)])
def test_a_secrets_file_others_can_read_is_refused(tmp_path: Path, target: str, mode: int) -> None:
    secrets = SecretsFile(tmp_path / "secrets")
    stored = secrets.put(Secret("s3cr3t-value"))
    os.chmod(secrets.path if target == "file" else secrets.folder, mode)
    with pytest.raises(SecretError, match=r"can be read by group or others.*chmod (600|700)"):
        secrets.load(stored.ref or "").reveal()


def test_authorization_round_trip_keeps_only_references(store: Store) -> None:
    store.authorizations.add(
        AwsKeys(name="prod", access_key_id="AKIAPROD0000", secret_key=Secret("prod-secret-1"))
    )
    loaded = store.authorizations.get("prod")
    assert isinstance(loaded, AwsKeys)
    assert loaded.secret_key.reveal() == "prod-secret-1"
    assert b"prod-secret-1" not in (store.path / "state.db").read_bytes()


def test_removing_an_authorization_removes_its_stored_secret(store: Store) -> None:
    store.authorizations.add(
        AwsKeys(name="prod", access_key_id="AKIAPROD0000", secret_key=Secret("prod-secret-2"))
    )
    store.authorizations.remove("prod")
    assert "prod-secret-2" not in store.secrets.path.read_text()
    with pytest.raises(ConfigError, match="no authorization named 'prod'"):
        store.authorizations.get("prod")


def test_duplicate_authorization_names_are_refused(store: Store) -> None:
    keys = AwsKeys(name="prod", access_key_id="AKIAPROD0000", secret_key=Secret("x"))
    store.authorizations.add(keys)
    with pytest.raises(ConfigError, match="exists already"):
        store.authorizations.add(keys)


def test_delegated_role_gets_its_own_external_id(store: Store) -> None:
    arn = "arn:aws:iam::123456789012:role/lakeport"
    first = store.authorizations.add(DelegatedRole(name="r1", role_arn=arn))
    second = store.authorizations.add(DelegatedRole(name="r2", role_arn=arn))
    assert isinstance(first, DelegatedRole)
    assert isinstance(second, DelegatedRole)
    assert first.external_id != second.external_id
    assert store.authorizations.get("r1") == first


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DelegatedRole(name="r", role_arn="not-an-arn"), "not an IAM role ARN"),
        (
            lambda: AwsKeys(name="bad name", access_key_id="AKIA0000", secret_key=Secret("x")),
            "not a valid authorization name",
        ),
        (
            lambda: AwsKeys(name="a", access_key_id="AKIA 0", secret_key=Secret("x")),
            "not an AWS access key id",
        ),
        (
            lambda: AwsKeys(
                name="a",
                access_key_id="AKIA0000",
                secret_key=Secret("x"),
                endpoint_url="127.0.0.1:9000",
            ),
            "not an http",
        ),
    ],
)
def test_invalid_authorizations(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()  # type: ignore[operator]


def test_redaction_ignores_values_too_short_to_be_credentials() -> None:
    Secret("x").reveal()
    Secret("a-real-looking-secret-value").reveal()
    assert redact("exports/x.csv with a-real-looking-secret-value") == "exports/x.csv with ***"
