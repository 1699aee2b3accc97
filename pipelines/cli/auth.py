"""The `auth` commands: add, list, show, remove authorizations, and the policies they need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from engine.errors import LakeportError
from pipelines.cli.root import Context, cli, read_secret_file
from pipelines.output import Shown, echo, emit_table, prints

# Authorizations


def read_key_file(path: Path) -> bytes:
    from engine.errors import ConfigError

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc.strerror}") from None
    if not data.strip():
        raise ConfigError(f"the key file {path} is empty")
    return data


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
@click.option(
    "--pgp-public-key",
    "pgp_public_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Encrypt exports to this OpenPGP public key (armored or binary); repeat for several.",
)
@click.option(
    "--pgp-private-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Decrypt encrypted imports with this OpenPGP private key (copied to the secrets file).",
)
@click.option("--pgp-passphrase-env", metavar="VAR", help="Read the key's passphrase from $VAR.")
@click.option(
    "--pgp-passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Copy the key's passphrase from this file into the secrets file.",
)
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
    pgp_public_keys: tuple[Path, ...],
    pgp_private_key: Path | None,
    pgp_passphrase_env: str | None,
    pgp_passphrase_file: Path | None,
) -> None:
    """Add the authorization NAME.

    \b
    AWS keys:      lakeport auth add NAME --access-key-id ID [--secret-key-env VAR |
                   --secret-key-file PATH] [--session-token-env VAR] [--region R]
                   [--endpoint-url URL]   (with no secret option, the key is asked for)
    Delegated:     lakeport auth add NAME --role-arn ARN [--external-id ID]
    Default chain: lakeport auth add NAME --default-chain

    \b
    With any of them, OpenPGP keys:
                   [--pgp-public-key FILE ...]   exports are encrypted to each key
                   [--pgp-private-key FILE [--pgp-passphrase-env VAR |
                   --pgp-passphrase-file PATH]]  encrypted imports are decrypted with it
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

    if pgp_passphrase_env and pgp_passphrase_file:
        raise click.UsageError("give --pgp-passphrase-env or --pgp-passphrase-file, not both")
    if (pgp_passphrase_env or pgp_passphrase_file) and pgp_private_key is None:
        raise click.UsageError("a PGP passphrase option only goes with --pgp-private-key")

    store = obj.store()
    common: dict[str, Any] = {"name": name, "region": region, "endpoint_url": endpoint_url}
    if pgp_public_keys or pgp_private_key:
        from engine import pgp

        passphrase = None
        if pgp_passphrase_env:
            passphrase = Secret.from_env(pgp_passphrase_env)
        elif pgp_passphrase_file:
            passphrase = Secret(read_secret_file(pgp_passphrase_file, "passphrase"))
        common |= pgp.authorization_keys(
            [(str(path), read_key_file(path)) for path in pgp_public_keys],
            None
            if pgp_private_key is None
            else (str(pgp_private_key), read_key_file(pgp_private_key)),
            passphrase,
        )
    added: Any
    if access_key_id is not None:
        if secret_key_env and secret_key_file:
            raise click.UsageError("give --secret-key-env or --secret-key-file, not both")
        if secret_key_env:
            secret = Secret.from_env(secret_key_env)
        elif secret_key_file:
            secret = Secret(read_secret_file(secret_key_file))
        else:
            secret = Secret(click.prompt("Secret access key", hide_input=True).strip())
        token = Secret.from_env(session_token_env) if session_token_env else None
        added = store.authorizations.add(
            AwsKeys(access_key_id=access_key_id, secret_key=secret, session_token=token, **common)
        )
    elif role_arn is not None:
        role: dict[str, Any] = {"role_arn": role_arn}
        if external_id is not None:
            role["external_id"] = external_id
        added = store.authorizations.add(DelegatedRole(**role, **common))
    else:
        added = store.authorizations.add(DefaultChain(**common))
    echo(f"added authorization '{added.name}' ({added.kind})")
    if added.encrypts:
        echo(f"exports are encrypted to {', '.join(added.pgp_recipients)}")
    if added.pgp_decrypts_with:
        echo(f"encrypted imports are decrypted with {added.pgp_decrypts_with}")
    if added.kind == "delegated-role":
        echo(f"external id: {added.external_id} (the role's trust policy must require it)")


@auth.command("list")
@prints
@click.pass_obj
def auth_list(obj: Context) -> Shown:
    """List authorizations (secrets are never shown)."""
    shown = [a.describe() for a in obj.store().authorizations.list()]
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
    return Shown.table(
        rows,
        ["name", "kind", "identity", "region", "endpoint"],
        document=shown,
        empty="no authorizations: add one with `lakeport auth add`",
    )


@auth.command("show")
@click.argument("name")
@prints
@click.pass_obj
def auth_show(obj: Context, name: str) -> Shown:
    """Show one authorization; secrets appear only as where they live (env:VAR or stored),
    and OpenPGP keys as their fingerprint, algorithm, user ids and expiry."""
    auth = obj.store().authorizations.get(name)
    shown = auth.describe()
    if not (auth.encrypts or auth.pgp_decrypts_with):
        return Shown.fields(shown)
    from engine import pgp

    keys = pgp.described(auth)
    rows = [{"field": k, "value": v} for k, v in shown.items()]
    for key in keys:
        rows += [
            {"field": f"pgp key ({key['use']})", "value": key["fingerprint"]},
            {"field": "  algorithm", "value": key["algorithm"]},
            *({"field": "  user id", "value": uid} for uid in key["user_ids"]),
            {"field": "  expires", "value": key["expires"][:10] if key["expires"] else "never"},
        ]
    return Shown({**shown, "pgp_keys": keys}, lambda: emit_table(rows, ["field", "value"]))


@auth.command("remove")
@click.argument("name")
@click.pass_obj
def auth_remove(obj: Context, name: str) -> None:
    """Remove an authorization and the secrets stored for it."""
    obj.store().authorizations.remove(name)
    echo(f"removed authorization '{name}'")


@auth.command("policy")
@click.argument("name")
@click.option("--bucket", required=True, help="The bucket the authorization is for.")
@click.option("--read-only", is_flag=True, help="Imports only: no PutObject or DeleteObject.")
@prints
@click.pass_obj
def auth_policy(obj: Context, name: str, bucket: str, read_only: bool) -> Shown:
    """Print the IAM policy NAME needs on BUCKET, and for a delegated role its trust policy."""
    import json

    from engine import storage
    from engine.auth import DelegatedRole, bucket_policy, trust_policy

    auth = obj.store().authorizations.get(name)
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

    def text() -> None:
        attach = "the role" if isinstance(auth, DelegatedRole) else "the user of the access key"
        echo(f"# Permissions: attach to {attach} ({auth.name}) for s3://{bucket}")
        echo(json.dumps(document["permissions"], indent=2))
        if isinstance(auth, DelegatedRole):
            echo(f"\n# Trust policy of {auth.role_arn}")
            echo(json.dumps(document["trust"], indent=2))

    return Shown(document, text)


# The store
