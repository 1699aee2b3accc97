"""Storage: URLs and authorizations in, fsspec filesystems and listings out.

This package is the only code that imports s3fs or botocore: `locations` (URLs, listings),
`s3` (logging in, streaming reads) and `errors` (their translation). It turns a URL (`s3://bucket/key`,
`file:///path`, a plain path, `memory://path`) and an `Authorization` into a filesystem, lists
buckets, directories and files, and translates every AWS or OS error into a lakeport error that
names the bucket, key or authorization, with the original kept as `__cause__`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, cast

from engine.auth import Authorization
from engine.errors import ConfigError, NoSuchKey
from engine.storage.errors import _translate, _translating, source_changed
from engine.storage.locations import (
    BucketInfo,
    FileInfo,
    Listing,
    Location,
    Reader,
    Scheme,
    _basename,
    _utc,
    parse_url,
)
from engine.storage.s3 import _credentials, _s3_filesystem, _S3Stream, caller_identity

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

__all__ = [
    "BucketInfo",
    "FileInfo",
    "Listing",
    "Location",
    "Scheme",
    "_S3Stream",
    "_translate",
    "_translating",
    "abort_uploads",
    "caller_identity",
    "filesystem",
    "list_buckets",
    "list_directory",
    "open_input",
    "open_uploads",
    "parse_url",
    "quiet_client_loggers",
    "remove_files",
    "stat",
    "table_options",
    "walk_files",
]

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


# Filesystems


def filesystem(location: Location, auth: Authorization | None = None) -> AbstractFileSystem:
    """The fsspec filesystem for a location, logged in with `auth` for S3."""
    if location.scheme == "s3":
        return _s3_filesystem(_require_auth(location, auth))
    import fsspec  # imported when a file system is used: it costs every run 50 ms

    return fsspec.filesystem(location.scheme)


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


# Local folders


def check_inside(root: str, url: str, what: str = "") -> None:
    """Refuse a local `url` that is outside the local folder `root`, once links are followed
    (a directory `..`, a link to elsewhere): lakeport reads and writes nothing outside the
    folder a job names. S3 and memory have no links: nothing to check."""
    top, location = parse_url(root), parse_url(url)
    if top.scheme != "file" or location.scheme != "file":
        return
    from pathlib import Path

    base, real = Path(top.key).resolve(), Path(location.key).resolve()
    if real != base and base not in real.parents:
        raise ConfigError(
            f"{what or location.key} leads to {real}, outside the folder {base}: lakeport "
            "reads and writes nothing outside the bucket's folder (links are followed); move "
            "the files into it, or name another bucket"
        )


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


def walk_files(url: str, auth: Authorization | None = None) -> list[FileInfo]:
    """Every file under `url`, at any depth (none when it does not exist)."""
    location = parse_url(url)
    if location.scheme == "s3":
        _require_bucket(location, auth)
    fs = filesystem(location, auth)
    with _translating(auth, "list", location=location):
        if not fs.exists(location.fs_path):
            return []
        found = fs.find(location.fs_path, detail=True)
    if location.scheme == "s3":
        return [
            FileInfo(
                url=f"s3://{entry['name']}",
                name=_basename(entry["name"]),
                size=int(entry.get("size") or 0),
                last_modified=_utc(entry.get("LastModified")),
                etag=str(entry.get("ETag", "")).strip('"') or None,
            )
            for entry in found.values()
        ]
    return [_local_info(location.scheme, entry) for entry in found.values()]


def remove_files(urls: list[str], auth: Authorization | None = None) -> None:
    """Delete these files or objects (one request per thousand in S3)."""
    if not urls:
        return
    location = parse_url(urls[0])
    fs = filesystem(location, auth)
    with _translating(auth, "delete", location=location):
        fs.rm([parse_url(url).fs_path for url in urls])


def open_uploads(url: str, auth: Authorization | None = None) -> list[FileInfo]:
    """The multipart uploads begun and neither completed nor aborted under an S3 prefix, as
    FileInfos (`etag` holds the upload id, `last_modified` when it began); none elsewhere."""
    location = parse_url(url)
    if location.scheme != "s3":
        return []
    fs = _s3_filesystem(_require_bucket(location, auth))
    prefix = location.key.rstrip("/") + "/"
    found: list[FileInfo] = []
    request: dict[str, Any] = {"Bucket": location.bucket, "Prefix": prefix}
    with _translating(auth, "list the unfinished uploads of", location=location):
        while True:
            page = fs.call_s3("list_multipart_uploads", **request)
            found += [
                FileInfo(
                    url=f"s3://{location.bucket}/{upload['Key']}",
                    name=_basename(upload["Key"]),
                    size=0,
                    last_modified=_utc(upload.get("Initiated")),
                    etag=upload["UploadId"],
                )
                for upload in page.get("Uploads", [])
            ]
            if not page.get("IsTruncated"):
                return found
            request["KeyMarker"] = page["NextKeyMarker"]
            request["UploadIdMarker"] = page["NextUploadIdMarker"]


def abort_uploads(uploads: list[FileInfo], auth: Authorization | None = None) -> None:
    """Abort multipart uploads found by `open_uploads`: their parts are deleted."""
    for upload in uploads:
        location = parse_url(upload.url)
        fs = _s3_filesystem(_require_bucket(location, auth))
        with _translating(auth, "abort an unfinished upload of", location=location):
            fs.call_s3(
                "abort_multipart_upload",
                Bucket=location.bucket,
                Key=location.key,
                UploadId=upload.etag,
            )


def _require_bucket(location: Location, auth: Authorization | None) -> Authorization:
    if not location.bucket:
        raise ConfigError("an s3:// URL needs a bucket: write s3://BUCKET/ (or omit the URL)")
    return _require_auth(location, auth)


def _require_auth(location: Location, auth: Authorization | None) -> Authorization:
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
    url: str,
    auth: Authorization | None = None,
    *,
    block_size: int = 8 << 20,
    expected: FileInfo | None = None,
) -> IO[bytes]:
    """Open an object or file for streaming reads.

    An S3 object is read as one streaming GET (several times faster than the ranged block reads
    of `s3fs.open`), resumed from where it broke if the connection drops, and pinned to the
    ETag it started with so that a changing object is not read half old, half new.

    With `expected` (what a listing said of it), the read is pinned to that version: an S3 GET
    asks for its ETag, and for S3 and local files alike the bytes must be exactly its size
    (and match its MD5 where the ETag is one); otherwise `SourceChanged` is raised.
    """
    location = parse_url(url)
    if location.scheme == "s3":
        fs = _s3_filesystem(_require_bucket(location, auth))
        stream = _S3Stream(fs, location, auth, expected)
        stream.start()
        return cast(IO[bytes], stream)
    fs = filesystem(location, auth)
    with _translating(auth, "read", location=location):
        if expected is not None and _local_info(
            location.scheme, fs.info(location.fs_path)
        ).etag != (expected.etag):
            raise source_changed(location, "its size or modification time is not what was listed")
        handle: IO[bytes] = fs.open(location.fs_path, "rb", block_size=block_size)
    if expected is None:
        return handle
    return cast(IO[bytes], _SizedFile(handle, location, expected.size))


def open_random(url: str, auth: Authorization | None = None) -> IO[bytes]:
    """Open an object or file for random access (a Parquet file is read from its footer), in
    blocks; errors say which object and why, as `open_input`'s do."""
    location = parse_url(url)
    fs = filesystem(location, auth)
    with _translating(auth, "read", location=location):
        handle: IO[bytes] = fs.open(location.fs_path, "rb")
    return handle


class _SizedFile(Reader):
    """A local file whose bytes must be exactly the size that was listed."""

    def __init__(self, handle: IO[bytes], location: Location, size: int) -> None:
        super().__init__()
        self._handle = handle
        self._location = location
        self._size = size
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._handle.read(size)
        self._position += len(data)
        if self._position > self._size or (not data and size != 0 and self._position < self._size):
            raise source_changed(
                self._location,
                f"{self._position:,} bytes read of the {self._size:,} that were listed",
            )
        return data

    def close(self) -> None:
        try:
            self._handle.close()
        finally:
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
