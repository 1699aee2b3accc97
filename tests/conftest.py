"""Shared fixtures: an isolated environment, a store, and a real S3 server (moto) on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from engine.auth import AwsKeys
from engine.secrets import Secret
from engine.store import Store
from tests.faults import FaultProxy

# The public corpora live in shared/ beside the clone (as in CI), or where LAKEPORT_CORPORA says.
CORPORA = Path(
    os.environ.get("LAKEPORT_CORPORA") or Path(__file__).parents[2] / "shared" / "corpora"
)
REQUIRE_CORPORA = "LAKEPORT_REQUIRE_CORPORA"
"""Set (by CI, which has the corpora): their tests run, and fail if the corpora are missing."""
needs_corpora = pytest.mark.skipif(
    not CORPORA.is_dir() and not os.environ.get(REQUIRE_CORPORA),
    reason=f"the public corpora are not at {CORPORA}: put shared/corpora beside the clone, or "
    f"set LAKEPORT_CORPORA (set {REQUIRE_CORPORA}=1 to fail instead of skipping)",
)
REGION = "us-east-1"
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
# Reads one bucket but may not list buckets: for the ListBuckets access-denied message.
READER_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"], "Resource": "*"}
    ],
}


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Keep tests away from the user's home, AWS config and environment credentials."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith(("AWS_", "LAKEPORT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_key: str


@dataclass
class S3Server:
    """The moto server, with IAM authentication on: wrong keys are refused as by AWS."""

    endpoint: str
    admin: Keys
    reader: Keys
    _clients: dict[Keys, Any] = field(default_factory=dict)

    def client(self, keys: Keys | None = None) -> Any:
        keys = keys or self.admin
        if keys in self._clients:
            return self._clients[keys]
        self._clients[keys] = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_key,
        )
        return self._clients[keys]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=body)

    def authorization(self, name: str = "moto", keys: Keys | None = None) -> AwsKeys:
        keys = keys or self.admin
        return AwsKeys(
            name=name,
            access_key_id=keys.access_key_id,
            secret_key=Secret(keys.secret_key),
            region=REGION,
            endpoint_url=self.endpoint,
        )


def _iam_user(iam: Any, name: str, policy: dict[str, Any]) -> Keys:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Keys(key["AccessKeyId"], key["SecretAccessKey"])


def _reset_auth(endpoint: str, after_requests: bytes) -> None:
    """Tell moto after how many more requests it starts checking signatures and policies."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=after_requests,
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    # The server's request log is noise in every test's captured output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    # Bind to port 0 so the OS assigns a free ephemeral port; a fixed port collides when two
    # test runs share the machine.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="AKIABOOTSTRAP0000000",
        aws_secret_access_key="bootstrap",
    )
    admin = _iam_user(iam, "admin", ADMIN_POLICY)
    reader = _iam_user(iam, "reader", READER_POLICY)
    iam.close()
    # From here on every request must be signed by a known key with the right secret.
    _reset_auth(endpoint, b"0")
    server_handle = S3Server(endpoint, admin, reader)
    try:
        yield server_handle
    finally:
        server_handle.close()
        _reset_auth(endpoint, b"inf")
        server.stop()


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the S3 server (see tests/faults.py)."""
    found = FaultProxy(s3.endpoint)
    found.start()
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture
def s3_auth(store: Store, s3: S3Server) -> AwsKeys:
    """An authorization for the moto server, saved in the test store as 'moto'."""
    added = store.authorizations.add(s3.authorization())
    assert isinstance(added, AwsKeys)
    return added


@dataclass
class Backend:
    """An empty folder on one storage backend, with a way to put files into it directly."""

    name: str
    url: str
    auth: AwsKeys | None
    put: Callable[[str, bytes], None]


@pytest.fixture(params=["file", "memory", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The same test over a local folder, memory:// and the S3 server."""
    unique = uuid.uuid4().hex[:12]
    if request.param == "file":
        root = tmp_path / "bucket"
        root.mkdir()

        def put_file(key: str, body: bytes) -> None:
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)

        yield Backend("file", str(root), None, put_file)
    elif request.param == "memory":
        import fsspec

        memory = fsspec.filesystem("memory")
        memory.mkdir(f"/{unique}")

        def put_memory(key: str, body: bytes) -> None:
            memory.pipe(f"/{unique}/{key}", body)

        yield Backend("memory", f"memory://{unique}", None, put_memory)
        memory.rm(f"/{unique}", recursive=True)
    else:
        s3: S3Server = request.getfixturevalue("s3")
        bucket = s3.new_bucket()
        yield Backend("s3", f"s3://{bucket}", s3.authorization(), lambda k, b: s3.put(bucket, k, b))


@pytest.fixture
def bucket(tmp_path: Path) -> Path:
    """A local folder that jobs import from."""
    folder = tmp_path / "bucket" / "exports"
    folder.mkdir(parents=True)
    return folder


def imported_rows(*files: list[Any], diff: bool) -> Counter[Any]:
    """What a stream must hold after importing `files` in order, as a multiset: every row of
    each, or with the diff, the rows of each that the one before did not have."""
    total: Counter[Any] = Counter()
    previous: Counter[Any] = Counter()
    for rows in files:
        now = Counter(rows)
        total += (now - previous) if diff else now
        previous = now
    return total


@pytest.fixture(scope="session")
def pgp_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """OpenPGP keys made by gpg (tests/pgp_keys.py): RSA, Ed25519/Curve25519, and another."""
    from tests.pgp_keys import make_key

    root = tmp_path_factory.mktemp("gpg")
    return {
        "rsa": make_key(root / "rsa", "Rsa <rsa@example.com>", "rsa2048", "rsa2048"),
        "ed25519": make_key(root / "ed", "Ed <ed@example.com>", "ed25519", "cv25519"),
        "other": make_key(root / "other", "Other <o@example.com>", "ed25519", "cv25519"),
    }
