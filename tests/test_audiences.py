"""Audiences: conditions checked at creation, members, sizes and memberships in one pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.audiences import Audiences
from engine.errors import ConfigError
from engine.store import Store
from pipelines.cli import cli
from pipelines.profiles import build_profiles
from tests.test_profiles import append

RULES = """
by = ["user_id"]
[fields.country]
from = "country"
agg = "latest"
[fields.score]
from = "score"
agg = "sum"
type = "int"
[fields.tags]
from = "tag"
agg = "set"
[fields.joined]
from = "joined"
agg = "first"
type = "timestamp"
"""


@pytest.fixture
def profiled(store: Store, tmp_path: Path) -> Store:
    append(
        store,
        "events",
        [
            {"user_id": "1", "country": "US", "score": "150", "tag": "vip", "joined": "2025-01-01"},
            {"user_id": "2", "country": "US", "score": "50", "tag": "new", "joined": "2026-06-01"},
            {"user_id": "3", "country": "FR", "score": "500", "tag": "vip"},
            {"user_id": "3", "tag": "new"},
        ],
        "f1",
    )
    rules = tmp_path / "profiles.toml"
    rules.write_text(RULES)
    build_profiles(store, rules)
    return store


def users(frame_rows: list[dict[str, object]]) -> list[str]:
    return sorted(str(row["user_id"]) for row in frame_rows)


def test_audiences_select_profiles(profiled: Store) -> None:
    Audiences(profiled).create("us_high", "country = 'US' AND score > 100")
    Audiences(profiled).create("vip", "list_contains(tags, 'vip')")
    Audiences(profiled).create("recent", "joined > TIMESTAMP '2026-01-01'")
    Audiences(profiled).create("no_join", "joined IS NULL")
    assert users(Audiences(profiled).members("us_high").collect().to_dicts()) == ["1"]
    assert users(Audiences(profiled).members("vip").collect().to_dicts()) == ["1", "3"]
    assert users(Audiences(profiled).members("recent").collect().to_dicts()) == ["2"]
    assert Audiences(profiled).sizes() == {"no_join": 1, "recent": 1, "us_high": 1, "vip": 2}


def test_memberships_list_every_audience_of_each_profile(profiled: Store) -> None:
    Audiences(profiled).create("us", "country = 'US'")
    Audiences(profiled).create("vip", "list_contains(tags, 'vip')")
    ids = {r["user_id"]: r["_profile_id"] for r in profiled.profiles().collect().to_dicts()}
    found = {
        r["_profile_id"]: r["audiences"]
        for r in Audiences(profiled).memberships().collect().to_dicts()
    }
    assert found == {ids["1"]: ["us", "vip"], ids["2"]: ["us"], ids["3"]: ["vip"]}


def test_an_audience_is_a_lazy_frame_that_takes_filters(profiled: Store) -> None:
    import polars as pl

    Audiences(profiled).create("us", "country = 'US'")
    frame = (
        Audiences(profiled).members("us").filter(pl.col("score") < 100).select("user_id").collect()
    )
    assert frame.to_dicts() == [{"user_id": "2"}]


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("contry = 'US'", r"names 'contry'.*did you mean 'country'.*the fields are"),
        ("country IN (SELECT 'US')", "holds a subquery"),
        ("read_csv('/etc/passwd') IS NULL", r"calls read_csv\(\)"),
        ("country = 'US'; DROP TABLE x", "statement ends"),
        ("country = 'US' -- and more", "comments"),
        ("score > 1 UNION SELECT 1", "not an SQL expression"),
        ("score > 1) UNION (SELECT 1", "not one expression"),
        ("country = 'US') GROUP BY (country", "not one expression"),
        ("list_contains(score, 'x')", "cannot run on the profiles"),
        ("country = ", "not an SQL expression"),
        ("", "is empty"),
        ("row_number() OVER () > 1", "window"),
    ],
)
def test_bad_conditions_are_refused_at_creation(
    profiled: Store, condition: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Audiences(profiled).create("a", condition)
    assert Audiences(profiled).conditions() == {}


def test_names_are_unique_and_removable(profiled: Store) -> None:
    Audiences(profiled).create("us", "country = 'US'")
    with pytest.raises(ConfigError, match="exists"):
        Audiences(profiled).create("us", "country = 'FR'")
    Audiences(profiled).remove("us")
    with pytest.raises(ConfigError, match="no audience named 'us'"):
        Audiences(profiled).members("us")


def test_the_cli_manages_audiences(profiled: Store) -> None:
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--store", str(profiled.path), *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert "audience us created: 2 profiles" in run(
        "audience", "create", "us", "--where", "country = 'US'"
    )
    listed = json.loads(run("audience", "list", "-o", "json"))
    assert listed == [{"name": "us", "profiles": 2, "where": "country = 'US'"}]
    shown = json.loads(run("audience", "show", "us", "-n", "1", "-o", "json"))
    assert len(shown) == 1
    matched = json.loads(
        run("profiles", "show", "--where", "list_contains(tags, 'new')", "-o", "json")
    )
    assert users(matched) == ["2", "3"]
    refused = runner.invoke(
        cli, ["--store", str(profiled.path), "audience", "create", "x", "--where", "nope = 1"]
    )
    assert refused.exit_code == 1
    assert "names 'nope'" in refused.output
    assert "Traceback" not in refused.output
    assert "audience us removed" in run("audience", "remove", "us")


@pytest.mark.parametrize(
    "condition",
    [
        "country LIKE 'U%'",
        "country ILIKE 'u%' OR country IS NULL",
        "joined > now() - INTERVAL 30 DAY",
        "joined > TIMESTAMP '2026-01-01'",
        "score BETWEEN 1 AND 500",
        "NOT (country IN ('US', 'FR'))",
        "CASE WHEN score > 100 THEN true ELSE false END",
        "lower(country) = 'us' AND len(tags) > 1",
        "score::DOUBLE > 1.5",
    ],
)
def test_pure_conditions_are_accepted(profiled: Store, condition: str) -> None:
    Audiences(profiled).create("a", condition)
    assert Audiences(profiled).conditions() == {"a": condition}


def test_profiles_and_audiences_with_tables_in_s3(tmp_path: Path, s3: Any) -> None:
    # Tables in S3 are read through Arrow, not from local Parquet files.
    Store(tmp_path / "store").authorizations.add(s3.authorization())
    store = Store(tmp_path / "store", tables=f"s3://{s3.new_bucket()}/lake", tables_auth="moto")
    append(store, "events", [{"user_id": "1", "country": "US"}, {"user_id": "2"}], "f1")
    rules = tmp_path / "profiles.toml"
    rules.write_text('by = ["user_id"]\n[fields.country]\nfrom = "country"\nagg = "latest"\n')
    assert build_profiles(store, rules).report.profiles == 2
    Audiences(store).create("us", "country = 'US'")
    assert Audiences(store).sizes() == {"us": 1}
    assert users(Audiences(store).members("us").collect().to_dicts()) == ["1"]
    assert sorted(
        len(r["audiences"]) for r in Audiences(store).memberships().collect().to_dicts()
    ) == [0, 1]


def test_csv_import_to_profiles_to_audience_to_memberships(
    store: Store, bucket: Path, tmp_path: Path
) -> None:
    from pipelines import jobs

    (bucket / "events_20261101.csv").write_text(
        "user_id,email,country,amount,ts\n"
        "u1,ada@x.com,GB,10,2026-11-01T09:00:00Z\n"
        ",ADA@x.com ,GB,35,2026-11-01T10:00:00Z\n"
        "u2,grace@x.com,US,5,2026-11-01T11:00:00Z\n"
    )
    job = jobs.load(
        f'name = "imp"\ntype = "csv-import"\nbucket = "{bucket}"\nprefix = "events_"\n'
        'stream = "events"\ntimestamp = "ts"\n',
        "imp.toml",
    )
    assert jobs.run(store, job).status == "succeeded"
    rules = tmp_path / "profiles.toml"
    rules.write_text(
        'by = ["user_id", "email"]\n[normalize]\nemail = ["trim", "lower"]\n'
        '[fields.spent]\nfrom = "amount"\nagg = "sum"\ntype = "float"\n'
    )
    assert build_profiles(store, rules).report.profiles == 2
    Audiences(store).create("big", "spent > 40")
    found = {
        r["_profile_id"]: r["audiences"]
        for r in Audiences(store).memberships().collect().to_dicts()
    }
    ada = Audiences(store).members("big").collect().to_dicts()
    assert [(r["user_id"], r["email"], r["spent"]) for r in ada] == [("u1", "ada@x.com", 45.0)]
    assert sorted(found.values()) == [[], ["big"]]


def test_profiles_load_from_s3(store: Store, s3: Any, tmp_path: Path) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.profiles import load_profiles

    store.authorizations.add(s3.authorization())
    bucket = s3.new_bucket()
    buffer = io.BytesIO()
    pq.write_table(pa.table({"user_id": ["1", "2"], "score": [5, 50]}), buffer)
    s3.put(bucket, "ready/profiles.parquet", buffer.getvalue())
    s3.put(bucket, "ready/profiles.csv", b"user_id,score\n3,7\n4,70\n5,700\n")
    auth = store.authorizations.get("moto")
    assert (
        load_profiles(store, f"s3://{bucket}/ready/profiles.parquet", ["user_id"], auth=auth) == 2
    )
    assert load_profiles(store, f"s3://{bucket}/ready/profiles.csv", ["user_id"], auth=auth) == 3
    Audiences(store).create("high", "score > 10")
    assert Audiences(store).sizes() == {"high": 2}


def test_a_condition_that_fails_per_row_is_refused_and_not_saved(profiled: Store) -> None:
    with pytest.raises(ConfigError, match=r"cannot run on the profiles.*"):
        Audiences(profiled).create("t11", "tags = 'vip'")  # a string against a list of strings
    assert "t11" not in Audiences(profiled).conditions()
    Audiences(profiled).create("us", "country = 'US'")
    assert Audiences(profiled).sizes() == {"us": 2}


def test_one_broken_audience_never_breaks_the_others(profiled: Store, tmp_path: Path) -> None:
    Audiences(profiled).create("us", "country = 'US'")
    Audiences(profiled).create("high", "score > 100")
    # A rebuild without the score field breaks "high" (and only it).
    rules = tmp_path / "fewer.toml"
    rules.write_text('by = ["user_id"]\n[fields.country]\nfrom = "country"\nagg = "latest"\n')
    build_profiles(profiled, rules)
    assert list(Audiences(profiled).broken()) == ["high"]
    assert Audiences(profiled).sizes() == {"us": 2}
    memberships = Audiences(profiled).memberships().collect()
    assert {tuple(a) for a in memberships["audiences"].to_list()} == {("us",), ()}
    with pytest.raises(ConfigError, match=r"audience 'high' is broken: .*score.*audience remove"):
        Audiences(profiled).rows("high")
    listed = CliRunner().invoke(
        cli, ["--store", str(profiled.path), "audience", "list", "-o", "json"]
    )
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["us"]["profiles"] == 2
    assert rows["high"]["profiles"] is None
    assert "score" in rows["high"]["broken"]
