"""Profiles: identity resolution over the streams, stable ids, every aggregation and type."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.audiences import Audiences
from engine.errors import ConfigError
from engine.profiles import config as profiles_config
from engine.profiles.identity import components, profile_ids
from engine.store import Source, Store
from pipelines.profiles import build_profiles

START = datetime(2026, 11, 1, tzinfo=UTC)


def append(store: Store, stream: str, rows: list[dict[str, Any]], key: str) -> None:
    """Rows as a stream's events: every field text, `ts` (minutes from START) as `_ts`."""
    names = sorted({name for row in rows for name in row if name != "ts"})
    columns = {
        name: pa.array([None if r.get(name) is None else str(r[name]) for r in rows], pa.string())
        for name in names
    }
    columns["_ts"] = pa.array(
        [START + timedelta(minutes=r.get("ts", 0)) for r in rows], pa.timestamp("us", tz="UTC")
    )
    store.append(stream, [pa.record_batch(columns)], source=Source(key), job="test")


def build(store: Store, tmp_path: Path, rules: str) -> dict[str, Any]:
    path = tmp_path / "profiles.toml"
    path.write_text(rules)
    result = build_profiles(store, path)
    return {"report": result.report, "rows": store.profiles().collect().to_dicts()}


BY = 'by = ["user_id", "email"]\n[normalize]\nemail = ["trim", "lower"]\n'


def test_events_sharing_any_identity_make_one_profile(store: Store, tmp_path: Path) -> None:
    append(
        store,
        "events",
        [
            {"email": "A@X.com ", "ts": 1},
            {"user_id": "7", "ts": 2},
            {"user_id": "7", "email": "a@x.com", "ts": 3},
            {"user_id": "8", "ts": 4},
        ],
        "f1",
    )
    built = build(store, tmp_path, BY)
    rows = sorted(built["rows"], key=lambda r: r["_events"])
    assert len(rows) == 2
    assert rows[1]["_events"] == 3
    assert rows[1]["user_id"] == "7"
    assert rows[1]["email"] == "a@x.com"
    assert sorted((i["field"], i["value"]) for i in rows[1]["_identities"]) == [
        ("email", "a@x.com"),
        ("user_id", "7"),
    ]
    assert built["report"].profiles == 2
    # The rules are kept with the profiles: exports and later builds know the identities.
    assert store.profiles_config().by == ("user_id", "email")


def test_a_chain_of_identities_is_one_profile(store: Store, tmp_path: Path) -> None:
    # a-b, b-c, c-d: four values, one user, though no event holds a and d together.
    append(
        store,
        "events",
        [
            {"user_id": "a", "email": "b@x"},
            {"user_id": "c", "email": "b@x"},
            {"user_id": "c", "email": "d@x"},
        ],
        "f1",
    )
    rows = build(store, tmp_path, BY)["rows"]
    assert len(rows) == 1
    assert len(rows[0]["_identities"]) == 4


def test_ids_are_stable_and_a_merge_takes_the_smallest(store: Store, tmp_path: Path) -> None:
    append(store, "events", [{"user_id": "1"}, {"user_id": "2"}, {"email": "e@x"}], "f1")
    first = {
        r["user_id"] or r["email"]: r["_profile_id"] for r in build(store, tmp_path, BY)["rows"]
    }
    assert len(set(first.values())) == 3
    # A later import links user 2 with e@x: they merge and keep the smaller of their ids.
    append(store, "events", [{"user_id": "2", "email": "e@x", "ts": 9}, {"user_id": "3"}], "f2")
    second = build(store, tmp_path, BY)["rows"]
    by_user = {r["user_id"]: r for r in second}
    assert by_user["1"]["_profile_id"] == first["1"]
    assert by_user["2"]["_profile_id"] == min(first["2"], first["e@x"])
    assert by_user["3"]["_profile_id"] > max(first.values())
    assert len(second) == 3


def test_every_aggregation_and_type(store: Store, tmp_path: Path) -> None:
    append(
        store,
        "events",
        [
            {
                "user_id": "u",
                "country": "FR",
                "amount": "10",
                "score": "1.5",
                "ok": "true",
                "at": "2026-01-02T03:04:05Z",
                "tag": "b",
                "k": "size",
                "v": "S",
                "ts": 1,
            },
            {
                "user_id": "u",
                "country": "US",
                "amount": "5",
                "score": "x",
                "ok": "false",
                "at": "2025-01-01T00:00:00Z",
                "tag": "a",
                "k": "size",
                "v": "M",
                "ts": 2,
            },
            {"user_id": "u", "amount": "2.5", "tag": "b", "k": "color", "v": "red", "ts": 3},
        ],
        "f1",
    )
    rules = """
by = ["user_id"]
[fields.country]
from = "country"
agg = "latest"
[fields.first_country]
from = "country"
agg = "first"
[fields.total]
from = "amount"
agg = "sum"
type = "int"
[fields.best]
from = "score"
agg = "max"
type = "float"
[fields.smallest]
from = "amount"
agg = "min"
type = "int"
[fields.events_with_amount]
from = "amount"
agg = "count"
[fields.all_events]
agg = "count"
[fields.ever_ok]
from = "ok"
agg = "max"
type = "bool"
[fields.earliest]
from = "at"
agg = "min"
type = "timestamp"
[fields.tags]
from = "tag"
agg = "set"
[fields.tag_history]
from = "tag"
agg = "list"
[fields.attributes]
agg = "map"
key = "k"
value = "v"
"""
    built = build(store, tmp_path, rules)
    (row,) = built["rows"]
    assert row["country"] == "US"
    assert row["first_country"] == "FR"
    assert row["total"] == 15  # 2.5 is not an int: left out and counted
    assert row["best"] == 1.5
    assert row["smallest"] == 5
    assert row["events_with_amount"] == 3
    assert row["all_events"] == 3
    assert row["ever_ok"] is True
    assert row["earliest"] == datetime(2025, 1, 1, tzinfo=UTC)
    assert row["tags"] == ["a", "b"]
    assert row["tag_history"] == ["b", "a", "b"]
    assert row["attributes"] == {"color": "red", "size": "M"}  # the latest value of each key
    assert built["report"].unconverted == {"total": 1, "best": 1, "smallest": 1}


def test_sources_and_renames(store: Store, tmp_path: Path) -> None:
    append(store, "web", [{"uid": "1", "page": "home"}], "w")
    append(store, "crm", [{"user_id": "1", "email": "a@x"}], "c")
    append(store, "other", [{"user_id": "2"}], "o")
    rules = BY + '[sources.web]\nrename = { uid = "user_id" }\n[sources.crm]\n'
    rules += '[fields.page]\nfrom = "page"\nagg = "latest"\n'
    rows = build(store, tmp_path, rules)["rows"]
    assert len(rows) == 1
    assert rows[0]["page"] == "home"
    assert rows[0]["email"] == "a@x"


def test_events_without_identity_are_counted(store: Store, tmp_path: Path) -> None:
    append(store, "events", [{"user_id": "1"}, {"page": "x"}, {"user_id": " "}], "f1")
    built = build(store, tmp_path, 'by = ["user_id"]\n[normalize]\nuser_id = "trim"\n')
    assert built["report"].without_identity == 2
    assert len(built["rows"]) == 1


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("", "by is missing"),
        ('by = ["user_id"]\n[fields.x]\nfrom = "a"\nagg = "avg"\n', "fields.x.agg must be one of"),
        ('by = ["user_id"]\n[fields.x]\nfrom = "a"\nagg = "sum"\ntype = "bool"\n', "fields.x.type"),
        ('by = ["user_id"]\n[fields.x]\nagg = "latest"\n', "fields.x.from is missing"),
        ('by = ["user_id"]\n[fields.x]\nagg = "map"\nkey = "k"\n', "give key and value"),
        (
            'by = ["user_id"]\n[normalize]\nemail = ["lower"]\n',
            "normalize.email is not an identity",
        ),
        ('by = ["user_id"]\n[fields.user_id]\nfrom = "a"\nagg = "latest"\n', "is an identity"),
        ('by = ["user_id"]\nfeilds = 1\n', "did you mean 'fields'"),
        ('by = ["_profile_id"]\n', "not a usable field name"),
    ],
)
def test_bad_rules_name_the_key_and_the_fix(rules: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        profiles_config.parse(rules)


def test_the_rules_round_trip_through_json() -> None:
    config = profiles_config.parse(BY + '[sources.web]\nrename = { uid = "user_id" }\n')
    assert profiles_config.ProfilesConfig.from_json(config.to_json()) == config


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15)), max_size=30))
def test_components_match_a_simple_union_find(edges: list[tuple[int, int]]) -> None:
    nodes = 16
    parent = list(range(nodes))

    def root(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)
    expected = [root(x) for x in range(nodes)]
    found = components(np.array([e[0] for e in edges]), np.array([e[1] for e in edges]), nodes)
    assert found.tolist() == expected


def test_profile_ids_keep_old_ones_and_split_ids_go_to_one() -> None:
    roots = np.array([0, 0, 2, 2, 4])
    # Nodes 0 and 2 had id 5 (a split): root 0 keeps it, root 2 gets a new one.
    ids = profile_ids(roots, np.array([5, 9, 5, -1, -1]))
    assert ids.tolist() == [5, 5, 10, 10, 11]


def test_the_cli_builds_and_shows_profiles(store: Store, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from pipelines.cli import cli

    append(store, "events", [{"user_id": "1", "country": "FR"}, {"email": "x"}], "f1")
    rules = tmp_path / "profiles.toml"
    rules.write_text(BY + '[fields.country]\nfrom = "country"\nagg = "latest"\n')
    runner = CliRunner()
    built = runner.invoke(cli, ["--store", str(store.path), "profiles", "build", str(rules)])
    assert built.exit_code == 0, built.output
    assert "built 2 profiles from 2 events (events)" in built.output
    shown = runner.invoke(
        cli,
        ["--store", str(store.path), "profiles", "show", "--where", "country = 'FR'", "-o", "json"],
    )
    assert shown.exit_code == 0, shown.output
    assert [row["user_id"] for row in json.loads(shown.output)] == ["1"]
    bad = tmp_path / "bad.toml"
    bad.write_text('by = ["user_id"]\n[fields.x]\nagg = "median"\n')
    refused = runner.invoke(cli, ["--store", str(store.path), "profiles", "build", str(bad)])
    assert refused.exit_code == 1
    assert "fields.x.agg must be one of" in refused.output
    assert "Traceback" not in refused.output


def test_list_fields_gather_their_items(store: Store, tmp_path: Path) -> None:
    # JSON arrays arrive as list<string> fields: set and list gather their items.
    batch = pa.record_batch(
        {
            "user_id": pa.array(["1", "1"]),
            "tags": pa.array([["b", "a"], ["a", "c", None]], pa.list_(pa.string())),
            "sizes": pa.array([["1", "x"], ["2"]], pa.list_(pa.string())),
            "_ts": pa.array([START, START + timedelta(minutes=1)], pa.timestamp("us", tz="UTC")),
        }
    )
    store.append("events", [batch], source=Source("j"), job="test")
    rules = 'by = ["user_id"]\n[fields.tags]\nfrom = "tags"\nagg = "set"\n'
    rules += '[fields.history]\nfrom = "tags"\nagg = "list"\n'
    rules += '[fields.sizes]\nfrom = "sizes"\nagg = "set"\ntype = "int"\n'
    (row,) = build(store, tmp_path, rules)["rows"]
    assert row["tags"] == ["a", "b", "c"]
    assert row["history"] == ["b", "a", "a", "c"]
    assert row["sizes"] == [1, 2]
    assert build(store, tmp_path, rules)["report"].unconverted == {"sizes": 1}  # "x"
    before = store.profiles().collect().to_dicts()
    refused = {
        '[fields.t]\nfrom = "tags"\nagg = "latest"\ntype = "int"\n': (
            r'fields.t: agg = "latest" with type = "int" does not apply to \'tags\', which '
            r'holds lists \(list<string> in events\): a list field takes agg = "set" or "list"'
        ),
        '[fields.t]\nagg = "map"\nkey = "tags"\nvalue = "user_id"\n': (
            r'fields.t: agg = "map" takes one key an event, and \'tags\' holds lists'
        ),
        '[fields.t]\nagg = "map"\nkey = "user_id"\nvalue = "sizes"\n': (
            r'fields.t: agg = "map" takes one value an event, and \'sizes\' holds lists'
        ),
    }
    for rule, message in refused.items():
        with pytest.raises(ConfigError, match=message):
            build(store, tmp_path, 'by = ["user_id"]\n' + rule)
    with pytest.raises(ConfigError, match=r"by: the identity field 'tags' holds list<string> in"):
        build(store, tmp_path, 'by = ["tags"]\n')
    assert store.profiles().collect().to_dicts() == before  # nothing built


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_ready_made_profiles_load_from_parquet_or_csv(
    store: Store, tmp_path: Path, suffix: str
) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from pipelines.profiles import load_profiles

    table = pa.table(
        {
            "user_id": pa.array([1, 2, 3]),
            "email": pa.array(["a@x", None, "c@x"]),
            "score": pa.array([10.5, 20.0, 30.0]),
            "tags": pa.array([["vip"], [], None], pa.list_(pa.string())),
        }
    )
    path = tmp_path / f"ready{suffix}"
    if suffix == ".csv":
        table = table.drop_columns(["tags"])
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    assert load_profiles(store, str(path), ["user_id", "email"]) == 3
    rows = store.profiles().sort("_profile_id").collect().to_dicts()
    assert [r["_profile_id"] for r in rows] == [1, 2, 3]
    assert rows[1]["_identities"] == [{"field": "user_id", "value": "2"}]
    assert rows[0]["score"] == 10.5
    Audiences(store).create("high", "score > 15")
    assert Audiences(store).sizes() == {"high": 2}
    with pytest.raises(ConfigError, match="does not have; its columns are"):
        load_profiles(store, str(path), ["customer_id"])


def test_the_cli_loads_profiles(store: Store, tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from pipelines.cli import cli

    path = tmp_path / "ready.parquet"
    pq.write_table(pa.table({"user_id": ["1", "2"], "country": ["US", "FR"]}), path)
    runner = CliRunner()
    loaded = runner.invoke(
        cli, ["--store", str(store.path), "profiles", "load", str(path), "--by", "user_id"]
    )
    assert loaded.exit_code == 0, loaded.output
    assert "loaded 2 profiles" in loaded.output
    wrong = runner.invoke(
        cli, ["--store", str(store.path), "profiles", "load", str(tmp_path / "x.json"), "--by", "a"]
    )
    assert wrong.exit_code == 1
    assert "Parquet (.parquet) or CSV" in wrong.output


def test_a_csv_whose_later_rows_break_its_types_fails_clearly(store: Store, tmp_path: Path) -> None:
    from pipelines.profiles import load_profiles

    path = tmp_path / "ready.csv"
    # The first block makes `score` an integer column; a row far below holds text.
    path.write_text("user_id,score\n" + "".join(f"{i},{i}\n" for i in range(200_000)) + "x,high\n")
    with pytest.raises(
        ConfigError, match=r"cannot be read as CSV further on.*convert it to Parquet"
    ):
        load_profiles(store, str(path), ["user_id"])
    assert store.profiles_scan() is None  # nothing committed


def test_ready_made_profiles_are_read_as_every_import_reads(store: Store, tmp_path: Path) -> None:
    """`profiles load` reads through engine.readers and engine.storage: compression is told by
    the bytes, bytes that are not UTF-8 name their line, the decompression limits hold, and a
    missing file is said as storage says it."""
    import gzip

    from engine.errors import BadInput, LimitExceeded, NoSuchKey
    from engine.readers.source import Limits
    from engine.readers.tables import open_table
    from pipelines.profiles import load_profiles

    hidden = tmp_path / "ready.csv"  # gzip under a plain name
    hidden.write_bytes(gzip.compress(b"user_id,score\n1,10\n2,20\n"))
    assert load_profiles(store, str(hidden), ["user_id"]) == 2
    latin = tmp_path / "latin.csv"
    latin.write_bytes("user_id,city\n1,Paris\n2,S\xe3o Paulo\n".encode("latin-1"))
    with pytest.raises(BadInput, match=r"latin.csv, line 3: is not valid utf-8"):
        load_profiles(store, str(latin), ["user_id"])
    bomb = tmp_path / "bomb.csv.gz"
    bomb.write_bytes(gzip.compress(b"user_id\n" + b"1\n" * 3_000_000))
    with pytest.raises(LimitExceeded, match="max_bytes"):
        open_table(str(bomb), limits=Limits(max_bytes=1 << 20)).read_all()
    with pytest.raises(NoSuchKey, match="does not exist"):
        load_profiles(store, str(tmp_path / "gone.parquet"), ["user_id"])
    assert store.profiles().collect().height == 2  # the first load's, kept


def test_a_misspelt_identity_field_is_refused_and_the_profiles_stay(
    store: Store, tmp_path: Path
) -> None:
    append(store, "events", [{"user_id": "1", "ts": 1}, {"user_id": "2", "ts": 2}], "f1")
    good = build(store, tmp_path, 'by = ["user_id"]\n')["rows"]
    with pytest.raises(ConfigError, match=r"by: no stream has a field 'userid'.*'user_id'\?"):
        build(store, tmp_path, 'by = ["userid"]\n')
    assert store.profiles().collect().to_dicts() == good


@pytest.mark.parametrize(("source", "near"), [("amont", "amount"), ("contry", "country")])
def test_a_misspelt_rule_field_names_the_nearest(
    store: Store, tmp_path: Path, source: str, near: str
) -> None:
    append(store, "events", [{"user_id": "1", "amount": "3", "country": "GB"}], "f1")
    rules = f'by = ["user_id"]\n[fields.x]\nfrom = "{source}"\nagg = "latest"\n'
    with pytest.raises(ConfigError, match=rf"fields.x: no stream has a field '{source}'.*'{near}'"):
        build(store, tmp_path, rules)


def test_a_build_of_no_profiles_from_events_is_refused_unless_allowed(
    store: Store, tmp_path: Path
) -> None:
    append(store, "events", [{"user_id": "1", "ts": 1}], "f1")
    good = build(store, tmp_path, 'by = ["user_id"]\n')["rows"]
    append(store, "other", [{"email": "", "ts": 1}], "f2")
    rules = tmp_path / "only-other.toml"
    rules.write_text('by = ["email"]\n[sources.other]\n')
    with pytest.raises(ConfigError, match=r"0 profiles from 1 events.*--allow-empty"):
        build_profiles(store, rules)
    assert store.profiles().collect().to_dicts() == good
    assert build_profiles(store, rules, allow_empty=True).report.profiles == 0
