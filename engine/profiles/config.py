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

import difflib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.textfile import read_text

AGGREGATIONS = ("latest", "first", "min", "max", "sum", "count", "set", "list", "map")
TYPES = ("string", "int", "float", "bool", "timestamp")
NORMALIZERS = ("trim", "lower", "upper", "digits")
"""`digits` keeps only the digits (phone numbers)."""
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
    _known(data, ("by", "normalize", "sources", "fields"), name, "")
    by = _identity_fields(data.get("by"), name)
    normalize = _normalize(data.get("normalize", {}), by, name)
    sources = _sources(data.get("sources"), name)
    rules = _fields(data.get("fields", {}), by, name)
    return ProfilesConfig(by=by, fields=rules, normalize=normalize, sources=sources)


def _fail(name: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{name}: {key} {message}")


def _known(table: dict[str, Any], allowed: tuple[str, ...], name: str, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise _fail(
                name,
                f"{prefix}{key}",
                f"is not a known key{hint}; the keys are {', '.join(allowed)}",
            )


def _identity_fields(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        raise _fail(name, "by", 'is missing: list the identity fields, e.g. by = ["user_id"]')
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(name, "by", 'must be a list of field names, e.g. ["user_id", "email"]')
    for item in value:
        _check_name(item, name, "by")
    if len(set(value)) != len(value):
        raise _fail(name, "by", "names a field twice")
    return tuple(value)


def _check_name(value: str, name: str, key: str) -> None:
    if not _NAME.match(value) or value in RESERVED:
        raise _fail(
            name,
            key,
            f"'{value}' is not a usable field name: letters, digits, '_' and '.', not starting "
            f"with a digit, and none of {', '.join(RESERVED)}",
        )


def _normalize(value: Any, by: tuple[str, ...], name: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise _fail(
            name, "normalize", 'must be a table, e.g. [normalize] email = ["trim", "lower"]'
        )
    rules: dict[str, tuple[str, ...]] = {}
    for identity, steps in value.items():
        key = f"normalize.{identity}"
        if identity not in by:
            raise _fail(name, key, f"is not an identity field; those are {', '.join(by)}")
        if isinstance(steps, str):
            steps = [steps]
        if not isinstance(steps, list) or not all(s in NORMALIZERS for s in steps):
            raise _fail(name, key, f"must list rules among {', '.join(NORMALIZERS)}")
        rules[identity] = tuple(steps)
    return rules


def _sources(value: Any, name: str) -> tuple[Source, ...] | None:
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(Source(v) for v in value)
    if not isinstance(value, dict) or not value:
        raise _fail(
            name,
            "sources",
            'must be a list of streams (sources = ["events"]) or a table of them '
            '([sources.events] rename = { uid = "user_id" })',
        )
    found = []
    for stream, options in value.items():
        key = f"sources.{stream}"
        if not isinstance(options, dict):
            raise _fail(name, key, 'must be a table, e.g. rename = { uid = "user_id" }')
        _known(options, ("rename",), name, f"{key}.")
        rename = options.get("rename", {})
        if not isinstance(rename, dict) or not all(isinstance(v, str) for v in rename.values()):
            raise _fail(
                name, f"{key}.rename", 'must map stream fields to names: { uid = "user_id" }'
            )
        for target in rename.values():
            _check_name(target, name, f"{key}.rename")
        found.append(Source(stream, dict(rename)))
    return tuple(found)


def _fields(value: Any, by: tuple[str, ...], name: str) -> tuple[FieldRule, ...]:
    if not isinstance(value, dict):
        raise _fail(name, "fields", "must be a table of [fields.NAME] tables")
    rules = []
    for target, spec in value.items():
        key = f"fields.{target}"
        _check_name(target, name, key)
        if target in by:
            raise _fail(name, key, "is an identity field: profiles keep its latest value already")
        if not isinstance(spec, dict):
            raise _fail(name, key, 'must be a table, e.g. { from = "country", agg = "latest" }')
        _known(spec, ("from", "agg", "type", "key", "value"), name, f"{key}.")
        agg = spec.get("agg")
        if agg not in AGGREGATIONS:
            raise _fail(name, f"{key}.agg", f"must be one of {', '.join(AGGREGATIONS)}")
        kind = spec.get("type", _DEFAULT_TYPE.get(agg, "string"))
        if kind not in TYPES:
            raise _fail(name, f"{key}.type", f"must be one of {', '.join(TYPES)}")
        texts = {k: spec.get(k) for k in ("from", "key", "value")}
        for k, v in texts.items():
            if v is not None and not isinstance(v, str):
                raise _fail(name, f"{key}.{k}", "must be an event field name (a string)")
        if agg == "map":
            if texts["key"] is None or texts["value"] is None or texts["from"] is not None:
                raise _fail(
                    name, key, 'is a map: give key and value fields, e.g. key = "k", value = "v"'
                )
            if kind != "string":
                raise _fail(name, f"{key}.type", "of a map is string (map<string,string>)")
        else:
            if texts["key"] is not None or texts["value"] is not None:
                raise _fail(name, key, 'takes key and value only with agg = "map"')
            if texts["from"] is None and agg != "count":
                raise _fail(name, f"{key}.from", "is missing: name the event field to read")
        if agg == "count" and kind != "int":
            raise _fail(name, f"{key}.type", "of a count is int")
        if agg == "sum" and kind not in ("int", "float"):
            raise _fail(name, f"{key}.type", "of a sum is int or float")
        rules.append(
            FieldRule(
                name=target,
                agg=agg,
                type=kind,
                source=texts["from"],
                key=texts["key"],
                value=texts["value"],
            )
        )
    return tuple(rules)
