"""Multi-CSV tables: users with a join_key, and a row per list item and per map entry."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from engine.writers.multi import JOIN_KEY, explode, tables

BATCH = pa.record_batch(
    {
        "user_id": pa.array(["1", "2", "3"]),
        "country": pa.array(["US", None, "FR"]),
        "tags": pa.array([["a", "b"], [], None], pa.list_(pa.string())),
        "attributes": pa.array(
            [[("tier", "gold")], None, [("x", "1"), ("y", None)]], pa.map_(pa.string(), pa.string())
        ),
    }
)


def test_a_batch_becomes_tables_that_join_back() -> None:
    assert list(tables(BATCH.schema, ["user_id"])) == ["users", "tags", "attributes"]
    out = {name: pl.DataFrame(rows) for name, rows in explode(BATCH, ["user_id"]).items()}
    users = out["users"]
    assert users.columns == [JOIN_KEY, "user_id", "country"]
    key = dict(zip(users["user_id"], users[JOIN_KEY], strict=True))
    assert len(set(key.values())) == 3
    assert out["tags"].rows() == [(key["1"], "a"), (key["1"], "b")]
    assert out["attributes"].columns == [JOIN_KEY, "key", "value"]
    assert out["attributes"].rows() == [
        (key["1"], "tier", "gold"),
        (key["3"], "x", "1"),
        (key["3"], "y", None),
    ]


def test_the_same_user_has_the_same_key_in_every_batch() -> None:
    first = explode(BATCH, ["user_id"])["users"]
    again = explode(BATCH.slice(2), ["user_id"])["users"]
    assert again.column(JOIN_KEY)[0] == first.column(JOIN_KEY)[2]


def test_the_identity_fields_must_be_exported() -> None:
    with pytest.raises(ValueError, match="not among the exported fields"):
        explode(BATCH, ["email"])


def test_hidden_identity_fields_make_the_key_and_are_not_written() -> None:
    out = explode(BATCH, ["user_id"], hidden=["user_id"])
    assert out["users"].schema.names == [JOIN_KEY, "country"]
    assert out["users"].column(JOIN_KEY) == explode(BATCH, ["user_id"])["users"].column(JOIN_KEY)
    hidden = tables(BATCH.schema, ["user_id"], ["user_id"])["users"]
    assert hidden.names == [JOIN_KEY, "country"]
