"""The CSV reader: the csv-spectrum corpus, line numbers, and every bad input named by line."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BadInput, ConfigError, LimitExceeded
from engine.readers.csv import CsvDialect, CsvReader
from engine.readers.rows import BadRow
from engine.readers.source import Limits
from tests.conftest import CORPORA, needs_corpora

SPECTRUM = CORPORA / "csv-spectrum"


def read(
    data: bytes,
    name: str = "s3://bucket/events.csv",
    **options: Any,
) -> tuple[list[dict[str, Any]], CsvReader]:
    reader = CsvReader(lambda: io.BytesIO(data), name=name, **options)
    return [row for batch in reader.batches() for row in batch.to_pylist()], reader


def values(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "_line"} for row in rows]


@needs_corpora
@pytest.mark.parametrize("case", sorted(p.stem for p in (SPECTRUM / "csvs").glob("*.csv")))
def test_csv_spectrum(case: str) -> None:
    data = (SPECTRUM / "csvs" / f"{case}.csv").read_bytes()
    expected = json.loads((SPECTRUM / "json" / f"{case}.json").read_text())
    rows, _ = read(data, name=f"{case}.csv")
    assert values(rows) == expected


@needs_corpora
def test_the_corpus_has_all_eleven_cases() -> None:
    assert len(list((SPECTRUM / "csvs").glob("*.csv"))) == 11


def test_line_numbers_count_quoted_line_breaks_and_blank_lines() -> None:
    data = b'id,note\n1,plain\n2,"two\nlines"\n\n3,"three\r\nlines\rhere"\n4,last'
    rows, reader = read(data)
    assert [(r["id"], r["_line"]) for r in rows] == [("1", 2), ("2", 3), ("3", 6), ("4", 9)]
    assert reader.rows_blank == 1
    assert reader.rows_read == 4


@pytest.mark.parametrize(
    ("row", "reason"),
    [("4,five", "expected 3 fields, found 2"), ("4,5,6,7", "expected 3 fields, found 4")],
)
def test_ragged_rows_are_errors_with_their_line(row: str, reason: str) -> None:
    data = f'a,b,c\n1,2,3\n2,"x\ny",3\n{row}\n5,6,7\n'.encode()
    with pytest.raises(BadInput, match=f"events.csv, line 5: {reason}") as caught:
        read(data)
    assert caught.value.line == 5


def test_quarantine_collects_bad_rows_and_keeps_the_good_ones() -> None:
    bad: list[BadRow] = []
    data = b'a,b\n1,2\nshort\n3,"x\ny"\n4,5,6\n7,8\n'
    rows, reader = read(data, on_bad_row=bad.append)
    assert [(r["a"], r["_line"]) for r in rows] == [("1", 2), ("3", 4), ("7", 7)]
    assert [(b.line, b.reason, b.text) for b in bad] == [
        (3, "expected 2 fields, found 1", "short"),
        (6, "expected 2 fields, found 3", "4,5,6"),
    ]
    assert reader.rows_bad == 2


def test_bad_rows_in_later_blocks_keep_lines_exact() -> None:
    lines = ["a,b"] + [f"{i},x" for i in range(1, 20_000)]
    lines[12_345] = "bad"
    lines[100] = '100,"multi\nline"'
    data = ("\n".join(lines) + "\n").encode()
    bad: list[BadRow] = []
    rows, _ = read(data, on_bad_row=bad.append, limits=Limits(max_line_bytes=4096))
    assert [b.line for b in bad] == [12_347]
    by_id = {r["a"]: r["_line"] for r in rows}
    assert by_id["99"] == 100
    assert by_id["101"] == 103
    assert by_id["12346"] == 12_348


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b'a,b\n1,2\n3,"open\n4,5\n', 3),  # the open value runs to the end: two fields
        (b'a,b\n"1,2\n3,4\n5,6\n', 2),  # one field: once reported as a field count
        (b'a,b\n1,2\n\n"x,y\n', 4),
    ],
)
def test_an_unterminated_quote_names_the_line_it_opens_on(data: bytes, line: int) -> None:
    with pytest.raises(BadInput, match=rf"line {line}: the quote \(\"\) opened on this line is "):
        read(data)
    with pytest.raises(BadInput, match="never closed"):  # never a bad row to quarantine
        read(data, on_bad_row=lambda _: None)


def test_quote_inside_an_unquoted_field_is_text() -> None:
    rows, _ = read(b'a,b\n1,12" pizza\n2,x\n')
    assert values(rows) == [{"a": "1", "b": '12" pizza'}, {"a": "2", "b": "x"}]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"a,b,a\n1,2,3\n", "names 'a' twice (fields 1 and 3)"),
        (b"a,,c\n1,2,3\n", "header field 2 is blank"),
        (b"a, ,c\n1,2,3\n", "header field 2 is blank"),
        (b"Id,id\n1,2\n", "the fields 'Id' and 'id' differ only in case"),
        (b"a,_line\n1,2\n", "the field '_line' has the name of a column lakeport adds"),
        (b"a,_TS\n1,2\n", "the field '_TS' has the name of a column lakeport adds"),
        (b"\n\r\n\n", "holds only blank lines: a CSV file needs a header line"),
    ],
)
def test_bad_headers(header: bytes, message: str) -> None:
    with pytest.raises(BadInput, match=re.escape(message)):
        read(header)


@pytest.mark.parametrize(
    ("data", "suggested"),
    [
        (b"a;b;c\n1;2;3\n", 'delimiter = ";"'),
        (b"a\tb\n1\t2\n", 'delimiter = "t"'),
        (b"a\tb\rx\ty\r1\t2\r", 'delimiter = "t"'),  # CR line ends
        (b'a|"b,c"|d\n1|"2,3"|4\n5|6|7\n', 'delimiter = "|"'),  # commas inside quotes
        (b'"a\nb";c\n1;2\n', 'delimiter = ";"'),  # a quoted header over two lines
        (b"a;b;c\n1;2,3;4\n5;6;7\n", 'delimiter = ";"'),  # a comma in a value
    ],
)
def test_wrong_delimiter_is_suggested(data: bytes, suggested: str) -> None:
    with pytest.raises(BadInput, match=suggested):
        read(data)


def test_the_right_delimiter_reads(tmp_path: Path) -> None:
    rows, _ = read(b"a\tb\n1\t2\n", dialect=CsvDialect(delimiter="\t"))
    assert values(rows) == [{"a": "1", "b": "2"}]
    rows, _ = read(b"a;b\n'x;y';2\n", dialect=CsvDialect(delimiter=";", quote_char="'"))
    assert values(rows) == [{"a": "x;y", "b": "2"}]
    rows, _ = read(b'a,b\n"x,2\n', dialect=CsvDialect(quote_char=None))
    assert values(rows) == [{"a": '"x', "b": "2"}]


def test_invalid_utf8_names_the_line_and_never_replaces() -> None:
    with pytest.raises(BadInput, match=r"line 3: is not valid utf-8 \(bytes ff fe"):
        read(b"a,b\n1,ok\n2,\xff\xfe\n")


def test_declared_encodings_are_transcoded() -> None:
    rows, _ = read(
        "name,city\nJosé,Zürich\n".encode("latin-1"), dialect=CsvDialect(encoding="latin-1")
    )
    assert values(rows) == [{"name": "José", "city": "Zürich"}]
    rows, _ = read("name\n€uro\n".encode("cp1252"), dialect=CsvDialect(encoding="cp1252"))
    assert values(rows) == [{"name": "€uro"}]
    rows, _ = read("name,n\nKłos,1\n".encode("utf-16"), dialect=CsvDialect(encoding="utf-16"))
    assert values(rows) == [{"name": "Kłos", "n": "1"}]


def test_a_utf8_bom_is_stripped() -> None:
    rows, reader = read(b"\xef\xbb\xbfid,name\n1,x\n")
    assert reader.header == ["id", "name"]
    assert values(rows) == [{"id": "1", "name": "x"}]


def test_nul_bytes_are_refused_with_their_line() -> None:
    with pytest.raises(BadInput, match="line 3: contains a NUL byte"):
        read(b"a,b\n1,2\n3,\x004\n")


def test_field_and_line_limits() -> None:
    long_field = b"a,b\n1," + b"x" * 5000 + b"\n"
    with pytest.raises(LimitExceeded, match="line 2: field 'b' is longer than 1,000 bytes"):
        read(long_field, limits=Limits(max_field_bytes=1000))
    with pytest.raises(LimitExceeded, match="longer than 4,096 bytes"):
        read(b"a,b\n1,2\n3," + b"y" * 10_000 + b"\n", limits=Limits(max_line_bytes=4096))
    # A long header: lakeport's limits, never Python's csv module's 131072.
    wide_header = b"a," + b"h" * 200_000 + b"\n1,2\n"
    assert len(read(wide_header)[1].header[1]) == 200_000
    with pytest.raises(LimitExceeded, match="line 1: header field 2 is longer than 1,000 bytes"):
        read(wide_header, limits=Limits(max_field_bytes=1000))


@pytest.mark.parametrize("data", [b"a,b\n", b"a,b", b"a,b\r\n\r\n", b'"a,b",c'])
def test_empty_and_header_only_files(data: bytes) -> None:
    with pytest.raises(BadInput, match="is empty"):
        read(b"")
    rows, reader = read(data)
    assert rows == []
    assert len(reader.header) == 2


def test_blank_lines_before_the_header_are_skipped_and_counted() -> None:
    rows, reader = read(b"\n\r\na,b\n1,2\n")
    assert reader.header == ["a", "b"]
    assert rows == [{"a": "1", "b": "2", "_line": 4}]
    with pytest.raises(BadInput, match=r"line 4: expected 2 fields, found 3"):
        read(b"\n\na,b\n1,2,3\n")


@pytest.mark.parametrize(
    ("data", "line", "guess"),
    [
        ("café,x\n1,2\n".encode("latin-1"), 1, "latin-1"),
        ("a,x\ncafé,2\n".encode("latin-1"), 2, "latin-1"),
        ("\nnaïve “quoted”,x\n1,2\n".encode("cp1252"), 2, "cp1252"),
        ("名前,x\n1,2\n".encode("shift_jis"), 1, "cp1252"),
    ],
)
def test_bytes_that_are_not_utf8_name_the_line_and_the_likely_encoding(
    data: bytes, line: int, guess: str
) -> None:
    # The same error in the header as in a data row, with what `inspect` would suggest.
    from engine.readers.source import guess_encoding

    assert guess_encoding(data) == guess
    with pytest.raises(
        BadInput, match=rf'line {line}: is not valid utf-8 .*set encoding = "{guess}" in the job'
    ):
        read(data)


def test_a_field_left_out_may_have_any_name() -> None:
    rows, _ = read(b"a,_line,A\n1,2,3\n", fields=["a"])
    assert values(rows) == [{"a": "1"}]


def test_fields_are_selected_and_unknown_ones_listed() -> None:
    rows, _ = read(b"a,b,c\n1,2,3\n", fields=["c", "a"])
    assert rows == [{"c": "3", "a": "1", "_line": 2}]
    with pytest.raises(ConfigError, match=r"'x' are not in .*the fields are a, b, c"):
        read(b"a,b,c\n1,2,3\n", fields=["a", "x"])


def test_a_row_of_empty_fields_is_a_blank_line() -> None:
    rows, reader = read(b'a,b\n1,2\n,\n"",""\n3,4\n')
    assert [r["a"] for r in rows] == ["1", "3"]
    assert reader.rows_blank == 2


CSV = b"id,name\n" + b"".join(b"%d,user%d\n" % (i, i) for i in range(1000))


@pytest.mark.parametrize(
    ("name", "compress"),
    [
        ("e.csv.gz", gzip.compress),
        ("e.csv.zst", zstandard.ZstdCompressor().compress),
        ("e.csv", gzip.compress),  # by magic bytes
    ],
)
def test_compressed_objects(name: str, compress: Callable[[bytes], bytes]) -> None:
    rows, _ = read(compress(CSV), name=name)
    assert len(rows) == 1000
    assert rows[-1] == {"id": "999", "name": "user999", "_line": 1001}


def test_concatenated_gzip_members_and_zstd_frames() -> None:
    half = len(CSV) // 2
    cut = CSV.index(b"\n", half) + 1
    for compress in (gzip.compress, zstandard.ZstdCompressor().compress):
        rows, _ = read(compress(CSV[:cut]) + compress(CSV[cut:]), name="e.csv.gz")
        assert len(rows) == 1000


@pytest.mark.parametrize(
    ("name", "compress"),
    [("e.csv.gz", gzip.compress), ("e.csv.zst", zstandard.ZstdCompressor().compress)],
)
def test_truncated_streams_are_errors(name: str, compress: Callable[[bytes], bytes]) -> None:
    whole = compress(CSV * 20)
    with pytest.raises(BadInput, match="stream is truncated"):
        read(whole[: len(whole) // 2], name=name)


def test_a_name_that_lies_about_compression() -> None:
    with pytest.raises(BadInput, match="named as gzip but is not a gzip stream"):
        read(CSV, name="e.csv.gz")


def test_decompression_limits() -> None:
    bomb = gzip.compress(b"a\n" + b"0\n" * 2_000_000)
    with pytest.raises(LimitExceeded, match="decompression bomb"):
        read(bomb, name="e.csv.gz", limits=Limits(max_ratio=50, ratio_after=1 << 20))
    with pytest.raises(LimitExceeded, match="more than 1,000,000 bytes"):
        read(bomb, name="e.csv.gz", limits=Limits(max_bytes=1_000_000))


def test_objects_that_are_not_csv(tmp_path: Path) -> None:
    parquet = io.BytesIO()
    pq.write_table(pa.table({"a": [1]}), parquet)
    with pytest.raises(BadInput, match="is a Parquet file, not text"):
        read(parquet.getvalue(), name="e.csv")
    with pytest.raises(BadInput, match="looks like JSON"):
        read(b'[{"a": 1}]\n', name="e.csv")
    with pytest.raises(BadInput, match="NUL byte"):
        read(bytes(range(256)) * 4, name="e.csv")


class Generated(io.RawIOBase):
    """A large CSV object made on the fly, so the test holds none of it."""

    def __init__(self, rows: int) -> None:
        self.head = b"id,payload\n"
        self.line = b"12345," + b"x" * 100 + b"\n"
        self.left = rows
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.head or self.line * min(self.left, max(1, len(buffer) // len(self.line)))
        if not self.head:
            self.left -= len(data) // len(self.line)
        self.head = b""
        data = data if self.left >= 0 else b""
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def test_reading_is_streamed() -> None:
    handle = Generated(300_000)  # 32 MB
    reader = CsvReader(
        lambda: cast(IO[bytes], handle), name="big.csv", limits=Limits(max_line_bytes=64 << 10)
    )
    batches = reader.batches()
    first = next(batches)
    assert first.num_rows > 0
    # pyarrow reads ahead a few dozen blocks; the rest is still in the object, not in memory.
    assert handle.position < 8 << 20
    assert sum(b.num_rows for b in batches) + first.num_rows == 300_000


cell = st.text(alphabet=st.sampled_from(list('ab,"\n\r é;')), max_size=6)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(cell, cell, cell), max_size=30))
def test_round_trip_of_what_python_csv_writes(rows: list[tuple[str, str, str]]) -> None:
    out = io.StringIO(newline="")
    # The default CR LF terminator makes the writer quote every value holding CR or LF.
    writer = csv.writer(out)
    writer.writerow(["a", "b", "c"])
    writer.writerows(rows)
    got, _ = read(out.getvalue().encode())
    kept = [r for r in rows if any(r)]
    assert [(r["a"], r["b"], r["c"]) for r in got] == kept
    line, expected_lines = 2, []
    for row in rows:
        if any(row):
            expected_lines.append(line)
        line += 1 + sum(
            value.count("\r\n")
            + value.replace("\r\n", "\n").count("\r")
            + value.replace("\r\n", "").count("\n")
            for value in row
        )
    assert [r["_line"] for r in got] == expected_lines


def test_a_file_without_a_header_takes_columns_or_numbered_names() -> None:
    tbl = b"1|Customer#1|BUILDING|\n2|Customer#2|AUTOMOBILE|\n"
    rows, reader = read(tbl, dialect=CsvDialect(delimiter="|", header=False))
    assert reader.header == ["column_1", "column_2", "column_3", "column_4"]
    assert [(r["column_1"], r["_line"]) for r in rows] == [("1", 1), ("2", 2)]
    rows, _ = read(b"\n1,a\n2,b\n", dialect=CsvDialect(header=False, columns=("id", "name")))
    assert rows == [{"id": "1", "name": "a", "_line": 2}, {"id": "2", "name": "b", "_line": 3}]
    with pytest.raises(BadInput, match=r"line 2: expected 2 fields, found 3"):
        read(b"1,a\n2,b,c\n", dialect=CsvDialect(header=False))
    with pytest.raises(ConfigError, match="set header = false"):
        read(b"1,a\n", dialect=CsvDialect(columns=("id", "name")))


@pytest.mark.parametrize("chunk", [1, 3, 7, 4 << 20])
def test_comment_lines_are_skipped_and_lines_stay_true(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.readers.source as source

    monkeypatch.setattr(source, "CHUNK", chunk)  # comments cut across chunks
    data = b"# exported by x\n#\r\nid,note\n1,#not a comment\n# a comment\n2,b\r\n#end"
    rows, reader = read(data, dialect=CsvDialect(comment="#"))
    assert reader.header == ["id", "note"]
    assert rows == [
        {"id": "1", "note": "#not a comment", "_line": 4},
        {"id": "2", "note": "b", "_line": 6},
    ]
    with pytest.raises(ConfigError, match="comment must be one character other than"):
        read(data, dialect=CsvDialect(comment=","))
