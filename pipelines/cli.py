"""The `lakeport` command: thin commands that parse, call the library and print.

`main` is the one wrapper that turns a `LakeportError` into a one-line message and exit code 1
(2 for usage errors), never a traceback. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from engine.errors import LakeportError
from engine.secrets import redact
from pipelines.output import (
    OUTPUT_OPTION,
    Output,
    activity,
    bytes_progress,
    emit_json,
    emit_table,
    human_bytes,
)

if TYPE_CHECKING:
    from engine.store import Store

DEBUG_ENV = "LAKEPORT_DEBUG"


@dataclass
class Context:
    store_path: Path | None

    def store(self) -> Store:
        from engine.store import Store

        return Store(self.store_path)


class _RedactingFilter(logging.Filter):
    """Masks every secret revealed in this process, whatever logger the record comes from."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


class _LakeportHandler(logging.Handler):
    """Writes log lines to whatever stderr is at the time (so test runners can capture it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def _configure_logging(verbose: int) -> None:
    from engine.storage import quiet_client_loggers

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _LakeportHandler)), None)
    if handler is None:
        handler = _LakeportHandler()
        handler.addFilter(_RedactingFilter())
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    # The handler's level too: libraries that set their own logger level stay quiet unless -v.
    handler.setLevel(level)
    root.setLevel(level)
    quiet_client_loggers()


class LakeportGroup(click.Group):
    """The one wrapper: a `LakeportError` becomes a one-line message and exit code 1.

    Usage errors keep click's exit code 2. Anything unexpected is one line too, with the
    traceback only when LAKEPORT_DEBUG is set.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except LakeportError as exc:
            click.echo(f"lakeport: error: {redact(str(exc))}", err=True)
            ctx.exit(1)
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                click.echo(redact(traceback.format_exc()), err=True)
            click.echo(
                f"lakeport: internal error: {type(exc).__name__}: {redact(str(exc))} "
                f"(set {DEBUG_ENV}=1 to see where, and please report it)",
                err=True,
            )
            ctx.exit(1)


@click.group(
    cls=LakeportGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LAKEPORT_STORE",
    help="The store folder (default ./lakeport-data, or $LAKEPORT_STORE).",
)
@click.option(
    "-v", "--verbose", count=True, help="Log more (-v info, -vv debug); secrets are masked."
)
@click.version_option(package_name="lakeport")
@click.pass_context
def cli(ctx: click.Context, store_path: Path | None, verbose: int) -> None:
    """Move customer data between S3 buckets and a columnar store, in large batches."""
    _configure_logging(verbose)
    ctx.obj = Context(store_path)


def main() -> None:
    """Entry point of the `lakeport` console script."""
    cli.main(prog_name="lakeport")


# Authorizations


@cli.group()
def auth() -> None:
    """Add, list, show and remove authorizations (how lakeport gets into a bucket)."""


@auth.command("add")
@click.argument("name")
@click.option("--access-key-id", help="AWS access key id (kind: aws-keys).")
@click.option("--secret-key-env", metavar="VAR", help="Read the secret key from $VAR at each use.")
@click.option(
    "--secret-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Copy the secret key from this file into the store's secrets file.",
)
@click.option("--session-token-env", metavar="VAR", help="Read a session token from $VAR.")
@click.option("--role-arn", help="IAM role to assume through STS (kind: delegated-role).")
@click.option("--external-id", help="External id for the role (default: a new random one).")
@click.option("--default-chain", is_flag=True, help="Use the AWS default credential chain.")
@click.option("--region", help="AWS region, e.g. eu-west-1.")
@click.option("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000.")
@click.pass_obj
def auth_add(
    obj: Context,
    name: str,
    access_key_id: str | None,
    secret_key_env: str | None,
    secret_key_file: Path | None,
    session_token_env: str | None,
    role_arn: str | None,
    external_id: str | None,
    default_chain: bool,
    region: str | None,
    endpoint_url: str | None,
) -> None:
    """Add the authorization NAME.

    \b
    AWS keys:      lakeport auth add NAME --access-key-id ID [--secret-key-env VAR |
                   --secret-key-file PATH] [--session-token-env VAR] [--region R]
                   [--endpoint-url URL]   (with no secret option, the key is asked for)
    Delegated:     lakeport auth add NAME --role-arn ARN [--external-id ID]
    Default chain: lakeport auth add NAME --default-chain
    """
    from engine.auth import AwsKeys, DefaultChain, DelegatedRole
    from engine.secrets import Secret

    kinds = [
        k
        for k, given in (
            ("--access-key-id", access_key_id),
            ("--role-arn", role_arn),
            ("--default-chain", default_chain),
        )
        if given
    ]
    if len(kinds) != 1:
        raise click.UsageError(
            "give exactly one of --access-key-id, --role-arn or --default-chain"
            + (f" (got {' and '.join(kinds)})" if kinds else "")
        )
    key_options = {
        "--secret-key-env": secret_key_env,
        "--secret-key-file": secret_key_file,
        "--session-token-env": session_token_env,
    }
    if access_key_id is None and any(key_options.values()):
        given = ", ".join(k for k, v in key_options.items() if v)
        raise click.UsageError(f"{given} only go with --access-key-id")
    if external_id is not None and role_arn is None:
        raise click.UsageError("--external-id only goes with --role-arn")

    store = obj.store()
    common: dict[str, Any] = {"name": name, "region": region, "endpoint_url": endpoint_url}
    added: Any
    if access_key_id is not None:
        if secret_key_env and secret_key_file:
            raise click.UsageError("give --secret-key-env or --secret-key-file, not both")
        if secret_key_env:
            secret = Secret.from_env(secret_key_env)
        elif secret_key_file:
            secret = Secret(_read_secret_file(secret_key_file))
        else:
            secret = Secret(click.prompt("Secret access key", hide_input=True).strip())
        token = Secret.from_env(session_token_env) if session_token_env else None
        added = store.add_authorization(
            AwsKeys(access_key_id=access_key_id, secret_key=secret, session_token=token, **common)
        )
    elif role_arn is not None:
        role: dict[str, Any] = {"role_arn": role_arn}
        if external_id is not None:
            role["external_id"] = external_id
        added = store.add_authorization(DelegatedRole(**role, **common))
    else:
        added = store.add_authorization(DefaultChain(**common))
    click.echo(f"added authorization '{added.name}' ({added.kind})")
    if added.kind == "delegated-role":
        click.echo(f"external id: {added.external_id} (the role's trust policy must require it)")


def _read_secret_file(path: Path) -> str:
    from engine.errors import ConfigError

    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the secret key file {path}: {exc}") from None
    if not value:
        raise ConfigError(f"the secret key file {path} is empty")
    return value


@auth.command("list")
@OUTPUT_OPTION
@click.pass_obj
def auth_list(obj: Context, output: Output) -> None:
    """List authorizations (secrets are never shown)."""
    shown = [a.describe() for a in obj.store().authorizations()]
    if output == "json":
        emit_json(shown)
        return
    rows = [
        {
            "name": a["name"],
            "kind": a["kind"],
            "identity": a.get("access_key_id") or a.get("role_arn") or "",
            "region": a.get("region"),
            "endpoint": a.get("endpoint_url"),
        }
        for a in shown
    ]
    emit_table(
        rows,
        ["name", "kind", "identity", "region", "endpoint"],
        empty="no authorizations: add one with `lakeport auth add`",
    )


@auth.command("show")
@click.argument("name")
@OUTPUT_OPTION
@click.pass_obj
def auth_show(obj: Context, name: str, output: Output) -> None:
    """Show one authorization; secrets appear only as where they live (env:VAR or stored)."""
    shown = obj.store().authorization(name).describe()
    if output == "json":
        emit_json(shown)
        return
    emit_table([{"field": k, "value": v} for k, v in shown.items()], ["field", "value"])


@auth.command("remove")
@click.argument("name")
@click.pass_obj
def auth_remove(obj: Context, name: str) -> None:
    """Remove an authorization and the secrets stored for it."""
    obj.store().remove_authorization(name)
    click.echo(f"removed authorization '{name}'")


# The store


@cli.group("store")
def store_group() -> None:
    """Create the store, or show where it keeps its state and tables."""


@store_group.command("init")
@click.option("--tables", metavar="URL", help="Keep the Delta tables in s3://BUCKET/PREFIX.")
@click.option("--auth", "auth_name", metavar="NAME", help="The authorization for --tables.")
@click.pass_obj
def store_init(obj: Context, tables: str | None, auth_name: str | None) -> None:
    """Create the store (state.db here; tables here or in S3) and say where it is."""
    from engine.store import Store

    store = Store(obj.store_path, tables=tables, tables_auth=auth_name)
    click.echo(f"store {store.path.resolve()}: tables in {store.tables.url}")


@store_group.command("info")
@OUTPUT_OPTION
@click.pass_obj
def store_info(obj: Context, output: Output) -> None:
    """Show where the store keeps its state and tables, and what it holds."""
    store = obj.store()
    info = {
        "path": str(store.path.resolve()),
        "tables": store.tables.url,
        "tables_auth": store.state.get_setting("tables_auth"),
        "state_schema_version": store.state.schema_version(),
        "authorizations": len(store.state.list_authorizations()),
        "streams": len(store.streams()),
    }
    if output == "json":
        emit_json(info)
        return
    emit_table([{"field": k, "value": v} for k, v in info.items()], ["field", "value"])


# Buckets and folders


@cli.command("ls")
@click.argument("url", required=False)
@click.option("--auth", "auth_name", metavar="NAME", help="The authorization for s3:// URLs.")
@OUTPUT_OPTION
@click.pass_obj
def ls(obj: Context, url: str | None, auth_name: str | None, output: Output) -> None:
    """List buckets (no URL), or the directories and files under URL.

    URL is s3://BUCKET/PREFIX/, file:///PATH, a local path, or memory://PATH.
    """
    from engine import storage

    auth = obj.store().authorization(auth_name) if auth_name else None
    if url is None:
        if auth is None:
            raise click.UsageError("listing buckets needs --auth NAME (or give a URL)")
        with activity("Listing buckets"):
            buckets = storage.list_buckets(auth)
        if output == "json":
            emit_json([{"name": b.name, "created": b.created} for b in buckets])
            return
        emit_table(
            [{"bucket": b.name, "created": b.created} for b in buckets],
            ["bucket", "created"],
            empty="no buckets",
        )
        return
    with activity(f"Listing {url}"):
        listing = storage.list_directory(url, auth)
    if output == "json":
        emit_json(
            {
                "url": listing.url,
                "directories": listing.directories,
                "files": [
                    {
                        "url": f.url,
                        "name": f.name,
                        "size": f.size,
                        "last_modified": f.last_modified,
                        "etag": f.etag,
                    }
                    for f in listing.files
                ],
            }
        )
        return
    rows: list[dict[str, Any]] = [{"name": d, "size": "DIR"} for d in listing.directories]
    rows += [
        {
            "name": f.name,
            "size": human_bytes(f.size),
            "bytes": f.size,
            "modified": f.last_modified,
            "etag": f.etag,
        }
        for f in listing.files
    ]
    emit_table(
        rows,
        ["name", "size", "bytes", "modified", "etag"],
        title=listing.url,
        empty="empty",
        right=["size", "bytes"],
    )


@cli.command("inspect")
@click.argument("url")
@click.option("--auth", "auth_name", metavar="NAME", help="The authorization for s3:// URLs.")
@click.option("--rows", "-n", type=click.IntRange(min=1, max=1000), default=10, show_default=True)
@OUTPUT_OPTION
@click.pass_obj
def inspect(obj: Context, url: str, auth_name: str | None, rows: int, output: Output) -> None:
    """Sniff a CSV object: encoding, delimiter, fields, timestamps; preview rows; suggest a job."""
    from dataclasses import asdict

    from engine import storage
    from engine.readers.sniff import inspect as sniff

    auth = obj.store().authorization(auth_name) if auth_name else None
    with activity(f"Inspecting {url}"):
        info = storage.stat(url, auth)
        found = sniff(
            lambda: storage.open_input(url, auth), name=info.url, size=info.size, rows=rows
        )
    location = storage.parse_url(info.url)
    folder = location.key.rsplit("/", 1)[0] if "/" in location.key else ""
    bucket = location.bucket if location.scheme == "s3" else folder
    job = found.job_toml(bucket, folder if location.scheme == "s3" else "", auth_name)
    if output == "json":
        emit_json({**asdict(found), "url": info.url, "job": job})
        return
    shown = "tab" if found.delimiter == "\t" else repr(found.delimiter)
    click.echo(f"{info.url}: {human_bytes(found.size)}, {found.compression or 'not compressed'}")
    click.echo(f"encoding {found.encoding}, delimiter {shown}, quote {found.quote_char!r}")
    click.echo(f"fields ({len(found.fields)}): {', '.join(found.fields)}")
    click.echo(f"look like timestamps: {', '.join(found.timestamp_fields) or 'none'}")
    if found.prefix:
        click.echo(f"continuous import of files named like this one: prefix = {found.prefix!r}")
    emit_table(
        found.rows,
        found.fields,
        title=f"first {len(found.rows)} rows",
        empty="no rows after the header",
    )
    click.echo("\na job file to start from:\n" + job)


# Streams


@cli.command("streams")
@OUTPUT_OPTION
@click.pass_obj
def streams(obj: Context, output: Output) -> None:
    """List the streams in the store, with row counts and fields."""
    with activity("Reading stream logs"):
        found = obj.store().streams()
    if output == "json":
        emit_json(
            [
                {"name": s.name, "rows": s.rows, "version": s.version, "fields": s.fields}
                for s in found
            ]
        )
        return
    emit_table(
        [
            {
                "stream": s.name,
                "rows": f"{s.rows:,}",
                "version": s.version,
                "fields": ", ".join(s.fields),
            }
            for s in found
        ],
        ["stream", "rows", "version", "fields"],
        empty="no streams yet",
        right=["rows", "version"],
    )


@cli.group("stream")
def stream() -> None:
    """Look at one stream."""


@stream.command("show")
@click.argument("name")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--rejected", is_flag=True, help="Show the rows the imports rejected instead.")
@OUTPUT_OPTION
@click.pass_obj
def stream_show(obj: Context, name: str, limit: int, rejected: bool, output: Output) -> None:
    """Show the first rows of the stream NAME."""
    with activity(f"Reading stream {name}"):
        store = obj.store()
        frame = (store.rejected(name) if rejected else store.stream(name)).head(limit).collect()
    rows = frame.to_dicts()
    if output == "json":
        emit_json(rows)
        return
    emit_table(
        rows,
        frame.columns,
        title=f"stream {name}: first {len(rows)} rows",
        empty="the stream is empty",
    )


# Jobs and runs


def _run_and_report(store: Store, job: Any, reset_diff: bool, output: Output) -> None:
    from pipelines import jobs

    with bytes_progress(f"{job.name}") as progress:
        record = jobs.run(store, job, reset_diff=reset_diff, progress=progress)
    if output == "json":
        emit_json(record.as_json())
    else:
        click.echo(record.summary(), err=record.failed)
    if record.failed:
        raise click.exceptions.Exit(1)


@cli.command("run")
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reset-diff", is_flag=True, help="Forget the diff snapshot: import the whole file.")
@OUTPUT_OPTION
@click.pass_obj
def run_file(obj: Context, job_file: Path, reset_diff: bool, output: Output) -> None:
    """Run the job in JOB_FILE once; its state is kept under its name."""
    from pipelines import jobs

    job, _ = jobs.load_file(job_file)
    _run_and_report(obj.store(), job, reset_diff, output)


@cli.group("jobs")
def jobs_group() -> None:
    """Register, list, show, run and remove jobs."""


@jobs_group.command("add")
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Replace a registered job of the same name.")
@click.pass_obj
def jobs_add(obj: Context, job_file: Path, replace: bool) -> None:
    """Validate JOB_FILE and register it under its name."""
    from engine.errors import ConfigError
    from pipelines import jobs

    job, text = jobs.load_file(job_file)
    if not obj.store().state.put_job(job.name, job.type, text, replace=replace):
        raise ConfigError(
            f"a job named '{job.name}' is registered already: pass --replace to replace it"
        )
    click.echo(f"registered job '{job.name}' ({job.type})")


@jobs_group.command("list")
@OUTPUT_OPTION
@click.pass_obj
def jobs_list(obj: Context, output: Output) -> None:
    """The registered jobs."""
    found = [{"name": n, "type": t, "updated": u} for n, t, u in obj.store().state.list_jobs()]
    if output == "json":
        emit_json(found)
        return
    emit_table(
        found, ["name", "type", "updated"], empty="no jobs: add one with `lakeport jobs add`"
    )


@jobs_group.command("show")
@click.argument("name")
@click.pass_obj
def jobs_show(obj: Context, name: str) -> None:
    """Print a registered job's file."""
    from engine.errors import ConfigError

    found = obj.store().state.get_job(name)
    if found is None:
        raise ConfigError(f"no job named '{name}': `lakeport jobs list` shows the registered ones")
    click.echo(found[1].rstrip("\n"))


@jobs_group.command("run")
@click.argument("name")
@click.option("--reset-diff", is_flag=True, help="Forget the diff snapshot: import the whole file.")
@OUTPUT_OPTION
@click.pass_obj
def jobs_run(obj: Context, name: str, reset_diff: bool, output: Output) -> None:
    """Run the registered job NAME once."""
    from pipelines import jobs

    store = obj.store()
    _run_and_report(store, jobs.registered(store, name), reset_diff, output)


@jobs_group.command("remove")
@click.argument("name")
@click.pass_obj
def jobs_remove(obj: Context, name: str) -> None:
    """Unregister a job and forget its state (last file); its streams stay."""
    from engine.errors import ConfigError

    if not obj.store().state.delete_job(name):
        raise ConfigError(f"no job named '{name}'")
    click.echo(f"removed job '{name}'")


@cli.command("runs")
@click.option("--job", "job_name", metavar="NAME", help="Only this job's runs.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
@OUTPUT_OPTION
@click.pass_obj
def runs(obj: Context, job_name: str | None, limit: int, output: Output) -> None:
    """The latest runs, newest first."""
    found = obj.store().state.runs(job_name, limit)
    rows = [
        {
            "id": r.id,
            "job": r.job,
            "status": r.status,
            "started": r.started_at,
            "object": r.object,
            **r.stats,
            "error": r.error,
        }
        for r in found
    ]
    if output == "json":
        emit_json(rows)
        return
    table = [
        {**row, "rows": row.get("rows_imported", ""), "error": (row["error"] or "")[:80]}
        for row in rows
    ]
    emit_table(
        table,
        ["id", "job", "status", "started", "object", "rows", "error"],
        empty="no runs yet",
        right=["id", "rows"],
    )


@cli.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to put the demo store and bucket (default: a new temporary folder).",
)
def demo(folder: Path | None) -> None:
    """Run lakeport end to end on a local folder acting as the bucket."""
    from pipelines.demo import run_demo

    run_demo(folder)
