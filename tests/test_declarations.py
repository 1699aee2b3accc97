"""The declarations of job files and profiles files (engine.declared): each error names the
file, the key and the fix, in one translation of pydantic's errors; and the JSON Schema of each
describes every key."""

from __future__ import annotations

import ast
import subprocess
import sys
from typing import Any

import pytest

from engine.errors import ConfigError
from engine.profiles import config as profiles_config
from pipelines import jobs
from pipelines.errors import SpecError

EVENTS = 'name = "e"\ntype = "event-export"\nbucket = "/tmp/out"\n'
BASE = 'name = "j"\ntype = "csv-import"\nbucket = "./in"\nfile = "a.csv"\nstream = "s"\n'


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("strem = 'x'", "job.toml: field 'strem' is not a field of a csv-import job: did you"),
        ("zzzzzz = 1", "is not a field of a csv-import job; the fields are name, type,"),
        ("diff = { a = 1 }", "field 'diff' must be a value, not a table: job files are flat"),
        ("max_rejected = 'lots'", "field 'max_rejected' must be a count or a fraction, not 'lots'"),
        ("max_bytes = true", "field 'max_bytes' must be a whole number of bytes, not True"),
        ("bad_rows = 'skip'", "field 'bad_rows' must be one of fail, quarantine (got 'skip')"),
        ("fields = ['a', 3]", "field 'fields' must be a list of field names, not ['a', 3]"),
        ("max_ratio = nan", "field 'max_ratio' must be a positive, finite number (got nan)"),
        ("frequency = 'yearly'", "field 'frequency' must be one of hourly, daily, weekly, monthly"),
    ],
)
def test_each_job_file_error_names_the_file_the_field_and_the_fix(extra: str, message: str) -> None:
    with pytest.raises(SpecError) as raised:
        jobs.load(BASE + extra + "\n", "job.toml")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)  # one error, not pydantic's list of them


def test_a_missing_field_says_what_it_must_be() -> None:
    text = BASE.replace('stream = "s"\n', "")
    with pytest.raises(SpecError, match="field 'stream' is missing: it must be a string"):
        jobs.load(text, "job.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('by = ["u"]\n[fields.x]\nfrom = 1\nagg = "latest"\n', "fields.x.from must be a string"),
        ('by = ["u"]\n[fields.x]\nfrm = "a"\nagg = "latest"\n', "fields.x.frm is not a key of"),
        ('by = ["u"]\n[sources.e]\nrenme = {}\n', "sources.e.renme is not a key.*'rename'"),
        ('by = ["u"]\n[normalize]\nu = ["up"]\n', "normalize.u must be one of trim, lower,"),
        ('by = ["u", "u"]\n', "by names a field twice"),
        ("by = 3\n", r'by must be a list of field names, e.g. by = \["user_id"\], not 3'),
    ],
)
def test_each_profiles_file_error_names_the_dotted_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        profiles_config.parse(text, "profiles.toml")


def described(schema: dict[str, Any]) -> list[str]:
    """The keys of a schema (and of its nested tables) that have no description."""
    tables = [schema, *schema.get("$defs", {}).values()]
    return [
        name
        for table in tables
        for name, found in table.get("properties", {}).items()
        if not found.get("description")
    ]


@pytest.mark.parametrize("kind", sorted(jobs.TYPES))
def test_every_key_of_every_job_type_is_described_in_its_schema(kind: str) -> None:
    schema = jobs.schema(kind)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["type"]["const"] == kind
    assert described(schema) == []


def test_each_job_type_is_declared_by_its_module_and_a_run_loads_only_its_own() -> None:
    for kind in jobs.TYPES:
        assert jobs.job_type(kind).name == kind
    code = (
        "import sys\n"
        "from pipelines import jobs\n"
        f"jobs.load({EVENTS!r}, 'e.toml')\n"
        "print(sorted(m for m in sys.modules if m.startswith('pipelines.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = ast.literal_eval(done.stdout)
    assert "pipelines.event_export" in loaded
    assert not {"pipelines.csv_import", "pipelines.json_import", "pipelines.audience_export"} & set(
        loaded
    )


def test_every_key_of_a_profiles_file_is_described_in_its_schema() -> None:
    schema = profiles_config.schema()
    assert {"FieldDeclaration", "SourceDeclaration"} <= set(schema["$defs"])
    assert described(schema) == []


def test_the_schema_of_an_unknown_job_type_lists_the_types() -> None:
    with pytest.raises(SpecError, match="must be one of csv-import, json-import, audience-ex"):
        jobs.schema("xml-import")
