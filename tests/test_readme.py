"""The README's examples run as written: the walk-through's commands and job files, every job
and profiles file, and the library snippets, against S3 (moto) and a local SMTP server.

Only what cannot run here is replaced, and said so: the authorizations point at the moto
server (`auth add` would ask for a real secret key), and the SMTP server is the test's.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine import Store
from pipelines import jobs
from pipelines.cli import cli
from tests.conftest import S3Server
from tests.test_mail import SmtpServer, configure, smtp_server  # noqa: F401 (a fixture)

README = Path(__file__).resolve().parents[1] / "README.md"
BUCKET = "acme-exports"
# The files the walk-through reads: events the CSV import and the JSON import find, with the
# fields the profiles example aggregates.
EVENTS_CSV = (
    "ts,uid,email,country,amount,event,tag,attribute,attribute_value\n"
    "2026-11-01T09:00:00Z,u1, Ada@Example.com ,GB,120.5,purchase,vip,tier,gold\n"
    "2026-11-01T09:05:00Z,u2,grace@example.com,FR,10,view,new,tier,silver\n"
    "2026-11-01T09:10:00Z,u1,ada@example.com,GB,30,purchase,vip,channel,web\n"
)
APP_EVENTS_JSON = (
    '{"user": {"id": "u1", "email": "ada@example.com"},'
    ' "event": {"name": "login", "time": "2026-11-01T08:00:00Z"}}\n'
    '{"user": {"id": "u3", "email": "linus@example.com"},'
    ' "event": {"name": "purchase", "time": "2026-11-01T08:30:00Z"}}\n'
)


def blocks(language: str) -> list[str]:
    """The README's code blocks in `language`, in order."""
    text = README.read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def one_block(language: str, marker: str) -> str:
    (found,) = [b for b in blocks(language) if marker in b]
    return found


def commands(script: str) -> list[list[str] | tuple[str, str]]:
    """The shell script's commands as argument lists, and its here-documents as (file, text)."""
    out: list[list[str] | tuple[str, str]] = []
    lines = iter(script.splitlines())
    for line in lines:
        heredoc = re.match(r"cat > (\S+) <<'(\w+)'", line)
        if heredoc:
            body = []
            for inner in lines:
                if inner == heredoc.group(2):
                    break
                body.append(inner)
            out.append((heredoc.group(1), "\n".join(body) + "\n"))
            continue
        words = shlex.split(line, comments=True)
        if words:
            out.append(words)
    return out


def test_every_job_and_profiles_file_in_the_readme_loads() -> None:
    from engine.profiles import config as profiles_config

    found = readme_files()
    assert len(found) >= 4
    for text in found:
        jobs.load(text, "README.md")
    profiles_config.parse(one_block("toml", "by = "), "README.md")


def readme_files() -> list[str]:
    """Every job file of the README: its TOML blocks and the walk-through's here-documents."""
    found = [text for text in blocks("toml") if text.startswith("name = ")]
    for script in blocks("sh"):
        found += [item[1] for item in commands(script) if isinstance(item, tuple)]
    return found


def test_every_file_in_the_readme_validates_against_its_json_schema() -> None:
    """What an editor would check: `lakeport jobs schema TYPE` takes each job file of the
    README, and `lakeport jobs schema profiles` its profiles file; and each schema says no to
    a misspelt key, as the job's own loading does."""
    import tomllib

    import jsonschema

    def schema(kind: str) -> dict[str, Any]:
        result = CliRunner().invoke(cli, ["jobs", "schema", kind])
        assert result.exit_code == 0, result.output
        found: dict[str, Any] = json.loads(result.output)
        jsonschema.Draft202012Validator.check_schema(found)
        return found

    kinds = set()
    for text in readme_files():
        document = tomllib.loads(text)
        jsonschema.validate(document, schema(document["type"]))
        kinds.add(document["type"])
        with pytest.raises(jsonschema.ValidationError, match="nmae"):
            jsonschema.validate({**document, "nmae": "x"}, schema(document["type"]))
    assert kinds == set(jobs.TYPES)
    jsonschema.validate(tomllib.loads(one_block("toml", "by = ")), schema("profiles"))


def field_table(heading: str) -> set[str]:
    """The fields the README's table under `heading` names (a row may name several)."""
    text = README.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (`[^|]*`) \|", text, flags=re.M)
    return {name for row in rows for name in re.findall(r"`([a-z_]+)`", row)}


@pytest.mark.parametrize(
    ("kind", "heading", "shared"),
    [
        ("csv-import", "The csv-import job", None),
        ("json-import", "The json-import job", "The csv-import job"),
        ("audience-export", "The audience-export job", None),
        ("event-export", "The event-export job", None),
    ],
)
def test_the_readme_tables_every_field_of_each_job_type(
    kind: str, heading: str, shared: str | None
) -> None:
    """Each job type's table names its fields, no more; the json-import's names its own, and
    takes the ones every import has from the csv-import's."""
    from pipelines.importing import ImportJob

    spec = jobs.job_type(kind).spec
    declared = {f.alias or name for name, f in spec.model_fields.items()}
    named = field_table(heading)
    assert named <= declared
    if shared is None:
        assert named == declared
    else:
        common = set(ImportJob.model_fields)
        assert declared - common <= named
        assert common <= field_table(shared)


@pytest.fixture
def acme(tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The walk-through's world: bucket `acme-exports` with the event files, the store at
    ./lakeport-data, authorizations `acme` and `prod` for the moto server."""
    client = s3.client()
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    for found in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=found["Key"])
    client.put_object(Bucket=BUCKET, Key="events/events_20261101.csv", Body=EVENTS_CSV.encode())
    client.put_object(
        Bucket=BUCKET, Key="events/app_events_20261101.json", Body=APP_EVENTS_JSON.encode()
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LAKEPORT_STORE", "./lakeport-data")
    store = Store(tmp_path / "lakeport-data")
    for name in ("acme", "prod"):
        store.authorizations.add(s3.authorization(name))
    return tmp_path


def lakeport(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (args, result.output)
    assert "failed" not in result.output, (args, result.output)
    return result.output


def test_the_walk_through_and_the_library_examples_run_as_written(
    acme: Path,
    s3: S3Server,
    smtp_server: SmtpServer,  # noqa: F811 (the fixture imported above)
) -> None:
    configure(Store(acme / "lakeport-data"), smtp_server)  # for `smtp set`, the test's server
    # The JSON import's example, then the profiles file the walk-through builds from.
    (acme / "app-events.toml").write_text(one_block("toml", 'type = "json-import"'))
    assert "2 imported" in lakeport("run", "app-events.toml")
    (acme / "profiles.toml").write_text(one_block("toml", "by = "))
    script = one_block("sh", "lakeport auth add")
    ran = []
    for item in commands(script):
        if isinstance(item, tuple):
            (acme / item[0]).write_text(item[1])
            continue
        if item[0] == "export":
            continue  # LAKEPORT_STORE is set so already
        assert item[0] == "lakeport", item
        if item[1:3] in (["auth", "add"], ["smtp", "set"]):
            continue  # replaced: the moto authorizations and the test's SMTP server
        ran.append((item[1:], lakeport(*item[1:])))
    outputs = dict((" ".join(args), out) for args, out in ran)
    assert "3 imported" in outputs["run events-import.toml"]
    assert "users" in outputs["run vip-export.toml"]
    assert len(smtp_server.received) == 1
    # The audience-export example, with its fields and segments.
    (acme / "daily.toml").write_text(one_block("toml", 'type = "audience-export"'))
    assert "files" in lakeport("run", "daily.toml")
    assert len(smtp_server.received) == 2
    # Then the library snippets, in the same folder and store.
    scope: dict[str, Any] = {}
    for code in blocks("python"):
        exec(compile(code, "README.md", "exec"), scope)
    assert scope["result"].rows == 2
    assert scope["record"].status == "succeeded", scope["record"].error
    assert scope["vips"].height >= 1
    assert len(smtp_server.received) == 4  # the export snippet runs the job twice
