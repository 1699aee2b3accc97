"""Export file names: templates, timestamps, parts, extensions, and keys kept in their folder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from engine.errors import ConfigError
from engine.writers.names import (
    DEFAULT_TEMPLATE,
    FileNames,
    check_template,
    check_timestamp_format,
    format_timestamp,
)

MOMENT = datetime(2026, 11, 27, 9, 5, 7, tzinfo=UTC)


def names(**changes: Any) -> FileNames:
    values: dict[str, Any] = {
        "directory": "exports/daily",
        "template": DEFAULT_TEMPLATE,
        "timestamp": format_timestamp(MOMENT, "YYYYMMDDHHmmss"),
        "audience": "vip",
        "job": "vip-export",
        "format": "csv",
        "compress": "none",
    }
    return FileNames(**{**values, **changes})


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("YYYYMMDDHHmmss", "20261127090507"),
        ("YYYY-MM-DDTHH-mm-ss", "2026-11-27T09-05-07"),
        ("YYMMDD", "261127"),
        ("unix", "1795770307"),
        ("YYYY_MM.DD", "2026_11.27"),
    ],
)
def test_timestamp_tokens(text: str, written: str) -> None:
    assert format_timestamp(MOMENT, check_timestamp_format(text)) == written


def test_a_timestamp_in_another_zone_is_written_in_utc() -> None:
    paris = MOMENT.astimezone(timezone(timedelta(hours=1)))
    assert format_timestamp(paris, "HH") == "09"


@pytest.mark.parametrize("text", ["", "hh", "YYYY/MM/DD", "YYYY MM", "date"])
def test_bad_timestamp_formats_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="tokens YYYY, YY, MM, DD, HH, mm, ss, unix"):
        check_timestamp_format(text)


@pytest.mark.parametrize(
    ("fmt", "compress", "key"),
    [
        ("csv", "none", "exports/daily/lakeport-vip-20261127090507.csv"),
        ("csv", "gzip", "exports/daily/lakeport-vip-20261127090507.csv.gz"),
        ("json", "zstd", "exports/daily/lakeport-vip-20261127090507.json.zst"),
        ("parquet", "zstd", "exports/daily/lakeport-vip-20261127090507.parquet"),
    ],
)
def test_extensions_follow_the_format_and_codec(fmt: str, compress: str, key: str) -> None:
    assert names(format=fmt, compress=compress).data() == key


def test_parts_multi_csv_tables_and_the_manifest() -> None:
    split = names(template="{JOB}_{TIMESTAMP}_{PART}")
    assert split.data(part=2) == "exports/daily/vip-export_20261127090507_0002.csv"
    assert names().data(part=12) == "exports/daily/lakeport-vip-20261127090507-0012.csv"
    multi = names(format="multi-csv", compress="gzip")
    assert multi.data(table="users") == "exports/daily/lakeport-vip-20261127090507_users.csv.gz"
    assert multi.data(table="tags") == "exports/daily/lakeport-vip-20261127090507_tags.csv.gz"
    assert multi.manifest() == "exports/daily/lakeport-vip-20261127090507_manifest.json"
    assert names(directory="").data() == "lakeport-vip-20261127090507.csv"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{DATE}", r"holds \{DATE\}: the placeholders are \{TIMESTAMP\}"),
        ("lakeport-{AUDIENCE", "unmatched brace"),
        ("../{AUDIENCE}", "outside the export's directory"),
        ("/abs/{AUDIENCE}", "outside the export's directory"),
        ("a\\b", "backslash"),
        ("a\nb", "control character"),
        ("  ", "empty"),
    ],
)
def test_bad_templates_are_refused(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_template(template)


def test_values_cannot_leave_the_directory_either() -> None:
    with pytest.raises(ConfigError, match="outside the export's directory"):
        names(template="{JOB}/{AUDIENCE}", job="..").data()
    with pytest.raises(ConfigError, match="outside the export's directory"):
        names(directory="../elsewhere")
    # A template may make sub-folders inside the directory.
    assert names(template="{AUDIENCE}/{TIMESTAMP}").data().startswith("exports/daily/vip/")


def test_an_encrypted_file_ends_in_gpg_after_its_compression_and_the_manifest_does_not() -> None:
    sealed = names(format="csv", compress="zstd", encrypted=True)
    assert sealed.data(2) == "exports/daily/lakeport-vip-20261127090507-0002.csv.zst.gpg"
    assert names(format="parquet", encrypted=True).data().endswith(".parquet.gpg")
    assert sealed.manifest().endswith("_manifest.json")
