"""`profiles.toml`: how profiles are built from the streams, validated on load.

```toml
by = ["user_id", "email"]          # identity fields, strongest first

[normalize]                        # rules applied to identity values, in order
email = ["trim", "lower"]

[sources.events]                   # the streams to read (all when there is no [sources])
rename = { uid = "user_id" }       # stream field -> the name used here

[fields.country]
from = "country"
agg = "latest"                     # latest first min max sum count set list map
type = "string"                    # string int float bool timestamp

[fields.attributes]
agg = "map"
key = "attribute"
value = "attribute_value"
```

Every error names the key (`fields.country.agg`) and the fix.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BeforeValidator, Field, model_validator

from engine import declared
from engine.declared import Check, Declared, Kind, Problem
from engine.errors import ConfigError
from engine.textfile import read_text

RESERVED = ("_profile_id", "_identities", "_events", "_first_seen", "_last_seen")
"""Columns every profile has, set by the build."""
_DEFAULT_TYPE = {"count": "int", "sum": "float"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")


@dataclass(frozen=True)
class FieldRule:
    """How one profile field is made from the events."""

    name: str
    agg: str
    type: str = "string"
    source: str | None = None
    """The event field (`from`); for `count`, None counts the events."""
    key: str | None = None
    """For `map`: the event field that holds each entry's key."""
    value: str | None = None
    """For `map`: the event field that holds each entry's value."""

    @property
    def reads(self) -> tuple[str, ...]:
        """The event fields this rule reads."""
        return tuple(f for f in (self.source, self.key, self.value) if f is not None)


@dataclass(frozen=True)
class Source:
    """A stream to read, and the renames applied to its fields."""

    stream: str
    rename: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfilesConfig:
    """A validated `profiles.toml`."""

    by: tuple[str, ...]
    fields: tuple[FieldRule, ...]
    normalize: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sources: tuple[Source, ...] | None = None
    """None: every stream."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ProfilesConfig:
        data = json.loads(text)
        return cls(
            by=tuple(data["by"]),
            fields=tuple(FieldRule(**f) for f in data["fields"]),
            normalize={k: tuple(v) for k, v in data["normalize"].items()},
            sources=None
            if data["sources"] is None
            else tuple(Source(s["stream"], dict(s["rename"])) for s in data["sources"]),
        )


def load(path: str | Path) -> ProfilesConfig:
    """Read and check a profiles file."""
    where = Path(path)
    return parse(read_text(where, "profiles file"), str(where))


def parse(text: str, name: str = "profiles.toml") -> ProfilesConfig:
    """Check the text of a profiles file; every error names the key and the fix."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name} is not valid TOML: {exc}") from exc
    return declared.parse(ProfilesFile, data, name).config()


def schema() -> dict[str, Any]:
    """The JSON Schema of profiles files."""
    return declared.json_schema(ProfilesFile, "lakeport profiles file")


def _usable(value: str) -> str:
    if not _NAME.match(value) or value in RESERVED:
        raise ValueError(
            f"'{value}' is not a usable field name: letters, digits, '_' and '.', not starting "
            f"with a digit, and none of {', '.join(RESERVED)}"
        )
    return value


def _one_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _as_tables(value: Any) -> Any:
    """`sources = ["events"]` is `[sources.events]` with no options."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return {stream: {} for stream in value}
    return value


def _identities(value: list[str]) -> list[str]:
    if not value:
        raise ValueError('must list the identity fields, e.g. ["user_id", "email"]')
    if len(set(value)) != len(value):
        raise ValueError("names a field twice")
    return value


FieldName = Annotated[str, Check(_usable)]
Aggregation = Literal["latest", "first", "min", "max", "sum", "count", "set", "list", "map"]
ValueType = Literal["string", "int", "float", "bool", "timestamp"]
Normalizer = Literal["trim", "lower", "upper", "digits"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
TYPES: tuple[str, ...] = get_args(ValueType)
NORMALIZERS: tuple[str, ...] = get_args(Normalizer)
"""`digits` keeps only the digits (phone numbers)."""


class FieldDeclaration(Declared):
    """A `[fields.NAME]` table: how one profile field is made from the events."""

    noun: ClassVar[str] = "key of a [fields.NAME] table"

    from_: str | None = Field(None, alias="from")
    """The event field to read; for `count`, absent counts the events."""
    agg: Aggregation
    """How the events' values become the profile's."""
    type: ValueType | None = None
    """The profile field's type (default string; int for count, float for sum)."""
    key: str | None = None
    """For `map`: the event field that holds each entry's key."""
    value: str | None = None
    """For `map`: the event field that holds each entry's value."""

    def rule(self, name: str) -> FieldRule:
        """The rule, checked as a whole; `name` is the profile field's."""
        where = f"fields.{name}"
        kind = self.type or _DEFAULT_TYPE.get(self.agg, "string")
        if self.agg == "map":
            if self.key is None or self.value is None or self.from_ is not None:
                raise Problem(
                    where, 'is a map: give key and value fields, e.g. key = "k", value = "v"'
                )
            if kind != "string":
                raise Problem(f"{where}.type", "of a map is string (map<string,string>)")
        else:
            if self.key is not None or self.value is not None:
                raise Problem(where, 'takes key and value only with agg = "map"')
            if self.from_ is None and self.agg != "count":
                raise Problem(f"{where}.from", "is missing: name the event field to read")
        if self.agg == "count" and kind != "int":
            raise Problem(f"{where}.type", "of a count is int")
        if self.agg == "sum" and kind not in ("int", "float"):
            raise Problem(f"{where}.type", "of a sum is int or float")
        return FieldRule(name, self.agg, kind, self.from_, self.key, self.value)


class SourceDeclaration(Declared):
    """A `[sources.STREAM]` table."""

    noun: ClassVar[str] = "key of a [sources.STREAM] table"

    rename: dict[str, FieldName] = Field(default_factory=dict)
    """Stream field -> the name used here."""


class ProfilesFile(Declared):
    """A `profiles.toml`."""

    noun: ClassVar[str] = "key of a profiles file"

    by: Annotated[
        list[FieldName],
        BeforeValidator(_one_or_list),
        Kind('a list of field names, e.g. by = ["user_id"]'),
        Check(_identities),
    ]
    """The identity fields, strongest first."""
    normalize: dict[str, Annotated[list[Normalizer], BeforeValidator(_one_or_list)]] = Field(
        default_factory=dict
    )
    """Rules applied to identity values, in order."""
    sources: (
        Annotated[
            dict[str, SourceDeclaration],
            BeforeValidator(_as_tables),
            Kind(
                'a list of streams (sources = ["events"]) or a table of them '
                '([sources.events] rename = { uid = "user_id" })'
            ),
        ]
        | None
    ) = None
    """The streams to read (all when absent): a list, or a table of them with renames."""
    fields: Annotated[dict[str, FieldDeclaration], Kind("a table of [fields.NAME] tables")] = Field(
        default_factory=dict
    )
    """The profile fields, each a `[fields.NAME]` table."""

    @model_validator(mode="after")
    def _consistent(self) -> ProfilesFile:
        self.config()
        return self

    def config(self) -> ProfilesConfig:
        for identity in self.normalize:
            if identity not in self.by:
                raise Problem(
                    f"normalize.{identity}",
                    f"is not an identity field; those are {', '.join(self.by)}",
                )
        rules = []
        for name, declaration in self.fields.items():
            try:
                _usable(name)
            except ValueError as exc:
                raise Problem(f"fields.{name}", str(exc)) from None
            if name in self.by:
                raise Problem(
                    f"fields.{name}", "is an identity field: profiles keep its latest value already"
                )
            rules.append(declaration.rule(name))
        if self.sources is not None and not self.sources:
            raise Problem("sources", "must name at least one stream")
        return ProfilesConfig(
            by=tuple(self.by),
            fields=tuple(rules),
            normalize={k: tuple(v) for k, v in self.normalize.items()},
            sources=None
            if self.sources is None
            else tuple(Source(k, dict(v.rename)) for k, v in self.sources.items()),
        )
