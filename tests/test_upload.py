"""Multipart uploads to S3 (the moto server): parts in parallel, atomic, aborted on failure."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from engine.errors import ConfigError
from engine.storage.upload import Upload

PART = 5 << 20  # moto enforces S3's 5 MiB minimum; lakeport's default parts are 8 MiB


def blob(size: int) -> bytes:
    seed = hashlib.sha256(b"lakeport").digest()
    return (seed * (size // len(seed) + 1))[:size]


def test_a_large_object_goes_up_in_parts(s3: Any) -> None:
    bucket = s3.new_bucket()
    upload = Upload(f"s3://{bucket}/out/big.bin", s3.authorization(), part_size=PART, min_part=PART)
    data = blob(3 * PART + 12345)
    for start in range(0, len(data), 1 << 20):
        upload.write(data[start : start + (1 << 20)])
    # Not visible before it completes.
    assert "Contents" not in s3.client().list_objects_v2(Bucket=bucket)
    upload.complete()
    body = s3.client().get_object(Bucket=bucket, Key="out/big.bin")["Body"].read()
    assert body == data
    assert "Uploads" not in s3.client().list_multipart_uploads(Bucket=bucket)


def test_a_small_object_is_one_put(s3: Any) -> None:
    bucket = s3.new_bucket()
    upload = Upload(f"s3://{bucket}/small.txt", s3.authorization(), part_size=PART, min_part=PART)
    upload.write(b"hello")
    upload.complete()
    assert s3.client().get_object(Bucket=bucket, Key="small.txt")["Body"].read() == b"hello"


def test_an_aborted_upload_leaves_nothing(s3: Any) -> None:
    bucket = s3.new_bucket()
    upload = Upload(f"s3://{bucket}/out/big.bin", s3.authorization(), part_size=PART, min_part=PART)
    upload.write(blob(2 * PART + 1))
    upload.abort()  # as an export does when anything fails
    client = s3.client()
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)


def test_parts_below_the_minimum_are_refused(s3: Any) -> None:
    with pytest.raises(ConfigError, match="at least 8,388,608 bytes"):
        Upload("s3://b/k", s3.authorization(), part_size=1 << 20)


def test_a_missing_bucket_is_a_clear_error(s3: Any) -> None:
    from engine.errors import LakeportError

    upload = Upload("s3://no-such-bucket-here/k", s3.authorization(), part_size=PART, min_part=PART)
    with pytest.raises(LakeportError, match="no-such-bucket-here"):
        upload.write(blob(PART))


def test_an_export_sink_writes_to_s3_and_takes_everything_back_on_abort(s3: Any) -> None:
    import gzip

    from engine.storage.upload import S3Folder
    from engine.writers.sink import FileSink

    bucket = s3.new_bucket()
    folder = S3Folder(f"s3://{bucket}/exports", s3.authorization(), part_size=PART)
    sink = FileSink(
        folder, lambda part: f"users-{part}.csv.gz", compress="gzip", max_file_size=30_000
    )
    lines = [b"%d,%s\n" % (i, hashlib.sha256(b"%d" % i).hexdigest().encode()) for i in range(3000)]
    for start in range(0, 3000, 300):
        sink.write(b"".join(lines[start : start + 300]), 300)
    files = sink.finish()
    assert len(files) > 2
    client = s3.client()
    text = b"".join(
        gzip.decompress(client.get_object(Bucket=bucket, Key=f"exports/{f.key}")["Body"].read())
        for f in files
    )
    assert text == b"".join(lines)
    sink.abort()  # say the manifest then failed: the export takes its files back
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)
