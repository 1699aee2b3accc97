"""Storage: URLs and authorizations in, fsspec filesystems and listings out.

This is the only module that imports s3fs or botocore. It turns a URL (`s3://bucket/key`,
`file:///path`, a plain path, `memory://path`) and an `Authorization` into a filesystem, lists
buckets, directories and files, and translates every AWS or OS error into a lakeport error that
names the bucket, key or authorization, with the original kept as `__cause__`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal, cast
from urllib.parse import urlparse

import fsspec
from fsspec.spec import AbstractFileSystem

from engine.auth import Authorization, AwsKeys, DefaultChain, DelegatedRole
from engine.errors import (
    AccessDenied,
    ConfigError,
    EndpointUnreachable,
    ExpiredCredentials,
    InvalidCredentials,
    LakeportError,
    NoSuchBucket,
    NoSuchKey,
    StorageError,
)

Scheme = Literal["s3", "file", "memory"]

# botocore logs signed request headers (session tokens included) at DEBUG: keep the AWS client
# loggers at INFO however verbose the caller's logging is.
logger = logging.getLogger(__name__)

_CHATTY_LOGGERS = ("botocore", "boto3", "s3transfer", "aiobotocore", "urllib3", "s3fs")


def quiet_client_loggers() -> None:
    """Keep the AWS client loggers at INFO or above, so no signed header is ever logged."""
    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


quiet_client_loggers()


@dataclass(frozen=True)
class Location:
    """A parsed storage URL."""

    scheme: Scheme
    bucket: str
    """The S3 bucket; empty for local folders and memory."""
    key: str
    """The key inside the bucket, or the path for local folders and memory."""

    @property
    def url(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key}" if self.bucket else "s3://"
        if self.scheme == "memory":
            return f"memory://{self.key}"
        return self.key

    @property
    def fs_path(self) -> str:
        """The path the fsspec filesystem takes."""
        if self.scheme == "s3":
            return f"{self.bucket}/{self.key}".rstrip("/")
        return self.key

    def child(self, name: str) -> Location:
        base = self.key if not self.key or self.key.endswith("/") else self.key + "/"
        return Location(self.scheme, self.bucket, base + name)


def parse_url(url: str) -> Location:
    """Parse `s3://bucket/key`, `file:///path`, `memory://path` or a plain local path."""
    parsed = urlparse(url)
    if parsed.scheme in ("s3", "s3a"):
        if not parsed.netloc and parsed.path not in ("", "/"):
            raise ConfigError(f"'{url}' has no bucket: write s3://BUCKET/KEY")
        return Location("s3", parsed.netloc, parsed.path.lstrip("/"))
    if parsed.scheme == "memory":
        return Location("memory", "", "/" + (parsed.netloc + parsed.path).lstrip("/"))
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"'{url}' names a remote host: file:// URLs must be local")
        return Location("file", "", str(Path(parsed.path).resolve()))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive
        raise ConfigError(
            f"'{url}': lakeport reads s3://, file://, memory:// URLs and local paths, "
            f"not {parsed.scheme}://"
        )
    return Location("file", "", str(Path(url).expanduser().resolve()))


@dataclass(frozen=True)
class FileInfo:
    """An object in a bucket or a file in a folder."""

    url: str
    name: str
    """The last part of the key: what a file-name pattern is matched against."""
    size: int
    last_modified: datetime | None
    etag: str | None
    """S3's ETag; for local and memory files a version made of size and modification time."""


@dataclass(frozen=True)
class Listing:
    """What one level of a bucket or folder holds."""

    url: str
    directories: list[str]
    files: list[FileInfo]


@dataclass(frozen=True)
class BucketInfo:
    name: str
    created: datetime | None


# Filesystems


def filesystem(location: Location, auth: Authorization | None = None) -> AbstractFileSystem:
    """The fsspec filesystem for a location, logged in with `auth` for S3."""
    if location.scheme == "s3":
        if auth is None:
            raise ConfigError(
                f"{location.url} is in S3 and needs an authorization: pass --auth NAME "
                "(see `lakeport auth add`)"
            )
        return _s3_filesystem(auth)
    return fsspec.filesystem(location.scheme)


def _s3_filesystem(auth: Authorization) -> AbstractFileSystem:
    import s3fs

    client_kwargs: dict[str, Any] = {}
    if auth.region:
        client_kwargs["region_name"] = auth.region
    if auth.endpoint_url:
        client_kwargs["endpoint_url"] = auth.endpoint_url
    options: dict[str, Any] = {
        "client_kwargs": client_kwargs,
        "config_kwargs": {
            "connect_timeout": 10,
            "read_timeout": 120,
            "retries": {"max_attempts": 3, "mode": "standard"},
        },
        # Listings must be fresh: a job that polls a bucket for new files cannot use a cache.
        # (fsspec still reuses one filesystem, and its connections, per set of credentials.)
        "use_listings_cache": False,
    }
    with _translating(auth, "log in"):
        options.update(_credentials(auth))
    return s3fs.S3FileSystem(**options)


def table_options(location: Location, auth: Authorization | None) -> dict[str, str]:
    """Storage options for Delta Lake (deltalake, polars) to reach a table at `location`.

    They hold credentials: pass them to the table library and nowhere else.
    """
    if location.scheme == "file":
        return {}
    if location.scheme != "s3":
        raise ConfigError(
            f"Delta tables cannot live at {location.url}: use a local folder or s3://BUCKET/PREFIX"
        )
    auth = _require_bucket(location, auth)
    options: dict[str, str] = {}
    if auth.region:
        options["AWS_REGION"] = auth.region
    if auth.endpoint_url:
        options["AWS_ENDPOINT_URL"] = auth.endpoint_url
        if auth.endpoint_url.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    with _translating(auth, "log in"):
        creds = _credentials(auth)
    if "key" in creds:
        options["AWS_ACCESS_KEY_ID"] = creds["key"]
        options["AWS_SECRET_ACCESS_KEY"] = creds["secret"]
        if creds.get("token"):
            options["AWS_SESSION_TOKEN"] = creds["token"]
    return options


def _credentials(auth: Authorization) -> dict[str, Any]:
    match auth:
        case AwsKeys():
            creds = {"key": auth.access_key_id, "secret": auth.secret_key.reveal()}
            if auth.session_token is not None:
                creds["token"] = auth.session_token.reveal()
            return creds
        case DefaultChain():
            return {"anon": False}
        case DelegatedRole():
            return _assume_role(auth)
    raise ConfigError(f"authorization '{auth.name}' has an unknown kind '{auth.kind}'")


_ROLE_SESSIONS: dict[tuple[str, str, str | None], tuple[dict[str, Any], datetime]] = {}
_ROLE_REFRESH_MARGIN = timedelta(minutes=5)


def _assume_role(auth: DelegatedRole) -> dict[str, Any]:
    """Short-lived keys for the role, asked of STS with lakeport's own (default-chain) identity.

    The keys are reused until five minutes before they expire.
    """
    import botocore.session

    cache_key = (auth.role_arn, auth.external_id, auth.endpoint_url)
    cached = _ROLE_SESSIONS.get(cache_key)
    if cached is not None and cached[1] - _ROLE_REFRESH_MARGIN > datetime.now(UTC):
        return cached[0]

    sts = botocore.session.get_session().create_client(
        "sts", region_name=auth.region or "us-east-1", endpoint_url=auth.endpoint_url
    )
    answer = sts.assume_role(
        RoleArn=auth.role_arn,
        RoleSessionName=f"lakeport-{auth.name}"[:64],
        ExternalId=auth.external_id,
        DurationSeconds=auth.session_seconds,
    )
    creds = answer["Credentials"]
    keys = {
        "key": creds["AccessKeyId"],
        "secret": creds["SecretAccessKey"],
        "token": creds["SessionToken"],
    }
    _ROLE_SESSIONS[cache_key] = (keys, _utc(creds.get("Expiration")) or datetime.now(UTC))
    return keys


# Listing


def list_buckets(auth: Authorization) -> list[BucketInfo]:
    """The buckets these credentials may list (needs s3:ListAllMyBuckets)."""
    logger.debug("listing buckets (authorization %s)", auth.name)
    fs = _s3_filesystem(auth)
    with _translating(auth, "list buckets", listing_buckets=True):
        answer = fs.call_s3("list_buckets")
    return [
        BucketInfo(bucket["Name"], _utc(bucket.get("CreationDate")))
        for bucket in answer.get("Buckets", [])
    ]


def list_directory(url: str, auth: Authorization | None = None) -> Listing:
    """The directories and files one level under `url` (a bucket, prefix or folder)."""
    location = parse_url(url)
    logger.debug("listing %s (authorization %s)", location.url, auth.name if auth else "none")
    if location.scheme == "s3":
        return _list_s3(location, _require_bucket(location, auth))
    fs = filesystem(location)
    with _translating(auth, "list", location=location):
        if not fs.exists(location.fs_path):
            raise FileNotFoundError(location.fs_path)
        if not fs.isdir(location.fs_path):
            return Listing(
                location.url, [], [_local_info(location.scheme, fs.info(location.fs_path))]
            )
        entries = fs.ls(location.fs_path, detail=True)
    directories = sorted(
        _basename(entry["name"]) + "/" for entry in entries if entry["type"] == "directory"
    )
    files = sorted(
        (_local_info(location.scheme, entry) for entry in entries if entry["type"] == "file"),
        key=lambda info: info.name,
    )
    return Listing(location.url, directories, files)


def _require_bucket(location: Location, auth: Authorization | None) -> Authorization:
    if not location.bucket:
        raise ConfigError("an s3:// URL needs a bucket: write s3://BUCKET/ (or omit the URL)")
    if auth is None:
        raise ConfigError(
            f"{location.url} is in S3 and needs an authorization: pass --auth NAME "
            "(see `lakeport auth add`)"
        )
    return auth


def _list_s3(location: Location, auth: Authorization) -> Listing:
    fs = _s3_filesystem(auth)
    prefix = location.key
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    directories: list[str] = []
    files: list[FileInfo] = []
    request: dict[str, Any] = {"Bucket": location.bucket, "Prefix": prefix, "Delimiter": "/"}
    with _translating(auth, "list", location=location):
        while True:
            page = fs.call_s3("list_objects_v2", **request)
            directories += [p["Prefix"][len(prefix) :] for p in page.get("CommonPrefixes", [])]
            files += [_s3_info(location.bucket, obj) for obj in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                break
            request["ContinuationToken"] = page["NextContinuationToken"]
        if not directories and not files and location.key and not location.key.endswith("/"):
            # `s3://bucket/a/b.csv` names an object, not a prefix: show that object.
            return Listing(location.url, [], [stat(location.url, auth)])
    return Listing(f"s3://{location.bucket}/{prefix}", directories, files)


def stat(url: str, auth: Authorization | None = None) -> FileInfo:
    """Size, modification time and ETag of one object or file."""
    location = parse_url(url)
    if location.scheme == "s3":
        fs = _s3_filesystem(_require_bucket(location, auth))
        with _translating(auth, "read", location=location):
            head = fs.call_s3("head_object", Bucket=location.bucket, Key=location.key)
        return FileInfo(
            url=location.url,
            name=_basename(location.key),
            size=int(head["ContentLength"]),
            last_modified=_utc(head.get("LastModified")),
            etag=str(head.get("ETag", "")).strip('"') or None,
        )
    fs = filesystem(location)
    with _translating(auth, "read", location=location):
        info = fs.info(location.fs_path)
    if info["type"] != "file":
        raise NoSuchKey(f"{location.url} is a folder, not a file")
    return _local_info(location.scheme, info)


def open_input(
    url: str, auth: Authorization | None = None, *, block_size: int = 8 << 20
) -> IO[bytes]:
    """Open an object or file for streaming reads.

    An S3 object is read as one streaming GET (several times faster than the ranged block reads
    of `s3fs.open`), resumed from where it broke if the connection drops, and pinned to the
    ETag it started with so that a changing object is not read half old, half new.
    """
    location = parse_url(url)
    if location.scheme == "s3":
        fs = _s3_filesystem(_require_bucket(location, auth))
        stream = _S3Stream(fs, location, auth)
        stream.start()
        return cast(IO[bytes], stream)
    fs = filesystem(location, auth)
    with _translating(auth, "read", location=location):
        handle: IO[bytes] = fs.open(location.fs_path, "rb", block_size=block_size)
    return handle


class _S3Stream(io.RawIOBase):
    """One GET of an S3 object, read in chunks as the caller asks for them."""

    RESUMES = 3

    def __init__(self, fs: Any, location: Location, auth: Authorization | None) -> None:
        super().__init__()
        self._fs = fs
        self._location = location
        self._auth = auth
        self._body: Any = None
        self._etag: str | None = None
        self._position = 0
        self._size = 0

    def start(self) -> None:
        self._body = self._get(None)

    def _get(self, start: int | None) -> Any:
        request: dict[str, Any] = {"Bucket": self._location.bucket, "Key": self._location.key}
        if start is not None:
            request["Range"] = f"bytes={start}-"
            if self._etag:
                request["IfMatch"] = f'"{self._etag}"'
        with _translating(self._auth, "read", location=self._location):
            answer = self._fs.call_s3("get_object", **request)
        if start is None:
            self._etag = str(answer.get("ETag", "")).strip('"') or None
            self._size = int(answer.get("ContentLength", 0))
        return answer["Body"]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        from fsspec.asyn import sync

        if size is None or size < 0:
            parts = []
            while chunk := self.read(8 << 20):
                parts.append(chunk)
            return b"".join(parts)
        for attempt in range(self.RESUMES + 1):
            try:
                data: bytes = sync(self._fs.loop, self._body.read, size)
                break
            except LakeportError:
                raise
            except Exception as exc:
                if attempt == self.RESUMES or self._position >= self._size:
                    raise _translate(exc, self._auth, "read", self._location, False) from exc
                logger.info(
                    "resuming %s at byte %d after %s",
                    self._location.url,
                    self._position,
                    type(exc).__name__,
                )
                self._body = self._get(self._position)
        self._position += len(data)
        return data

    def close(self) -> None:
        if self._body is not None and not self.closed:
            try:
                self._body.close()
            except Exception:  # closing a finished or broken response: nothing to keep
                logger.debug("closing %s", self._location.url, exc_info=True)
        super().close()


def _s3_info(bucket: str, obj: dict[str, Any]) -> FileInfo:
    return FileInfo(
        url=f"s3://{bucket}/{obj['Key']}",
        name=_basename(obj["Key"]),
        size=int(obj.get("Size", 0)),
        last_modified=_utc(obj.get("LastModified")),
        etag=str(obj.get("ETag", "")).strip('"') or None,
    )


def _local_info(scheme: Scheme, entry: dict[str, Any]) -> FileInfo:
    modified = entry.get("mtime") or entry.get("created")
    when: datetime | None = None
    if isinstance(modified, int | float):
        when = datetime.fromtimestamp(modified, UTC)
    elif isinstance(modified, datetime):
        when = _utc(modified)
    size = int(entry.get("size") or 0)
    version = f"{size:x}-{int(when.timestamp() * 1e6):x}" if when else f"{size:x}"
    name = entry["name"]
    url = f"memory://{name}" if scheme == "memory" else name
    return FileInfo(url=url, name=_basename(name), size=size, last_modified=when, etag=version)


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Error translation

_INVALID_KEYS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
    "InvalidToken",
    "IncompleteSignature",
}
_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}


@contextmanager
def _translating(
    auth: Authorization | None,
    action: str,
    *,
    location: Location | None = None,
    listing_buckets: bool = False,
) -> Iterator[None]:
    """Turn whatever the storage client raises into a lakeport error, keeping it as the cause."""
    try:
        yield
    except LakeportError:
        raise
    except Exception as exc:  # the one place every client error is seen and named
        raise _translate(exc, auth, action, location, listing_buckets) from exc


def _translate(
    exc: Exception,
    auth: Authorization | None,
    action: str,
    location: Location | None,
    listing_buckets: bool,
) -> LakeportError:
    who = f"authorization '{auth.name}'" if auth is not None else "lakeport"
    what = location.url if location is not None else "S3"
    bucket = location.bucket if location is not None else ""
    code, message = _aws_error(exc)
    failure = _endpoint_failure(exc)

    if _no_credentials(exc):
        return InvalidCredentials(
            f"{who} found no AWS credentials (environment, shared profile or instance role): "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or add an "
            "aws-keys authorization"
        )
    if action == "log in" and isinstance(auth, DelegatedRole) and code is not None:
        return AccessDenied(
            f"{who}: STS refused to let lakeport assume {auth.role_arn} ({code}: {message}): "
            f"the role's trust policy must allow lakeport's principal and require the external "
            f"id {auth.external_id}"
        )
    if failure is not None:
        endpoint = (auth.endpoint_url if auth else None) or "the AWS S3 endpoint"
        return EndpointUnreachable(
            f"cannot reach {endpoint} to {action} {what} ({failure}): check the endpoint URL "
            f"of {who} and the network, then retry"
        )
    if code in _INVALID_KEYS:
        reason = (
            "the secret key does not match the access key id"
            if code == "SignatureDoesNotMatch"
            else "the access key id (or session token) is not known to the endpoint"
        )
        return InvalidCredentials(
            f"{who} was refused to {action} {what}: {reason}; add the authorization again "
            "with the right keys (`lakeport auth remove` then `lakeport auth add`)"
        )
    if code in _EXPIRED:
        return ExpiredCredentials(
            f"{who} has an expired session token ({action} {what}): give it a fresh token "
            "(`lakeport auth remove` then `lakeport auth add ... --session-token-env VAR`)"
        )
    if code == "NoSuchBucket" or (code == "404" and location is not None and not location.key):
        return NoSuchBucket(
            f"bucket '{bucket}' does not exist or is not visible to {who}: check the name "
            "and the region of the authorization"
        )
    if listing_buckets and (code in _DENIED or isinstance(exc, PermissionError)):
        return AccessDenied(
            f"{who} may not list buckets (s3:ListAllMyBuckets): type the bucket name instead, "
            f"e.g. `lakeport ls s3://BUCKET/ --auth {auth.name if auth else 'NAME'}`"
        )
    if code in _DENIED or isinstance(exc, PermissionError):
        return AccessDenied(
            f"{who} may not {action} {what} (access denied): grant it s3:ListBucket and "
            "s3:GetObject on the bucket (see the bucket policy in the README)"
        )
    if code in ("NoSuchKey", "404", "NotFound") or isinstance(exc, FileNotFoundError):
        return NoSuchKey(
            f"{what} does not exist: check the path (`lakeport ls` shows what is there)"
        )
    if isinstance(exc, NotADirectoryError):
        return NoSuchKey(f"{what} is not a folder")
    if code is not None:
        return StorageError(f"{who} could not {action} {what}: {code}: {message}")
    return StorageError(f"could not {action} {what}: {type(exc).__name__}: {exc}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _aws_error(exc: Exception) -> tuple[str | None, str]:
    """The AWS error code and message anywhere in the exception's chain."""
    for link in _chain(exc):
        response = getattr(link, "response", None)
        if isinstance(response, dict) and "Error" in response:
            error = response["Error"]
            return str(error.get("Code", "")), str(error.get("Message", ""))
    return None, ""


def _no_credentials(exc: Exception) -> bool:
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    return any(
        isinstance(link, NoCredentialsError | PartialCredentialsError) for link in _chain(exc)
    )


def _endpoint_failure(exc: Exception) -> str | None:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    for link in _chain(exc):
        if isinstance(link, BotoConnectionError | HTTPClientError):
            return type(link).__name__
        if isinstance(link, ConnectionRefusedError | TimeoutError):
            return type(link).__name__
    return None


def local_path(url: str) -> Path | None:
    """The local path of a `file://` URL or plain path, None for other schemes."""
    location = parse_url(url)
    return Path(location.key) if location.scheme == "file" else None
