"""The CLI as users run it: output, exit codes, one-line errors, and secrets kept out of sight."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipelines.cli import cli
from tests.conftest import S3Server


def run(store: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--store", str(store), *args], input=input)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


def add_moto_auth(
    store_path: Path, s3: S3Server, tmp_path: Path, name: str = "moto", secret: str | None = None
) -> None:
    """`lakeport auth add NAME` for the moto server, the secret key given in a file."""
    key_file = tmp_path / f"{name}.key"
    key_file.write_text((s3.admin.secret_key if secret is None else secret) + "\n")
    result = run(
        store_path,
        "auth",
        "add",
        name,
        "--access-key-id",
        s3.admin.access_key_id,
        "--secret-key-file",
        str(key_file),
        "--region",
        "us-east-1",
        "--endpoint-url",
        s3.endpoint,
    )
    assert result.exit_code == 0, result.output
    key_file.unlink()


def test_ls_lists_directories_and_files_with_sizes(
    store_path: Path, s3: S3Server, tmp_path: Path
) -> None:
    add_moto_auth(store_path, s3, tmp_path)
    bucket = s3.new_bucket()
    s3.put(bucket, "exports/events_20261101.csv", b"a,b\n" * 1000)
    s3.put(bucket, "exports/2026/old.csv", b"a\n")

    result = run(store_path, "ls", f"s3://{bucket}/exports/", "--auth", "moto")
    assert result.exit_code == 0, result.output
    assert "2026/" in result.stdout
    assert "events_20261101.csv" in result.stdout
    assert "3.9 KiB" in result.stdout
    assert "4000" in result.stdout

    as_json = json.loads(
        run(
            store_path, "ls", f"s3://{bucket}/exports/", "--auth", "moto", "--output", "json"
        ).stdout
    )
    assert as_json["directories"] == ["2026/"]
    assert [(f["name"], f["size"]) for f in as_json["files"]] == [("events_20261101.csv", 4000)]


def test_ls_lists_buckets(store_path: Path, s3: S3Server, tmp_path: Path) -> None:
    add_moto_auth(store_path, s3, tmp_path)
    bucket = s3.new_bucket()
    result = run(store_path, "ls", "--auth", "moto", "-o", "json")
    assert result.exit_code == 0, result.output
    assert bucket in [b["name"] for b in json.loads(result.stdout)]


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.count("\n") == 0, message
    assert message.startswith("lakeport: error: ")
    for fragment in fragments:
        assert fragment in message


def test_missing_bucket_is_one_line_naming_it(
    store_path: Path, s3: S3Server, tmp_path: Path
) -> None:
    add_moto_auth(store_path, s3, tmp_path)
    result = run(store_path, "ls", "s3://no-such-bucket-x1/dir/", "--auth", "moto")
    assert_one_line_error(result, "bucket 'no-such-bucket-x1'", "authorization 'moto'")


def test_wrong_secret_is_one_line_naming_the_authorization(
    store_path: Path, s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    add_moto_auth(store_path, s3, tmp_path, "typo", secret="definitely-not-the-secret")
    result = run(store_path, "ls", f"s3://{bucket}/", "--auth", "typo")
    assert_one_line_error(result, "authorization 'typo'", "secret key does not match")


@pytest.mark.parametrize("command", ["inspect", "ls"])
def test_wrong_secret_on_an_object_says_the_secret_does_not_match(
    command: str, store_path: Path, s3: S3Server, tmp_path: Path
) -> None:
    # A HEAD request's 403 has no body, so it cannot say why: lakeport asks again with a
    # request whose answer does.
    bucket = s3.new_bucket()
    s3.client().put_object(Bucket=bucket, Key="in/a.csv", Body=b"id,x\n1,2\n")
    add_moto_auth(store_path, s3, tmp_path, "typo", secret="definitely-not-the-secret")
    result = run(store_path, command, f"s3://{bucket}/in/a.csv", "--auth", "typo")
    assert_one_line_error(result, "authorization 'typo'", "secret key does not match")


def test_console_script_errors_without_traceback(
    store_path: Path, s3: S3Server, tmp_path: Path
) -> None:
    add_moto_auth(store_path, s3, tmp_path)
    lakeport = Path(sys.executable).parent / "lakeport"
    done = subprocess.run(
        [
            str(lakeport),
            "--store",
            str(store_path),
            "ls",
            "s3://no-such-bucket-x2/",
            "--auth",
            "moto",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().count("\n") == 0
    assert "bucket 'no-such-bucket-x2'" in done.stderr
    usage = subprocess.run(
        [str(lakeport), "auth", "add"], capture_output=True, text=True, timeout=120
    )
    assert usage.returncode == 2
    assert "Missing argument 'NAME'" in usage.stderr


def test_usage_errors_exit_2(store_path: Path) -> None:
    result = run(store_path, "auth", "add", "x", "--access-key-id", "AKIA0000", "--default-chain")
    assert result.exit_code == 2
    assert "exactly one of" in result.output
    result = run(store_path, "ls")
    assert result.exit_code == 2
    assert "--auth NAME" in result.output


def test_unknown_authorization_lists_the_known(store_path: Path) -> None:
    run(store_path, "auth", "add", "chain", "--default-chain")
    result = run(store_path, "ls", "s3://b/", "--auth", "nope")
    assert_one_line_error(result, "no authorization named 'nope'", "known: chain")


def test_a_secret_appears_in_no_output_log_or_file(
    store_path: Path,
    s3: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bucket = s3.new_bucket()
    s3.put(bucket, "a/b.csv", b"x\n")
    token = "FwoGZXIvYXdzEXAMPLE-session-token-value-0002"
    prompted = "prompted-secret-value-0003"
    monkeypatch.setenv("MY_SESSION_TOKEN", token)
    add_moto_auth(store_path, s3, tmp_path, "fromfile")
    outputs = {
        "add prompted": run(
            store_path,
            "auth",
            "add",
            "prompted",
            "--access-key-id",
            "AKIAPROMPTED0000",
            "--session-token-env",
            "MY_SESSION_TOKEN",
            input=prompted + "\n",
        )
    }
    caplog.set_level(logging.DEBUG)
    outputs |= {
        "list": run(store_path, "auth", "list"),
        "list json": run(store_path, "auth", "list", "-o", "json"),
        "show": run(store_path, "auth", "show", "fromfile"),
        "show json": run(store_path, "auth", "show", "prompted", "-o", "json"),
        "ls": run(store_path, "-vv", "ls", f"s3://{bucket}/a/", "--auth", "fromfile"),
        "ls refused": run(store_path, "-vv", "ls", f"s3://{bucket}/a/", "--auth", "prompted"),
    }
    for name, result in outputs.items():
        assert result.exit_code == (1 if name == "ls refused" else 0), (name, result.output)
    assert "b.csv" in outputs["ls"].stdout
    # DEBUG logging was on: lakeport's own debug lines are there ...
    assert "listing s3://" in caplog.text
    shown = json.loads(outputs["list json"].stdout)
    assert {a["name"]: a["secret_key"] for a in shown} == {
        "fromfile": "stored",
        "prompted": "stored",
    }
    assert json.loads(outputs["show json"].stdout)["session_token"] == "env:MY_SESSION_TOKEN"

    # ... and no secret is in any output, log line, or file but the secrets file.
    secrets = [s3.admin.secret_key, prompted, token]
    everything = "\n".join(r.output for r in outputs.values()) + caplog.text
    for secret in secrets:
        assert secret not in everything
    secrets_file = store_path / "secrets" / "secrets.json"
    assert prompted in secrets_file.read_text()
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != secrets_file:
            content = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in content, path


def test_auth_kinds_list_show_remove(store_path: Path) -> None:
    arn = "arn:aws:iam::123456789012:role/lakeport-reader"
    added = run(store_path, "auth", "add", "customer", "--role-arn", arn, "--region", "eu-west-1")
    assert added.exit_code == 0, added.output
    assert "external id: lakeport-" in added.stdout
    run(store_path, "auth", "add", "chain", "--default-chain")
    listed = json.loads(run(store_path, "auth", "list", "-o", "json").stdout)
    assert [(a["name"], a["kind"]) for a in listed] == [
        ("chain", "default-chain"),
        ("customer", "delegated-role"),
    ]
    shown = json.loads(run(store_path, "auth", "show", "customer", "-o", "json").stdout)
    assert shown["role_arn"] == arn
    assert shown["external_id"].startswith("lakeport-")
    assert run(store_path, "auth", "remove", "customer").exit_code == 0
    assert_one_line_error(run(store_path, "auth", "show", "customer"), "no authorization")


def test_streams_and_stream_show(store_path: Path) -> None:
    import pyarrow as pa

    from engine.store import Source, Store

    batch = pa.record_batch([pa.array(["u1", "u2", "u3"])], names=["user_id"])
    Store(store_path).append("events", [batch], source=Source("f.csv"), job="j")

    listed = json.loads(run(store_path, "streams", "-o", "json").stdout)
    assert [(s["name"], s["rows"]) for s in listed] == [("events", 3)]
    assert "user_id" in listed[0]["fields"]
    text = run(store_path, "streams").stdout
    assert "events" in text
    assert "user_id" in text

    shown = json.loads(
        run(store_path, "stream", "show", "events", "--limit", "2", "-o", "json").stdout
    )
    assert len(shown) == 2
    assert shown[0]["_source"] == "f.csv"
    assert_one_line_error(run(store_path, "stream", "show", "evnts"), "no stream named 'evnts'")


def test_store_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKEPORT_STORE", str(tmp_path / "env-store"))
    result = CliRunner().invoke(cli, ["auth", "add", "chain", "--default-chain"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env-store" / "state.db").exists()


def test_demo_runs_and_says_what_it_did(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "events_20261101.csv" in result.stdout
    assert "8 rows read, 8 imported, 0 unchanged (diff), 0 rejected" in result.stdout
    assert "10 rows read, 3 imported, 7 unchanged (diff), 0 rejected" in result.stdout
    assert "job 'demo-events': no new file" in result.stdout
    # The event export: every event, then only the three the next file brought.
    assert "8 events in 1 file and a manifest" in result.stdout
    assert "3 events in 1 file and a manifest" in result.stdout
    second = result.stdout.split("4b. The event export again", 1)[1].split("\n== ", 1)[0]
    assert second.count('"events","e-') == 3
    assert '"events","e-009","u-5","signup"' in second
    # Ada's purchase known only by her email joins her profile: 5 users, not 6.
    assert "built 5 profiles from 11 events" in result.stdout
    assert "big-spenders  2" in result.stdout
    # It ends with the export: the GB audience to the bucket, gzipped, with its segments.
    assert "job 'demo-export': succeeded" in result.stdout
    assert "2 users in 1 file and a manifest" in result.stdout
    assert '"u-1","ada@example.com","GB",2,52.5,"big-spenders&gb"' in result.stdout
    exported = sorted(p.name for p in (tmp_path / "demo" / "bucket" / "audiences").iterdir())
    assert [name.rsplit("-", 1)[0] for name in exported] == ["lakeport-gb"] * 2
    assert exported[1].endswith("_manifest.json")
    assert "demo-secret-key-that-is-never-printed" not in result.output
    # Running it again in the same folder works too.
    again = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path / "demo")])
    assert again.exit_code == 0, again.output


def test_store_init_with_tables_in_s3(store_path: Path, s3: S3Server, tmp_path: Path) -> None:
    add_moto_auth(store_path, s3, tmp_path)
    bucket = s3.new_bucket()
    result = run(store_path, "store", "init", "--tables", f"s3://{bucket}/lake", "--auth", "moto")
    assert result.exit_code == 0, result.output
    assert f"tables in s3://{bucket}/lake" in result.stdout
    info = json.loads(run(store_path, "store", "info", "-o", "json").stdout)
    assert (info["tables"], info["tables_auth"], info["streams"]) == (
        f"s3://{bucket}/lake",
        "moto",
        0,
    )
    moved = run(store_path, "store", "init", "--tables", f"s3://{bucket}/other", "--auth", "moto")
    assert_one_line_error(moved, f"keeps its tables at s3://{bucket}/lake")


def test_auth_policy_for_a_delegated_role(
    store_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = "arn:aws:iam::123456789012:role/lakeport-reader"
    run(
        store_path,
        "auth",
        "add",
        "customer",
        "--role-arn",
        arn,
        "--external-id",
        "lakeport-ext-0001",
        "--endpoint-url",
        s3.endpoint,
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.admin.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.admin.secret_key)
    result = run(store_path, "auth", "policy", "customer", "--bucket", "acme", "-o", "json")
    assert result.exit_code == 0, result.output
    policy = json.loads(result.stdout)
    statements = policy["permissions"]["Statement"]
    assert statements[0]["Resource"] == "arn:aws:s3:::acme"
    assert "s3:PutObject" in statements[1]["Action"]
    trust = policy["trust"]["Statement"][0]
    assert trust["Principal"]["AWS"].endswith(":user/admin")
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": "lakeport-ext-0001"}}


def test_auth_policy_without_lakeports_own_credentials(store_path: Path) -> None:
    run(
        store_path,
        "auth",
        "add",
        "keys",
        "--access-key-id",
        "AKIAPOLICY000000",
        "--secret-key-env",
        "UNUSED",
    )
    read_only = json.loads(
        run(
            store_path, "auth", "policy", "keys", "--bucket", "b", "--read-only", "-o", "json"
        ).stdout
    )
    assert read_only["permissions"]["Statement"][1]["Action"] == ["s3:GetObject"]
    assert "trust" not in read_only
    run(store_path, "auth", "add", "role", "--role-arn", "arn:aws:iam::123456789012:role/r")
    result = run(store_path, "auth", "policy", "role", "--bucket", "b")
    assert result.exit_code == 0, result.output
    assert "LAKEPORT_ACCOUNT_ID" in result.stdout
    assert "found no AWS credentials" in result.stderr


def test_control_characters_in_keys_are_escaped_in_every_human_output(
    store_path: Path, s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    evil = "in/\x1b[31mred\x1b[0m\r[bold]x\u202eevil.csv"
    s3.client().put_object(Bucket=bucket, Key=evil, Body=b"id\n1\n")
    add_moto_auth(store_path, s3, tmp_path)
    listed = run(store_path, "ls", f"s3://{bucket}/in/", "--auth", "moto")
    assert listed.exit_code == 0, listed.output
    assert "\x1b" not in listed.output
    assert "\r" not in listed.output
    assert "\u202e" not in listed.output
    # Escaped, and not read as markup ("[bold]" stays); the table may fold the cell.
    folded = "".join(line.split("  ")[0].strip() for line in listed.output.splitlines()[2:])
    assert folded.startswith("\\x1b[31mred\\x1b[0m\\x0d[bold]x\\u202eevil.csv")
    as_json = run(store_path, "ls", f"s3://{bucket}/in/", "--auth", "moto", "-o", "json")
    assert json.loads(as_json.output)["files"][0]["name"] == evil.removeprefix("in/")  # as it is
    failed = run(store_path, "inspect", f"s3://{bucket}/{evil}x", "--auth", "moto")
    assert "\x1b" not in failed.output
    assert "\\x1b[31m" in failed.stderr


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    # `lakeport inspect FILE | head`: the reader goes away before lakeport writes.
    data = tmp_path / "events.csv"
    data.write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(50)))
    lakeport = Path(sys.executable).parent / "lakeport"
    process = subprocess.Popen(
        [str(lakeport), "--store", str(tmp_path / "store"), "inspect", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()
    with process.stderr:
        errors = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert errors == ""


def test_a_job_file_that_is_not_utf8_is_one_line_naming_it(
    store_path: Path, tmp_path: Path
) -> None:
    job = tmp_path / "job.toml"
    job.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    result = run(store_path, "run", str(job))
    assert_one_line_error(result, f"the job file {job} is not UTF-8 (line 1, bytes e9", "UTF-8")
    rules = tmp_path / "profiles.toml"
    rules.write_bytes('by = ["caf\xe9"]\n'.encode("latin-1"))
    result = run(store_path, "profiles", "build", str(rules))
    assert_one_line_error(result, f"the profiles file {rules} is not UTF-8 (line 1")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_line_bytes = 100000000000000", "max_line_bytes must be at most 1,073,741,824"),
        ("max_field_bytes = 9223372036854775807", "max_field_bytes must be at most"),
    ],
)
def test_limits_too_large_for_the_parser_are_refused_at_load(
    line: str, message: str, store_path: Path, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id\n1\n")
    job = tmp_path / "job.toml"
    job.write_text(
        f'name = "big"\ntype = "csv-import"\nbucket = "{tmp_path / "in"}"\nfile = "a.csv"\n'
        f'stream = "s"\n{line}\n'
    )
    assert_one_line_error(run(store_path, "run", str(job)), message)


def test_a_file_name_too_long_for_a_file_system_is_refused_at_load(
    store_path: Path, tmp_path: Path
) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        'name = "long"\ntype = "audience-export"\naudience = "a"\n'
        f'bucket = "{tmp_path / "out"}"\nfilename = "{"x" * 300}"\n'
    )
    result = run(store_path, "jobs", "add", str(job))
    assert_one_line_error(result, "filename", "bytes long", "shorten `filename`")


def test_tables_fit_an_80_column_terminal(store_path: Path) -> None:
    import pyarrow as pa

    from engine.store import Source, Store

    wide = {f"field_{i}": pa.array(["x" * 60, "y"]) for i in range(3)}
    Store(store_path).append("narrow", [pa.record_batch(wide)], source=Source("a.csv"), job="j")
    many = {f"field_{i}": pa.array(["v"]) for i in range(12)}
    Store(store_path).append("wide", [pa.record_batch(many)], source=Source("b.csv"), job="j")
    env = {"COLUMNS": "80"}
    shown = CliRunner().invoke(
        cli, ["--store", str(store_path), "stream", "show", "narrow"], env=env
    )
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" in shown.output  # long cells are cut, never folded over lines
    assert len(lines) == 1 + 1 + 2  # title, header, one line a row
    records = CliRunner().invoke(
        cli, ["--store", str(store_path), "stream", "show", "wide"], env=env
    )
    assert "-- record 1 --" in records.output  # too many columns: a field a line
    assert "\nfield_11      v\n" in records.output
    chosen = CliRunner().invoke(
        cli,
        ["--store", str(store_path), "stream", "show", "wide", "--columns", "field_3,_source"],
        env=env,
    )
    assert chosen.output.splitlines()[1].split() == ["field_3", "_source"]
    unknown = CliRunner().invoke(
        cli, ["--store", str(store_path), "stream", "show", "wide", "-c", "nope"], env=env
    )
    assert unknown.exit_code == 2
    assert "no column nope: the columns are _ts, field_0" in unknown.output


def test_a_path_with_a_name_too_long_for_the_file_system_is_one_line(
    store_path: Path, tmp_path: Path
) -> None:
    # Once: "OSError: [Errno 36] File name too long".
    path = tmp_path / ("x" * 300 + ".csv")
    result = run(store_path, "inspect", str(path))
    assert_one_line_error(result, "a name in the path is longer than the file system allows")


@pytest.mark.parametrize(
    ("args", "kind", "said"),
    [
        (["auth", "show", "nope"], "ConfigError", "no authorization named 'nope'"),
        (["stream", "show", "nowhere"], "StoreError", "nowhere"),
        (["audience", "show", "vips"], "ConfigError", "no audience named 'vips'"),
        (["run", "{job}"], "SpecError", "field 'strem' is not a field of a csv-import job"),
    ],
)
def test_under_output_json_an_error_is_a_json_document_too(
    store_path: Path, tmp_path: Path, args: list[str], kind: str, said: str
) -> None:
    """A program reading `--output json` reads the error from stdout as JSON; people still
    get the one line on stderr, and the exit code is 1."""
    job = tmp_path / "job.toml"
    job.write_text(
        f'name = "j"\ntype = "csv-import"\nbucket = "{tmp_path}"\nfile = "a.csv"\nstrem = "s"\n'
    )
    result = run(store_path, *[a.format(job=job) for a in args], "--output", "json")
    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == kind
    assert said in error["message"]
    assert error["retry"] is False
    assert result.stderr.strip() == f"lakeport: error: {error['message']}"
    text = run(store_path, *[a.format(job=job) for a in args])
    assert text.exit_code == 1
    assert text.stdout == ""
    assert text.stderr.strip() == result.stderr.strip()
