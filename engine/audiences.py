"""The store's audiences: each a name and an SQL condition on profile fields, kept in `state.db`
and run on the store's profiles (the conditions are checked and run by engine.profiles.audiences,
in DuckDB)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pyarrow as pa

from engine.duck import TableScan
from engine.errors import ConfigError
from engine.profiles.audiences import check, lazy, members, memberships, sizes
from engine.store import Store

if TYPE_CHECKING:
    import polars as pl


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Audiences:
    """The store's audiences: each a name and a condition, kept in `state.db`, and run on the
    store's profiles. Each call reads the profiles table once: what it checks and what it
    reads are the same version.

        >>> Audiences(store).create("vip", "list_contains(tags, 'vip')")
        >>> Audiences(store).members("vip").collect()   # a polars DataFrame
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._spill = store.path / "tmp" / "audiences"

    def create(self, name: str, condition: str) -> None:
        """Keep an audience: the profiles for which the SQL `condition` holds. It is checked
        now against the profiles' fields (`check`)."""
        if not _NAME.match(name):
            raise ConfigError(
                f"'{name}' is not a valid audience name: use 1-64 letters, digits, '_', '.' or "
                "'-', starting with a letter or digit"
            )
        check(condition, _columns(self.store.existing_profiles()))
        if not self.store.state.put_audience(name, condition):
            raise ConfigError(
                f"an audience named '{name}' exists: remove it first, or choose another name"
            )

    def remove(self, name: str) -> None:
        if not self.store.state.delete_audience(name):
            raise ConfigError(f"no audience named '{name}' ({self._names()})")

    def conditions(self) -> dict[str, str]:
        """Every audience's condition, by name."""
        return self.store.state.audiences()

    def broken(self) -> dict[str, str]:
        """The audiences whose condition no longer runs on the profiles (a rebuild changed or
        dropped a field it uses), each with the reason."""
        return self._broken(self.store.existing_profiles())

    def _broken(self, profiles: TableScan) -> dict[str, str]:
        columns = _columns(profiles)
        broken = {}
        for name, condition in self.conditions().items():
            try:
                check(condition, columns)
            except ConfigError as exc:
                broken[name] = str(exc)
        return broken

    def _working(self, profiles: TableScan) -> dict[str, str]:
        broken = self._broken(profiles)
        return {n: c for n, c in self.conditions().items() if n not in broken}

    def sizes(self) -> dict[str, int]:
        """How many profiles each audience holds (one pass over the profiles); a broken
        audience (see `broken`) is left out."""
        profiles = self.store.existing_profiles()
        return sizes(profiles, self._working(profiles), spill=self._spill)

    def members(self, name: str) -> pl.LazyFrame:
        """The profiles in an audience, as a Polars LazyFrame."""
        condition, profiles = self._condition(name)
        return lazy(
            lambda columns, limit: members(
                profiles, condition, spill=self._spill, columns=columns, limit=limit
            ),
            profiles.schema,
        )

    def memberships(self) -> pl.LazyFrame:
        """For each profile (`_profile_id`), the names of all the audiences it is in
        (`audiences`, a list): one pass over the profiles, however many audiences."""
        profiles = self.store.existing_profiles()
        conditions = self._working(profiles)
        schema = pa.schema(
            [profiles.schema.field("_profile_id"), pa.field("audiences", pa.list_(pa.string()))]
        )

        def open_reader(columns: list[str] | None, limit: int | None) -> pa.RecordBatchReader:
            reader = memberships(profiles, conditions, spill=self._spill)
            return reader if columns is None else _select(reader, columns)

        return lazy(open_reader, schema)

    def rows(
        self,
        name: str,
        *,
        columns: list[str] | None = None,
        limit: int | None = None,
        segments: str | None = None,
    ) -> pa.RecordBatchReader:
        """The profiles in an audience as a stream of record batches, in the table's order:
        `columns` only (all when None), at most `limit`, and with `segments` set, a list field
        of that name holding every audience each profile is in (from the same pass)."""
        condition, profiles = self._condition(name)
        known = profiles.schema.names
        for column in columns or []:
            if column not in known:
                raise ConfigError(
                    f"'{column}' is not a profile field: the fields are {', '.join(known)}"
                )
        if segments is None:
            return members(profiles, condition, spill=self._spill, columns=columns, limit=limit)
        return memberships(
            profiles,
            self._working(profiles),
            spill=self._spill,
            columns=columns or known,
            where=condition,
            limit=limit,
            label=segments,
        )

    def matches(self, condition: str, limit: int | None = None) -> pa.RecordBatchReader:
        """The profiles for which an SQL condition holds (checked as an audience's is)."""
        profiles = self.store.existing_profiles()
        check(condition, _columns(profiles))
        return members(profiles, condition, spill=self._spill, limit=limit)

    def _condition(self, audience: str) -> tuple[str, TableScan]:
        """The audience's condition, checked against the profiles as they are now; and those
        profiles."""
        condition = self.conditions().get(audience)
        if condition is None:
            raise ConfigError(f"no audience named '{audience}' ({self._names()})")
        profiles = self.store.existing_profiles()
        try:
            return check(condition, _columns(profiles)), profiles
        except ConfigError as exc:
            raise ConfigError(
                f"audience '{audience}' is broken: {exc}; remove it and create it again "
                f"for the profiles as they are (`lakeport audience remove {audience}`)"
            ) from None

    def _names(self) -> str:
        names = list(self.conditions())
        return "audiences: " + (", ".join(names) if names else "none yet")


def _columns(profiles: TableScan) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in profiles.schema}


def _select(reader: pa.RecordBatchReader, columns: list[str]) -> pa.RecordBatchReader:
    schema = pa.schema([reader.schema.field(c) for c in columns])
    return pa.RecordBatchReader.from_batches(schema, (b.select(columns) for b in reader))
