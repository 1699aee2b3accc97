"""Storage over every backend: listing, stat, reading, and the errors users see."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from engine import storage
from engine.auth import AwsKeys
from engine.errors import (
    AccessDenied,
    ConfigError,
    EndpointUnreachable,
    ExpiredCredentials,
    InvalidCredentials,
    NoSuchBucket,
    NoSuchKey,
)
from engine.secrets import Secret
from tests.conftest import Backend, S3Server


def test_lists_directories_and_files_with_sizes(backend: Backend) -> None:
    backend.put("exports/events_20261101.csv", b"a,b\n1,2\n")
    backend.put("exports/events_20261102.csv", b"a,b\n1,2\n3,4\n")
    backend.put("exports/archive/old.csv", b"x\n")
    backend.put("readme.txt", b"hello")

    top = storage.list_directory(backend.url, backend.auth)
    assert top.directories == ["exports/"]
    assert [(f.name, f.size) for f in top.files] == [("readme.txt", 5)]

    exports = storage.list_directory(f"{backend.url}/exports/", backend.auth)
    assert exports.directories == ["archive/"]
    assert [(f.name, f.size) for f in exports.files] == [
        ("events_20261101.csv", 8),
        ("events_20261102.csv", 12),
    ]
    for info in exports.files:
        assert info.etag
        assert info.last_modified is not None
        assert info.last_modified.utcoffset() is not None


def test_a_prefix_without_slash_lists_the_same(backend: Backend) -> None:
    backend.put("exports/a.csv", b"1")
    with_slash = storage.list_directory(f"{backend.url}/exports/", backend.auth)
    without = storage.list_directory(f"{backend.url}/exports", backend.auth)
    assert [f.name for f in without.files] == [f.name for f in with_slash.files] == ["a.csv"]


def test_listing_a_file_shows_that_file(backend: Backend) -> None:
    backend.put("exports/a.csv", b"12345")
    listing = storage.list_directory(f"{backend.url}/exports/a.csv", backend.auth)
    assert [(f.name, f.size) for f in listing.files] == [("a.csv", 5)]


def test_stat_and_read_back(backend: Backend) -> None:
    body = b"id,name\n" + b"".join(b"%d,user%d\n" % (i, i) for i in range(10_000))
    backend.put("data/big.csv", body)
    url = f"{backend.url}/data/big.csv"
    info = storage.stat(url, backend.auth)
    assert info.size == len(body)
    assert info.name == "big.csv"
    with storage.open_input(url, backend.auth, block_size=4096) as handle:
        assert handle.read() == body


def test_etag_changes_when_the_content_changes(backend: Backend) -> None:
    backend.put("f.csv", b"one")
    first = storage.stat(f"{backend.url}/f.csv", backend.auth).etag
    backend.put("f.csv", b"two, longer")
    second = storage.stat(f"{backend.url}/f.csv", backend.auth).etag
    assert first != second


def test_missing_object_is_no_such_key(backend: Backend) -> None:
    with pytest.raises(NoSuchKey, match=r"missing\.csv"):
        storage.stat(f"{backend.url}/missing.csv", backend.auth)
    with pytest.raises(NoSuchKey, match=r"missing\.csv"):
        storage.open_input(f"{backend.url}/missing.csv", backend.auth).read()


def test_missing_bucket_names_the_bucket(s3: S3Server) -> None:
    with pytest.raises(NoSuchBucket, match="bucket 'no-such-bucket-here'") as caught:
        storage.list_directory("s3://no-such-bucket-here/dir/", s3.authorization())
    assert "authorization 'moto'" in str(caught.value)
    assert isinstance(caught.value.__cause__, Exception)


def test_wrong_secret_key_names_the_authorization(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    wrong = AwsKeys(
        name="typo",
        access_key_id=s3.admin.access_key_id,
        secret_key=Secret("not-the-secret"),
        region="us-east-1",
        endpoint_url=s3.endpoint,
    )
    with pytest.raises(InvalidCredentials, match=r"'typo'.*secret key does not match"):
        storage.list_directory(f"s3://{bucket}/", wrong)


def test_unknown_access_key_is_invalid_credentials(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    unknown = AwsKeys(
        name="stranger",
        access_key_id="AKIANOTKNOWN00000000",
        secret_key=Secret("whatever"),
        endpoint_url=s3.endpoint,
    )
    with pytest.raises(InvalidCredentials, match="access key id"):
        storage.list_directory(f"s3://{bucket}/", unknown)


def test_listing_buckets(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    names = [b.name for b in storage.list_buckets(s3.authorization())]
    assert bucket in names


def test_listing_buckets_denied_says_to_type_the_bucket(s3: S3Server) -> None:
    reader = s3.authorization("reader", s3.reader)
    with pytest.raises(AccessDenied, match=r"type the bucket name instead.*--auth reader"):
        storage.list_buckets(reader)


def test_unreachable_endpoint(unused_port: int) -> None:
    auth = AwsKeys(
        name="down",
        access_key_id="AKIAEXAMPLE000000000",
        secret_key=Secret("x"),
        endpoint_url=f"http://127.0.0.1:{unused_port}",
    )
    with pytest.raises(EndpointUnreachable, match=f"127.0.0.1:{unused_port}"):
        storage.list_directory("s3://bucket/", auth)


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _client_error(code: str, operation: str = "ListObjectsV2") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} message"}}, operation)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("NoSuchBucket", NoSuchBucket),
        ("NoSuchKey", NoSuchKey),
        ("AccessDenied", AccessDenied),
        ("InvalidAccessKeyId", InvalidCredentials),
        ("SignatureDoesNotMatch", InvalidCredentials),
        ("ExpiredToken", ExpiredCredentials),
    ],
)
def test_aws_errors_are_translated_with_their_cause(code: str, expected: type[Exception]) -> None:
    original = _client_error(code)
    # s3fs wraps a ClientError in an OSError; the translation looks through the chain.
    wrapped = OSError("wrapped")
    wrapped.__cause__ = original
    location = storage.parse_url("s3://bucket/key.csv")
    with pytest.raises(expected) as caught, storage._translating(None, "read", location=location):
        raise wrapped
    assert caught.value.__cause__ is wrapped


def test_endpoint_connection_error_is_transient() -> None:
    from engine.errors import TransientError

    with pytest.raises(TransientError), storage._translating(None, "read"):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")


@pytest.mark.parametrize(
    ("url", "scheme", "bucket", "key"),
    [
        ("s3://bucket/a/b.csv", "s3", "bucket", "a/b.csv"),
        ("s3://bucket", "s3", "bucket", ""),
        ("memory://x/y", "memory", "", "/x/y"),
    ],
)
def test_parse_url(url: str, scheme: str, bucket: str, key: str) -> None:
    location = storage.parse_url(url)
    assert (location.scheme, location.bucket, location.key) == (scheme, bucket, key)


def test_parse_url_local_paths(tmp_path: object) -> None:
    assert storage.parse_url(f"file://{tmp_path}").key == str(tmp_path)
    assert storage.parse_url(str(tmp_path)).key == str(tmp_path)


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="gs://"):
        storage.parse_url("gs://bucket/key")


def test_s3_without_authorization_says_what_to_pass() -> None:
    with pytest.raises(ConfigError, match="--auth NAME"):
        storage.list_directory("s3://bucket/")


def test_delegated_role_is_assumed_through_sts(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import boto3

    from engine.auth import DelegatedRole

    iam = boto3.client(
        "iam",
        endpoint_url=s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id=s3.admin.access_key_id,
        aws_secret_access_key=s3.admin.secret_key,
    )
    role = iam.create_role(
        RoleName="lakeport-reader",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
                ],
            }
        ),
    )["Role"]
    iam.put_role_policy(
        RoleName="lakeport-reader",
        PolicyName="read",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    iam.close()
    bucket = s3.new_bucket()
    s3.put(bucket, "in/a.csv", b"abc")
    # lakeport's own identity, found by the default chain, is what asks STS for the role.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.admin.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.admin.secret_key)
    auth = DelegatedRole(
        name="customer", role_arn=role["Arn"], region="us-east-1", endpoint_url=s3.endpoint
    )
    listing = storage.list_directory(f"s3://{bucket}/in/", auth)
    assert [(f.name, f.size) for f in listing.files] == [("a.csv", 3)]


def test_default_chain_without_credentials_says_where_it_looked(s3: S3Server) -> None:
    from engine.auth import DefaultChain

    auth = DefaultChain(name="chain", region="us-east-1", endpoint_url=s3.endpoint)
    with pytest.raises(InvalidCredentials, match="'chain' found no AWS credentials"):
        storage.list_directory("s3://some-bucket/", auth)


def test_delegated_role_without_sts_permission(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.auth import DelegatedRole

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.reader.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.reader.secret_key)
    auth = DelegatedRole(
        name="customer",
        role_arn="arn:aws:iam::123456789012:role/not-allowed",
        external_id="lakeport-test-external-id",
        region="us-east-1",
        endpoint_url=s3.endpoint,
    )
    with pytest.raises(AccessDenied, match=r"STS refused.*external id lakeport-test-external-id"):
        storage.list_directory("s3://some-bucket/", auth)


class _BrokenOnceBody:
    def __init__(self, data: bytes, break_at: int | None) -> None:
        self.data, self.position, self.break_at = data, 0, break_at

    async def read(self, n: int) -> bytes:
        if self.break_at is not None and self.position >= self.break_at:
            self.break_at = None
            raise ConnectionResetError("connection reset by peer")
        chunk = self.data[self.position : self.position + n]
        self.position += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class _FakeS3:
    def __init__(self, data: bytes) -> None:
        from fsspec.asyn import get_loop

        self.loop = get_loop()
        self.data = data
        self.requests: list[dict[str, str]] = []

    def call_s3(self, operation: str, **request: str) -> dict[str, object]:
        self.requests.append(request)
        start = int(request["Range"][6:-1]) if "Range" in request else 0
        body = _BrokenOnceBody(self.data[start:], 1000 if start == 0 else None)
        answer: dict[str, object] = {
            "Body": body,
            "ETag": '"abc"',
            "ContentLength": len(self.data) - start,
        }
        if "Range" in request:
            answer["ContentRange"] = f"bytes {start}-{len(self.data) - 1}/{len(self.data)}"
        return answer


def test_an_s3_read_resumes_where_the_connection_broke() -> None:
    data = bytes(range(256)) * 40
    fake = _FakeS3(data)
    stream = storage._S3Stream(fake, storage.parse_url("s3://b/k.csv"), None)
    stream.start()
    got = b"".join(iter(lambda: stream.read(300), b""))
    assert got == data
    assert fake.requests[1] == {
        "Bucket": "b",
        "Key": "k.csv",
        "Range": "bytes=1200-",
        "IfMatch": '"abc"',
    }
