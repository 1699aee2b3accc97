"""The root of the `lakeport` command: the group every command module registers on, its
context, logging, and the one wrapper for errors.

The commands themselves are thin: they parse, call the library and print.

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
from pipelines.output import OUTPUT_KEY, echo, emit_error

if TYPE_CHECKING:
    from engine.audiences import Audiences
    from engine.store import Store

DEBUG_ENV = "LAKEPORT_DEBUG"


@dataclass
class Context:
    store_path: Path | None

    def store(self) -> Store:
        from engine.store import Store

        return Store(self.store_path)

    def audiences(self) -> Audiences:
        from engine.audiences import Audiences

        return Audiences(self.store())


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
            emit_error(exc, ctx.meta.get(OUTPUT_KEY))
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


def read_secret_file(path: Path, what: str = "secret key") -> str:
    from engine.errors import ConfigError

    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc}") from None
    if not value:
        raise ConfigError(f"the {what} file {path} is empty")
    return value
