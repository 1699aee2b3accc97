"""The `smtp` commands: the server that export jobs email their links through."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.cli.root import Context, cli
from pipelines.output import Shown, echo, prints


@cli.group("smtp")
def smtp() -> None:
    """Set, show, test or remove the SMTP server for export emails."""


@smtp.command("set")
@click.option("--host", required=True, help="The SMTP server's host name.")
@click.option("--port", type=click.IntRange(1, 65535), default=587, show_default=True)
@click.option(
    "--starttls/--no-starttls",
    default=True,
    show_default=True,
    help="Upgrade to TLS before logging in (turn off only for a relay on a trusted network).",
)
@click.option("--user", help="The login; its password comes from one of the options below.")
@click.option("--password-env", metavar="VAR", help="Read the password from $VAR at each use.")
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Copy the password from this file into the store's secrets file.",
)
@click.option("--sender", default="lakeport@localhost", show_default=True, help="From: address.")
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The certificate of a private CA that signed the server's certificate.",
)
@click.pass_obj
def smtp_set(
    obj: Context,
    host: str,
    port: int,
    starttls: bool,
    user: str | None,
    password_env: str | None,
    password_file: Path | None,
    sender: str,
    ca_file: Path | None,
) -> None:
    """Set the SMTP server (replacing the one set before). With --user and no password
    option, the password is asked for."""
    from engine import mail
    from engine.secrets import Secret
    from pipelines.cli.root import read_secret_file

    if password_env and password_file:
        raise click.UsageError("give --password-env or --password-file, not both")
    password = None
    if user is not None:
        if password_env:
            password = Secret.from_env(password_env)
        elif password_file:
            password = Secret(read_secret_file(password_file))
        else:
            password = Secret(click.prompt(f"Password of {user}", hide_input=True))
    elif password_env or password_file:
        raise click.UsageError("a password needs --user")
    server = mail.SmtpServer(
        host=host,
        port=port,
        starttls=starttls,
        user=user,
        password=password,
        sender=sender,
        ca_file=None if ca_file is None else str(ca_file.resolve()),
    )
    mail.save(obj.store(), server)
    echo(f"SMTP server set: {host}:{port}" + (" (STARTTLS)" if starttls else ""))


@smtp.command("show")
@prints
@click.pass_obj
def smtp_show(obj: Context) -> Shown:
    """The SMTP server; the password only as where it lives."""
    from engine import mail

    shown = mail.load(obj.store()).describe()
    rows = [{"setting": k, "value": v} for k, v in shown.items()]
    return Shown.table(rows, ["setting", "value"], document=shown)


@smtp.command("test")
@click.argument("address")
@click.pass_obj
def smtp_test(obj: Context, address: str) -> None:
    """Send a test email to ADDRESS."""
    from engine import mail

    server = mail.load(obj.store())
    mail.send(
        server,
        [address],
        "lakeport: test email",
        "This is a test email from lakeport: export jobs will send their links this way.\n",
    )
    echo(f"sent a test email to {address} through {server.host}:{server.port}")


@smtp.command("remove")
@click.pass_obj
def smtp_remove(obj: Context) -> None:
    """Forget the SMTP server and its stored password."""
    from engine import mail

    mail.remove(obj.store())
    echo("SMTP server removed")
