"""Declarations: the files users write (job files, `profiles.toml`) as typed pydantic models.

A model gives the parsing, the defaults, the types, the checks of one field (`Check`) and of
several (a `model_validator` that raises `Problem`), and the JSON Schema editors complete TOML
files with. `parse` is the one place its errors are translated: every error names the file, the
key and the fix, and a misspelt key the nearest one.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import itertools
import textwrap
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from engine.errors import ConfigError

D = TypeVar("D", bound="Declared")


class Problem(Exception):
    """Raised by a model's cross-field check: the key it is about, and what is wrong."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key} {message}")
        self.key = key
        self.message = message

    @classmethod
    def named(cls, said: str) -> Problem:
        """The problem an engine check said in a message that starts with the setting's name
        (`delimiter must be one character...`)."""
        key, _, message = said.partition(" ")
        return cls(key, message)


@dataclass(frozen=True)
class Kind:
    """What a field's value must be, in words (`a job name`), when its type does not say."""

    text: str


def Check(check: Callable[[Any], Any]) -> AfterValidator:
    """A field's own check, on a value of the right type: returns the value to keep, or raises
    ValueError with the fix."""
    return AfterValidator(check)


class Declared(BaseModel):
    """A file's declaration: unknown keys refused, types strict (TOML's own), frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)

    noun: ClassVar[str] = "key"
    """What a key is called in errors: `is not a {noun}`; `{type}` is the file's `type`."""
    nouns: ClassVar[str] = "keys"
    flat: ClassVar[bool] = False
    """Whether every value is a plain value (job files): a table is refused as such."""

    @classmethod
    def error(cls, source: str, key: str | None, problem: str) -> ConfigError:
        where = f"{source}: {key}" if key else source
        return ConfigError(f"{where} {problem}")


def parse(model: type[D], raw: Mapping[str, Any], source: str) -> D:
    """`raw` (a parsed TOML file) checked against `model`; `source` names it in errors."""
    try:
        return model.model_validate(raw)
    except Problem as found:
        raise model.error(source, found.key, found.message) from None
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        key, problem = _translated(model, raw, errors[0])
        raise model.error(source, key, problem) from None


def json_schema(model: type[Declared], title: str) -> dict[str, Any]:
    """The model's JSON Schema (draft 2020-12), as editors read it for a TOML file: each key
    described by its docstring."""
    schema = model.model_json_schema(schema_generator=_TomlSchema)
    _describe(schema, model)
    for name, found in schema.get("$defs", {}).items():
        nested = next(c for c in _declarations(model) if c.__name__ == name)
        _describe(found, nested)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": title}


def _describe(schema: dict[str, Any], model: type[Declared]) -> None:
    # Read here, not when the class is made (pydantic's use_attribute_docstrings): reading
    # the source costs every run of lakeport about 40 ms, for what only the schema shows.
    said = _docstrings(model)
    for name, found in schema.get("properties", {}).items():
        field = next((n for n, f in model.model_fields.items() if (f.alias or n) == name), name)
        if field in said:
            found["description"] = said[field]


def _docstrings(model: type[Declared]) -> dict[str, str]:
    """Each field's docstring (the string right under it), through the model's bases."""
    found: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, Declared)) or cls is Declared:
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
        assert isinstance(body, ast.ClassDef)
        for field, text in itertools.pairwise(body.body):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(text, ast.Expr)
                and isinstance(text.value, ast.Constant)
                and isinstance(text.value.value, str)
            ):
                found[field.target.id] = inspect.cleandoc(text.value.value)
    return found


def _declarations(model: type[Declared]) -> list[type[Declared]]:
    """The model and every model its fields hold, at any depth."""
    found: list[type[Declared]] = []
    pending: list[Any] = [model]
    while pending:
        current = pending.pop()
        if isinstance(current, type) and issubclass(current, Declared):
            if current in found:
                continue
            found.append(current)
            pending.extend(f.annotation for f in current.model_fields.values())
        else:
            pending.extend(get_args(current))
    return found


class _TomlSchema(GenerateJsonSchema):
    """TOML has no null: an optional key is one that may be left out."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        found = super().default_schema(schema)
        if found.get("default", 0) is None:
            found.pop("default")
        return found


def _translated(model: type[Declared], raw: Mapping[str, Any], error: Any) -> tuple[str, str]:
    """The key an error is about (dotted), and what is wrong with it, in words."""
    kind_of, path, info, value, container = _walk(model, raw, error["loc"])
    key = ".".join(path)
    shown = _shown(value)
    if error["type"] == "extra_forbidden":
        name = path[-1]
        known = [f.alias or n for n, f in container.model_fields.items()]
        close = difflib.get_close_matches(name, known, n=1)
        noun = container.noun.format(**{k: v for k, v in raw.items() if isinstance(v, str)})
        hint = (
            f": did you mean '{close[0]}'?"
            if close
            else f"; the {container.nouns} are {', '.join(known)}"
        )
        return key, f"is not a {noun}{hint}"
    kind = _kind(info, kind_of)
    if error["type"] == "missing":
        return key, f"is missing: it must be {kind}"
    if error["type"] == "value_error":
        return key, f"{error['ctx']['error']} (got {shown})"
    if error["type"] == "literal_error":
        target = _unwrapped(kind_of)
        item = get_args(target)[0] if get_origin(target) in (list, tuple) else target
        choices = ", ".join(str(c) for c in _choices(item))
        return key, f"must be one of {choices} (got {shown})"
    if model.flat and isinstance(value, dict) and _choices(kind_of) == () and not _is_table(info):
        return key, "must be a value, not a table: job files are flat"
    return key, f"must be {kind}, not {shown}"


def _walk(
    model: type[Declared], raw: Any, loc: tuple[Any, ...]
) -> tuple[Any, list[str], FieldInfo | None, Any, type[Declared]]:
    """Follow an error's location through the model and the raw values: the annotation there,
    the key path (field names and table keys; no list indices, no union members), the field,
    its raw value and the model that holds it."""
    current: Any = model
    path: list[str] = []
    info: FieldInfo | None = None
    container: type[Declared] = model
    value: Any = raw
    for part in loc:
        target = _unwrapped(current)
        if isinstance(target, type) and issubclass(target, Declared):
            container = target
            by_alias = {(f.alias or n): (n, f) for n, f in target.model_fields.items()}
            path.append(str(part))
            value = value.get(part) if isinstance(value, dict) else None
            if part not in by_alias:
                info = None
                break
            info = by_alias[part][1]
            current = info.annotation
        elif get_origin(target) is dict:
            path.append(str(part))
            value = value.get(part) if isinstance(value, dict) else None
            current = get_args(target)[1]
            info = None
        elif get_origin(target) in (list, tuple):
            break  # an item's error is told of the whole list
        else:
            break  # a union member's tag, or a function validator's: nothing more to follow
    return current, path, info, value, container


def _unwrapped(annotation: Any) -> Any:
    """The annotation without Annotated's metadata and without `| None`."""
    return _layers(annotation)[-1]


def _layers(annotation: Any) -> list[Any]:
    """The annotation, then each one inside it, unwrapping Annotated and `| None`."""
    found = [annotation]
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return found
            annotation = members[0]
        else:
            return found
        found.append(annotation)


def _kind(info: FieldInfo | None, annotation: Any) -> str:
    """What the value must be, in words: the field's `Kind`, else said from its type."""
    metadata = list(info.metadata) if info is not None else []
    for layer in _layers(annotation):
        if get_origin(layer) is Annotated:
            metadata.extend(layer.__metadata__)
    for found in metadata:
        if isinstance(found, Kind):
            return found.text
    target = _unwrapped(annotation)
    choices = _choices(target)
    if choices:
        return "one of " + ", ".join(str(c) for c in choices)
    return _WORDS.get(target, _WORDS.get(get_origin(target), "a value of another type"))


_WORDS: dict[Any, str] = {
    str: "a string",
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    list: "a list",
    dict: "a table",
}


def _choices(annotation: Any) -> tuple[Any, ...]:
    target = _unwrapped(annotation)
    return get_args(target) if get_origin(target) is Literal else ()


def _is_table(info: FieldInfo | None) -> bool:
    return info is not None and get_origin(_unwrapped(info.annotation)) is dict


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
