"""The store: appends exactly once, schema growth, reading back, and state.db."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError, StoreError
from engine.state import MIGRATIONS, StateDB
from engine.store import Source, Store
from tests.conftest import S3Server


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The same store tests with tables in the local folder and in S3.

    (memory:// cannot hold Delta tables: deltalake keeps a memory store per table object.)
    """
    if request.param == "local":
        return Store(tmp_path / "store")
    s3: S3Server = request.getfixturevalue("s3")
    Store(tmp_path / "store").authorizations.add(s3.authorization())
    bucket = s3.new_bucket()
    return Store(tmp_path / "store", tables=f"s3://{bucket}/lake", tables_auth="moto")


SCHEMA = pa.schema([("user_id", pa.string()), ("event", pa.string())])


def batches(rows: int, start: int = 0, size: int = 1000) -> Iterator[pa.RecordBatch]:
    for first in range(start, start + rows, size):
        ids = [f"u{i}" for i in range(first, min(first + size, start + rows))]
        yield pa.record_batch([pa.array(ids), pa.array(["click"] * len(ids))], schema=SCHEMA)


def test_creates_the_layout_on_first_use(tmp_path: Path) -> None:
    store = Store(tmp_path / "new")
    for folder in ("streams", "profiles", "snapshots", "tmp"):
        assert (store.path / folder).is_dir()
    assert (store.path / "state.db").is_file()


def test_tables_in_s3_are_remembered_and_cannot_move(tmp_path: Path, s3: S3Server) -> None:
    Store(tmp_path / "store").authorizations.add(s3.authorization())
    bucket = s3.new_bucket()
    store = Store(tmp_path / "store", tables=f"s3://{bucket}/lake", tables_auth="moto")
    store.append("events", batches(5), source=Source("f"), job="j")
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.startswith("lake/streams/events/_delta_log/") for k in keys)
    assert not (tmp_path / "store" / "streams").exists()

    reopened = Store(tmp_path / "store")
    assert reopened.tables.url == f"s3://{bucket}/lake"
    assert reopened.stream("events").collect().height == 5
    with pytest.raises(ConfigError, match=f"keeps its tables at s3://{bucket}/lake"):
        Store(tmp_path / "store", tables=f"s3://{bucket}/elsewhere", tables_auth="moto")
    with pytest.raises(ConfigError, match="cannot be removed while the store uses it"):
        reopened.authorizations.remove("moto")


def test_tables_in_s3_need_an_authorization_that_exists(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="need tables_auth"):
        Store(tmp_path / "store", tables="s3://bucket/lake")
    with pytest.raises(ConfigError, match="no authorization named 'nope'"):
        Store(tmp_path / "store", tables="s3://bucket/lake", tables_auth="nope")
    with pytest.raises(ConfigError, match="memory://"):
        Store(tmp_path / "store", tables="memory://lake")


def test_append_and_read_back_as_lazyframe(store: Store) -> None:
    result = store.append("events", batches(2500), source=Source("s3://b/e.csv", "etag1"), job="j")
    assert (result.rows, result.already_committed) == (2500, False)

    frame = store.stream("events")
    assert isinstance(frame, pl.LazyFrame)
    rows = frame.collect()
    assert rows.height == 2500
    assert set(rows["user_id"]) == {f"u{i}" for i in range(2500)}
    assert rows["_source"].unique().to_list() == ["s3://b/e.csv"]
    assert rows["_job"].unique().to_list() == ["j"]
    assert rows.schema["_ts"] == pl.Datetime("us", "UTC")
    assert rows.schema["_ingested_at"] == pl.Datetime("us", "UTC")
    # Without an event time, _ts is the ingestion time.
    assert (rows["_ts"] == rows["_ingested_at"]).all()


def test_keeps_the_event_time_it_is_given(store: Store) -> None:
    when = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    schema = pa.schema([("_ts", pa.timestamp("us", tz="UTC")), ("event", pa.string())])
    batch = pa.record_batch(
        [pa.array([when], schema.field(0).type), pa.array(["x"])], schema=schema
    )
    store.append("events", [batch], source=Source("f"), job="j")
    assert store.stream("events").collect()["_ts"].to_list() == [when]


def test_same_job_object_and_etag_twice_is_committed_once(store: Store) -> None:
    source = Source("s3://bucket/events_20261101.csv", "abc123")
    first = store.append("events", batches(100), source=source, job="import")
    second = store.append("events", batches(100), source=source, job="import")
    assert (first.rows, first.already_committed) == (100, False)
    assert (second.rows, second.already_committed) == (0, True)
    assert second.version == first.version
    assert store.stream("events").collect().height == 100
    assert store.is_committed("events", "import", source)


def test_a_new_etag_or_another_job_is_a_new_append(store: Store) -> None:
    store.append("events", batches(10), source=Source("k", "v1"), job="a")
    store.append("events", batches(10), source=Source("k", "v2"), job="a")
    store.append("events", batches(10), source=Source("k", "v1"), job="b")
    assert store.stream("events").collect().height == 30


def test_an_empty_source_is_still_committed_once(store: Store) -> None:
    empty = pa.RecordBatchReader.from_batches(SCHEMA, [])
    first = store.append("events", empty, source=Source("empty.csv", "e"), job="j")
    again = store.append(
        "events",
        pa.RecordBatchReader.from_batches(SCHEMA, []),
        source=Source("empty.csv", "e"),
        job="j",
    )
    assert (first.rows, first.already_committed) == (0, False)
    assert again.already_committed
    assert store.stream("events").collect().height == 0


def test_new_fields_grow_the_schema(store: Store) -> None:
    store.append("events", batches(3), source=Source("one"), job="j")
    wider = pa.schema([("user_id", pa.string()), ("event", pa.string()), ("country", pa.string())])
    batch = pa.record_batch([pa.array(["u9"]), pa.array(["buy"]), pa.array(["GB"])], schema=wider)
    store.append("events", [batch], source=Source("two"), job="j")
    rows = store.stream("events").collect()
    assert rows.height == 4
    assert rows.filter(pl.col("user_id") == "u9")["country"].to_list() == ["GB"]
    assert rows.filter(pl.col("user_id") == "u0")["country"].to_list() == [None]
    info = {s.name: s for s in store.streams()}["events"]
    assert info.rows == 4
    assert "country" in info.fields


def test_batches_are_streamed_not_gathered(store: Store) -> None:
    pulled: list[int] = []

    def lazy() -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(batches(5000, size=500)):
            pulled.append(i)
            yield batch

    generator = lazy()
    assert pulled == []  # nothing is read before the append asks for it
    result = store.append("events", generator, source=Source("big"), job="j")
    assert result.rows == 5000
    assert pulled == list(range(10))


def test_fields_the_store_owns_are_refused(store: Store) -> None:
    schema = pa.schema([("_source", pa.string())])
    batch = pa.record_batch([pa.array(["x"])], schema=schema)
    with pytest.raises(StoreError, match="_source"):
        store.append("events", [batch], source=Source("f"), job="j")
    assert store.streams() == []


def test_fields_that_differ_only_in_case_are_refused_and_nothing_is_committed(
    store: Store,
) -> None:
    # Delta's field names are case-insensitive: its writer failed on these with its own error.
    store.append("events", batches(1), source=Source("one"), job="j")
    upper = pa.record_batch([pa.array(["u"])], schema=pa.schema([("USER_ID", pa.string())]))
    with pytest.raises(
        StoreError, match=r"'USER_ID' of two differs only in case from the stream's field 'user_id'"
    ):
        store.append("events", [upper], source=Source("two"), job="j")
    both = pa.record_batch(
        [pa.array(["a"]), pa.array(["b"])],
        schema=pa.schema([("Id", pa.string()), ("id", pa.string())]),
    )
    with pytest.raises(StoreError, match=r"'id' of three differs only in case from the field 'Id'"):
        store.append("fresh", [both], source=Source("three"), job="j")
    assert store.stream("events").collect().height == 1
    assert [s.name for s in store.streams()] == ["events"]


def test_fields_that_are_not_text_are_refused_and_nothing_is_committed(store: Store) -> None:
    store.append("events", batches(1), source=Source("one"), job="j")
    schema = pa.schema([("user_id", pa.int64())])
    batch = pa.record_batch([pa.array([1])], schema=schema)
    with pytest.raises(StoreError, match=r"field 'user_id' from two is int64.*cast it to string"):
        store.append("events", [batch], source=Source("two"), job="j")
    assert store.stream("events").collect().height == 1


def test_list_fields_and_line_numbers_are_kept(store: Store) -> None:
    schema = pa.schema([("tags", pa.list_(pa.string())), ("_line", pa.int64())])
    batch = pa.record_batch([pa.array([["a", "b"], []]), pa.array([2, 3])], schema=schema)
    store.append("events", [batch], source=Source("one"), job="j")
    rows = store.stream("events").sort("_line").collect()
    assert rows["tags"].to_list() == [["a", "b"], []]
    assert rows["_line"].to_list() == [2, 3]


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x" * 200])
def test_bad_stream_names(store: Store, name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid stream name"):
        store.append(name, batches(1), source=Source("f"), job="j")


def test_unknown_stream_lists_the_known_ones(store: Store) -> None:
    store.append("events", batches(1), source=Source("f"), job="j")
    with pytest.raises(StoreError, match=r"no stream named 'evnts'.*streams: events"):
        store.stream("evnts")


CRASH_AFTER_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    import pyarrow as pa
    from engine.store import Source, Store

    def die(*args, **kwargs):
        # The Delta commit is done; the process dies before state.db hears of it.
        os.kill(os.getpid(), signal.SIGKILL)

    Store._record = die
    schema = pa.schema([("user_id", pa.string())])
    batch = pa.record_batch([pa.array(["a", "b", "c"])], schema=schema)
    Store(sys.argv[1]).append("events", [batch], source=Source("s3://b/k.csv", "e1"), job="j")
    """
)


def test_killed_between_commit_and_state_update_then_rerun(store: Store) -> None:
    store_path = store.path
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_COMMIT, str(store_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert crashed.returncode == -9, crashed.stderr
    source = Source("s3://b/k.csv", "e1")
    assert store.stream("events").collect().height == 3
    assert not store.state.append_recorded(_app_id("j", source))

    schema = pa.schema([("user_id", pa.string())])
    batch = pa.record_batch([pa.array(["a", "b", "c"])], schema=schema)
    rerun = store.append("events", [batch], source=source, job="j")
    assert rerun.already_committed
    assert store.stream("events").collect().height == 3
    assert store.state.append_recorded(_app_id("j", source))


def _app_id(job: str, source: Source) -> str:
    from engine.store import append_id

    return append_id(job, source)


def test_state_db_is_versioned(store: Store) -> None:
    assert store.state.schema_version() == len(MIGRATIONS)
    # Opening again migrates nothing and keeps the data.
    store.state.set_watermark("job", "last_file", "events_20261101.csv")
    again = StateDB(store.path / "state.db")
    assert again.get_watermark("job", "last_file") == "events_20261101.csv"


def test_state_db_from_a_newer_lakeport_is_refused(store: Store) -> None:
    with sqlite3.connect(store.path / "state.db") as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="upgrade lakeport"):
        StateDB(store.path / "state.db")


def test_runs_are_recorded(store: Store) -> None:
    run = store.state.start_run("import", "s3://b/k.csv")
    store.state.finish_run(run, "succeeded", {"rows_imported": 10})
    (recorded,) = store.state.runs("import")
    assert (recorded.status, recorded.stats, recorded.object) == (
        "succeeded",
        {"rows_imported": 10},
        "s3://b/k.csv",
    )


text_values = st.one_of(st.none(), st.text(max_size=20))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.tuples(text_values, text_values), max_size=50))
def test_append_then_read_gives_back_the_rows(
    tmp_path: Path, rows: list[tuple[str | None, ...]]
) -> None:
    store = Store(tmp_path / f"prop-{uuid.uuid4().hex}")
    batch = pa.record_batch(
        [pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.string())],
        names=["a", "b"],
    )
    result = store.append("events", [batch], source=Source("f", "e"), job="j")
    assert result.rows == len(rows)
    back = store.stream("events").select("a", "b").collect().rows()
    assert sorted(back, key=repr) == sorted(rows, key=repr)


def test_two_appends_of_the_same_source_at_once_commit_it_once(store: Store) -> None:
    import threading
    import time

    store.append("events", batches(1), source=Source("first"), job="j")

    def slow() -> Iterator[pa.RecordBatch]:
        for batch in batches(200, size=10):
            time.sleep(0.005)
            yield batch

    results = []

    def append() -> None:
        results.append(store.append("events", slow(), source=Source("same", "e1"), job="j"))

    threads = [threading.Thread(target=append) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.already_committed for r in results) == [False, True]
    assert store.stream("events").collect().height == 201
