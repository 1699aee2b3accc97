"""Writing one S3 object as a multipart upload, parts in parallel.

Bytes are gathered into parts of `part_size` (at least 8 MiB; S3's minimum is 5 MiB for every
part but the last), and up to `parallel` parts are in flight at once while the caller goes on
producing the next. The object appears in the bucket only when the upload completes; `abort()`
(called on any failure) cancels the upload, so no object and no open multipart upload is left.
An object smaller than one part is written with one PUT, which is just as atomic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from engine.auth import Authorization
from engine.errors import ConfigError, NoSuchKey, StorageError
from engine.storage.errors import _translating
from engine.storage.locations import parse_url
from engine.storage.s3 import _s3_filesystem

MIN_PART = 8 << 20


class Upload:
    """One object being written to S3 (see the module)."""

    def __init__(
        self,
        url: str,
        auth: Authorization,
        *,
        part_size: int = MIN_PART,
        parallel: int = 4,
        min_part: int = MIN_PART,
        on_begin: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.location = parse_url(url)
        if self.location.scheme != "s3" or not self.location.key:
            raise ConfigError(f"{url} is not an S3 object URL (s3://BUCKET/KEY)")
        if part_size < min_part:
            raise ConfigError(f"parts must be at least {min_part:,} bytes (got {part_size:,})")
        self.auth = auth
        self.part_size = part_size
        self.parallel = parallel
        self.size = 0
        self._fs = _s3_filesystem(auth)
        self._held = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._done = False
        self._on_begin = on_begin
        self.etag: str | None = None

    def write(self, data: bytes | memoryview) -> None:
        """Add bytes; full parts go up in the background (at most `parallel` at once)."""
        self._held += data
        self.size += len(data)
        while len(self._held) >= self.part_size:
            part = bytes(self._held[: self.part_size])
            del self._held[: self.part_size]
            self._send(part)

    def complete(self) -> None:
        """Finish the object (`etag` is then set). Until now nothing was visible in the
        bucket."""
        request = {"Bucket": self.location.bucket, "Key": self.location.key}
        try:
            with _translating(self.auth, "write", location=self.location):
                if self._upload_id is None:
                    answer = self._fs.call_s3("put_object", Body=bytes(self._held), **request)
                else:
                    if self._held:
                        self._send(bytes(self._held))
                    parts = [future.result() for future in self._parts]
                    answer = self._complete(parts, request)
        except BaseException:
            self.abort()
            raise
        self._held = bytearray()
        self._done = True
        self._close_pool()
        self.etag = str(answer.get("ETag", "")).strip('"')

    def _complete(self, parts: list[dict[str, Any]], request: dict[str, Any]) -> dict[str, Any]:
        """CompleteMultipartUpload; when its answer is lost (the connection broke, or a retry
        of it found the upload gone), the object is looked at before deciding: completed if
        it is there with this upload's ETag (made from its parts' ETags)."""
        try:
            answer: dict[str, Any] = self._fs.call_s3(
                "complete_multipart_upload",
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
                **request,
            )
            return answer
        except Exception as exc:
            expected = _multipart_etag(parts)
            try:
                head = self._fs.call_s3("head_object", **request)
            except Exception:
                head = {}
            if str(head.get("ETag", "")).strip('"') == expected:
                return {"ETag": expected}
            raise StorageError(
                f"could not complete the upload of {self.location.url} "
                f"(CompleteMultipartUpload: {type(exc).__name__}: {exc}); the export's files "
                "are taken back: run it again"
            ) from exc

    def abort(self) -> None:
        """Cancel the upload: nothing of it stays in the bucket."""
        if self._done:
            return
        self._done = True
        for future in self._parts:
            future.cancel()
        self._close_pool()
        if self._upload_id is not None:
            with _translating(self.auth, "write", location=self.location):
                self._fs.call_s3(
                    "abort_multipart_upload",
                    Bucket=self.location.bucket,
                    Key=self.location.key,
                    UploadId=self._upload_id,
                )

    def _send(self, part: bytes) -> None:
        if self._upload_id is None:
            if self._on_begin is not None:  # before: a run killed right after still knows
                self._on_begin({"upload_of": self.location.url})
            with _translating(self.auth, "write", location=self.location):
                answer = self._fs.call_s3(
                    "create_multipart_upload", Bucket=self.location.bucket, Key=self.location.key
                )
            self._upload_id = str(answer["UploadId"])
            if self._on_begin is not None:
                self._on_begin({"upload_of": self.location.url, "upload": self._upload_id})
            self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="lakeport-upload")
        # Bounded: wait for the oldest part while `parallel` are in flight.
        in_flight = [f for f in self._parts if not f.done()]
        if len(in_flight) >= self.parallel:
            in_flight[0].result()
        for future in self._parts:  # a failed part fails the upload now, not at the end
            if future.done() and future.exception() is not None:
                self.abort()
                raise future.exception()  # type: ignore[misc]
        assert self._pool is not None
        number = len(self._parts) + 1
        self._parts.append(self._pool.submit(self._put_part, number, part))

    def _put_part(self, number: int, part: bytes) -> dict[str, Any]:
        with _translating(self.auth, "write", location=self.location):
            answer = self._fs.call_s3(
                "upload_part",
                Bucket=self.location.bucket,
                Key=self.location.key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=part,
            )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _multipart_etag(parts: list[dict[str, Any]]) -> str:
    """The ETag S3 gives a completed multipart upload: the MD5 of its parts' MD5s, and their
    count."""
    digests = b"".join(bytes.fromhex(str(p["ETag"]).strip('"')) for p in parts)
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"


def sync_read(fs: Any, body: Any) -> bytes:
    """A whole (small) response body, read on the filesystem's event loop."""
    from fsspec.asyn import sync

    data: bytes = sync(fs.loop, body.read)
    return data


class S3Folder:
    """An S3 prefix as an export destination (engine.storage.folders.Destination): each file one
    `Upload`, visible only when complete."""

    def __init__(self, url: str, auth: Authorization, *, part_size: int = MIN_PART) -> None:
        self.url = url.rstrip("/")
        self.auth = auth
        self.part_size = part_size

    def open(self, key: str, on_begin: Callable[[dict[str, str]], None] | None = None) -> Upload:
        return Upload(
            f"{self.url}/{key}",
            self.auth,
            part_size=self.part_size,
            min_part=min(self.part_size, MIN_PART),
            on_begin=on_begin,
        )

    def promote(self, staged: str, key: str) -> None:
        """Copy the staged object under `key` (a server-side copy; multipart past 5 GB), then
        delete the staged one."""
        source, target = parse_url(f"{self.url}/{staged}"), parse_url(f"{self.url}/{key}")
        fs = _s3_filesystem(self.auth)
        with _translating(self.auth, "write", location=target):
            fs.copy(f"{source.bucket}/{source.key}", f"{target.bucket}/{target.key}")
        self.remove(staged)

    def read(self, key: str) -> bytes | None:
        location = parse_url(f"{self.url}/{key}")
        fs = _s3_filesystem(self.auth)
        try:
            with _translating(self.auth, "read", location=location):
                answer = fs.call_s3("get_object", Bucket=location.bucket, Key=location.key)
                data: bytes = sync_read(fs, answer["Body"])
        except NoSuchKey:
            return None
        return data

    def undo(self, begun: dict[str, str]) -> None:
        """Abort the upload begun (found by its key when its id was never heard)."""
        if "upload_of" not in begun:
            return
        location = parse_url(begun["upload_of"])
        fs = _s3_filesystem(self.auth)
        with _translating(self.auth, "abort an unfinished upload of", location=location):
            if "upload" in begun:
                ids = [begun["upload"]]
            else:
                found = fs.call_s3(
                    "list_multipart_uploads", Bucket=location.bucket, Prefix=location.key
                )
                ids = [u["UploadId"] for u in found.get("Uploads", []) if u["Key"] == location.key]
            for upload_id in ids:
                try:
                    fs.call_s3(
                        "abort_multipart_upload",
                        Bucket=location.bucket,
                        Key=location.key,
                        UploadId=upload_id,
                    )
                except FileNotFoundError:  # aborted or completed already
                    continue

    def remove(self, key: str) -> None:
        location = parse_url(f"{self.url}/{key}")
        with _translating(self.auth, "write", location=location):
            _s3_filesystem(self.auth).call_s3(
                "delete_object", Bucket=location.bucket, Key=location.key
            )

    def size(self, key: str) -> int | None:
        """The object's size from a HEAD request (None: no such object)."""
        location = parse_url(f"{self.url}/{key}")
        try:
            with _translating(self.auth, "read", location=location):
                answer = _s3_filesystem(self.auth).call_s3(
                    "head_object", Bucket=location.bucket, Key=location.key
                )
        except NoSuchKey:
            return None
        return int(answer["ContentLength"])

    def link(self, key: str, seconds: int) -> str:
        """A presigned GET URL of the object, valid for `seconds`."""
        location = parse_url(f"{self.url}/{key}")
        with _translating(self.auth, "read", location=location):
            url: str = _s3_filesystem(self.auth).sign(
                f"{location.bucket}/{location.key}", expiration=seconds
            )
        return url
