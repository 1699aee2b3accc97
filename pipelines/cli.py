"""The `lakeport` command: thin commands that parse, call the library and print.

`main` is the one wrapper that turns a `LakeportError` into a one-line message and exit code 1
(2 for usage errors), never a traceback. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from engine.errors import Interrupted, LakeportError
from engine.secrets import redact
from pipelines.output import (
    COLUMNS_OPTION,
    OUTPUT_OPTION,
    Output,
    activity,
    choose_columns,
    echo,
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
        except (KeyboardInterrupt, Interrupted) as exc:
            from pipelines.runs import interruption

            echo(f"lakeport: {interruption(exc)}", err=True)
            ctx.exit(143 if isinstance(exc, Interrupted) else 130)
        except BrokenPipeError:
            # The reader of the output went away (`lakeport inspect ... | head`): stop, quietly,
            # as a command killed by SIGPIPE does.
            _silence_stdout()
            ctx.exit(141)
        except LakeportError as exc:
            echo(f"lakeport: error: {redact(str(exc))}", err=True)
            ctx.exit(1)
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                echo(redact(traceback.format_exc()), err=True)
            echo(
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


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush finds no broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a file descriptor (tests): nothing is flushed to a pipe at exit


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted("SIGTERM")


def main() -> None:
    """Entry point of the `lakeport` console script. SIGTERM (a service manager stopping
    lakeport) ends a run as Ctrl-C does: recorded `interrupted`, nothing half-written."""
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
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
    echo(f"added authorization '{added.name}' ({added.kind})")
    if added.kind == "delegated-role":
        echo(f"external id: {added.external_id} (the role's trust policy must require it)")


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
    echo(f"removed authorization '{name}'")


@auth.command("policy")
@click.argument("name")
@click.option("--bucket", required=True, help="The bucket the authorization is for.")
@click.option("--read-only", is_flag=True, help="Imports only: no PutObject or DeleteObject.")
@OUTPUT_OPTION
@click.pass_obj
def auth_policy(obj: Context, name: str, bucket: str, read_only: bool, output: Output) -> None:
    """Print the IAM policy NAME needs on BUCKET, and for a delegated role its trust policy."""
    import json

    from engine import storage
    from engine.auth import DelegatedRole, bucket_policy, trust_policy

    auth = obj.store().authorization(name)
    document: dict[str, Any] = {"permissions": bucket_policy(bucket, write=not read_only)}
    if isinstance(auth, DelegatedRole):
        try:
            principal = storage.caller_identity(auth.region, auth.endpoint_url)
        except LakeportError as exc:
            principal = "arn:aws:iam::LAKEPORT_ACCOUNT_ID:root"
            echo(
                f"lakeport: note: {exc}; replace {principal} with the ARN lakeport runs as",
                err=True,
            )
        document["trust"] = trust_policy(principal, auth.external_id)
    if output == "json":
        emit_json(document)
        return
    attach = "the role" if isinstance(auth, DelegatedRole) else "the user of the access key"
    echo(f"# Permissions: attach to {attach} ({auth.name}) for s3://{bucket}")
    echo(json.dumps(document["permissions"], indent=2))
    if isinstance(auth, DelegatedRole):
        echo(f"\n# Trust policy of {auth.role_arn}")
        echo(json.dumps(document["trust"], indent=2))


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
    echo(f"store {store.path.resolve()}: tables in {store.tables.url}")


@store_group.command("vacuum")
@click.argument("streams", nargs=-1, metavar="[STREAM]...")
@OUTPUT_OPTION
@click.pass_obj
def store_vacuum(obj: Context, streams: tuple[str, ...], output: Output) -> None:
    """Remove the data files of STREAMs (all when none) that no Delta commit references:
    what an append that died before its commit left. Appends under way are not touched."""
    store = obj.store()
    removed = {name: store.remove_unreferenced(name) for name in streams or store.stream_names()}
    if output == "json":
        emit_json(removed)
        return
    for name, urls in removed.items():
        for url in urls:
            echo(f"removed {url}")
        echo(
            f"stream '{name}': {len(urls)} unreferenced file{'' if len(urls) == 1 else 's'} removed"
        )
    if not removed:
        echo("no streams")


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
        wrap=["name"],
    )


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
@COLUMNS_OPTION
@OUTPUT_OPTION
@click.pass_obj
def stream_show(
    obj: Context, name: str, limit: int, rejected: bool, chosen: str | None, output: Output
) -> None:
    """Show the first rows of the stream NAME."""
    with activity(f"Reading stream {name}"):
        store = obj.store()
        frame = (store.rejected(name) if rejected else store.stream(name)).head(limit).collect()
    frame = frame.select(choose_columns(frame.columns, chosen))
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


# The job commands live in their own module; importing it registers them on `cli`.
from pipelines import cli_jobs, cli_profiles, cli_smtp  # noqa: E402

__all__ = ["cli", "cli_jobs", "cli_profiles", "cli_smtp", "main"]
