"""S3: filesystems logged in with an authorization (keys, default chain, assumed role), and
objects read as one streaming GET."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.auth import Authorization, AwsKeys, DefaultChain, DelegatedRole
from engine.errors import ConfigError, LakeportError, SourceChanged
from engine.storage.errors import _translating, ask_again_with, source_changed
from engine.storage.locations import FileInfo, Location, Reader, _utc

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

logger = logging.getLogger("engine.storage")


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
            # Requests are SigV4 anyway; this makes presigned links SigV4 too (S3 refuses
            # SigV2 in newer regions, and SigV2 links do not say how long they last).
            "signature_version": "s3v4",
        },
        # Listings must be fresh: a job that polls a bucket for new files cannot use a cache.
        # (fsspec still reuses one filesystem, and its connections, per set of credentials.)
        "use_listings_cache": False,
    }
    with _translating(auth, "log in"):
        options.update(_credentials(auth))
    return s3fs.S3FileSystem(**options)


def _list_one(auth: Authorization, location: Location) -> None:
    """A listing of one key under `location`: S3's answer to it always says why it refuses."""
    _s3_filesystem(auth).call_s3(
        "list_objects_v2", Bucket=location.bucket, Prefix=location.key, MaxKeys=1
    )


ask_again_with(_list_one)


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


def caller_identity(region: str | None, endpoint_url: str | None) -> str:
    """The ARN that lakeport's own (default-chain) credentials stand for, asked of STS."""
    import botocore.session

    sts = botocore.session.get_session().create_client(
        "sts", region_name=region or "us-east-1", endpoint_url=endpoint_url
    )
    try:
        with _translating(None, "ask STS who lakeport is"):
            return str(sts.get_caller_identity()["Arn"])
    finally:
        sts.close()


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


class _S3Stream(Reader):
    """One GET of an S3 object, read in chunks as the caller asks for them, pinned to the
    object that was listed.

    With `expected` (the listing's size and ETag), the GET asks for that ETag (If-Match: an
    object replaced since is refused), the answer must have the listed size, the bytes that
    come must be exactly that many, and an ETag that is an MD5 (a single-part upload without
    KMS or customer keys) is checked against the bytes. A read that breaks is resumed with a
    Range request, which must be answered by that range (206 with its Content-Range): a
    whole body spliced in would duplicate rows. Any of these failing is a `SourceChanged`.
    """

    RESUMES = 3

    def __init__(
        self,
        fs: Any,
        location: Location,
        auth: Authorization | None,
        expected: FileInfo | None = None,
    ) -> None:
        super().__init__()
        self._fs = fs
        self._location = location
        self._auth = auth
        self._expected = expected
        self._body: Any = None
        self._etag: str | None = expected.etag if expected else None
        self._position = 0
        self._size = 0
        self._md5: Any = None

    def start(self) -> None:
        self._body = self._get(None)

    def _get(self, start: int | None) -> Any:
        request: dict[str, Any] = {"Bucket": self._location.bucket, "Key": self._location.key}
        if self._etag:
            request["IfMatch"] = f'"{self._etag}"'
        if start is not None:
            request["Range"] = f"bytes={start}-"
        with _translating(self._auth, "read", location=self._location):
            answer = self._fs.call_s3("get_object", **request)
        if start is None:
            self._etag = str(answer.get("ETag", "")).strip('"') or None
            self._size = int(answer.get("ContentLength", 0))
            if self._expected is not None and self._size != self._expected.size:
                answer["Body"].close()
                raise self._changed(
                    f"S3 answered with {self._size:,} bytes for the {self._expected.size:,} "
                    "that were listed"
                )
            if _is_md5(self._etag) and not (
                answer.get("ServerSideEncryption") == "aws:kms"
                or answer.get("SSECustomerAlgorithm")
            ):
                self._md5 = hashlib.md5(usedforsecurity=False)
        else:
            expected_range = f"bytes {start}-{self._size - 1}/{self._size}"
            got = answer.get("ContentRange")
            if got != expected_range:
                answer["Body"].close()
                raise self._changed(
                    f"a read resumed at byte {start:,} was answered with "
                    + (f"the range {got!r}" if got else "the whole object (no Content-Range)")
                    + f", not {expected_range!r}"
                )
        return answer["Body"]

    def _changed(self, what: str) -> SourceChanged:
        return source_changed(self._location, what)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read(8 << 20):
                parts.append(chunk)
            return b"".join(parts)
        if self._position >= self._size:
            self._check_end()
            return b""
        data = self._read_resuming(min(size, self._size - self._position))
        self._position += len(data)
        if self._md5 is not None:
            self._md5.update(data)
        if self._position >= self._size:
            self._check_end()
        return data

    def _read_resuming(self, size: int) -> bytes:
        from fsspec.asyn import sync

        for attempt in range(self.RESUMES + 1):
            try:
                data: bytes = sync(self._fs.loop, self._body.read, size)
                if not data:  # the body ended before the object did: as a broken read
                    raise ConnectionResetError(
                        f"the response ended at byte {self._position:,} of {self._size:,}"
                    )
                return data
            except LakeportError:
                raise
            except Exception as exc:
                if attempt == self.RESUMES:
                    raise self._changed(
                        f"the read broke at byte {self._position:,} of {self._size:,}, "
                        f"{self.RESUMES} resumes too ({type(exc).__name__}: {exc})"
                    ) from exc
                logger.info(
                    "resuming %s at byte %d after %s",
                    self._location.url,
                    self._position,
                    type(exc).__name__,
                )
                self._close_body()
                self._body = self._get(self._position)
        raise AssertionError("unreachable")

    def _check_end(self) -> None:
        if self._md5 is None:
            return
        digest, self._md5 = self._md5.hexdigest(), None
        if digest != self._etag:
            raise self._changed(f"the bytes' MD5 is {digest}, its ETag says {self._etag}")

    def _close_body(self) -> None:
        try:
            self._body.close()
        except Exception:  # closing a finished or broken response: nothing to keep
            logger.debug("closing %s", self._location.url, exc_info=True)

    def close(self) -> None:
        if self._body is not None and not self.closed:
            self._close_body()
        super().close()


def _is_md5(etag: str | None) -> bool:
    return etag is not None and len(etag) == 32 and all(c in "0123456789abcdef" for c in etag)
