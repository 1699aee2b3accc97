"""Sending an email through the store's SMTP server: the links to an export's files.

The server's settings live in state.db (`smtp`); its password is a secret like any other
(the secrets file, or an environment variable), never in state.db, a log or an error. STARTTLS
checks the server's certificate against the system's CAs, or against `ca_file` for a private CA.
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError, TransientError
from engine.secrets import Secret, redact

if TYPE_CHECKING:
    from engine.store import Store

SETTING = "smtp"


class MailError(TransientError):
    """The SMTP server could not be reached or refused the message."""


def check_address(address: str) -> str:
    """An email address like `ops@example.com`, or a ConfigError."""
    _, found = parseaddr(address)
    local, _, domain = found.partition("@")
    if not local or not domain or found != address.strip() or any(c in address for c in "\r\n"):
        raise ConfigError(f"{address!r} is not an email address like ops@example.com")
    return found


@dataclass(frozen=True)
class SmtpServer:
    """How to reach the SMTP server."""

    host: str
    port: int = 587
    starttls: bool = True
    user: str | None = None
    password: Secret | None = None
    sender: str = "lakeport@localhost"
    ca_file: str | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.host or any(c in self.host for c in "/ \r\n"):
            raise ConfigError(f"{self.host!r} is not an SMTP host name")
        if not 0 < self.port < 65536:
            raise ConfigError(f"the SMTP port must be 1-65535 (got {self.port})")
        check_address(self.sender)
        if (self.user is None) != (self.password is None):
            raise ConfigError("an SMTP user needs a password, and a password a user")

    def describe(self) -> dict[str, Any]:
        """The settings, the password only as where it lives."""
        return {
            "host": self.host,
            "port": self.port,
            "starttls": self.starttls,
            "user": self.user,
            "password": None if self.password is None else self.password.describe(),
            "sender": self.sender,
            "ca_file": self.ca_file,
        }


def save(store: Store, server: SmtpServer) -> SmtpServer:
    """Keep the server's settings in the store (a typed-in password goes to the secrets file)."""
    password = server.password
    if password is not None and password.ref is None:
        password = store.secrets.put(password)
    old = store.state.get_setting(SETTING)
    settings = {k: v for k, v in server.describe().items() if k != "password"}
    settings["password_ref"] = None if password is None else password.ref
    store.state.set_setting(SETTING, json.dumps(settings))
    if old is not None:
        _forget_password(store, json.loads(old), keep=settings["password_ref"])
    return load(store)


def load(store: Store) -> SmtpServer:
    text = store.state.get_setting(SETTING)
    if text is None:
        raise ConfigError(
            "no SMTP server is set for emails: set one with `lakeport smtp set --host HOST ...`"
        )
    settings = json.loads(text)
    ref = settings.pop("password_ref")
    return SmtpServer(**settings, password=None if ref is None else store.secrets.load(ref))


def remove(store: Store) -> None:
    text = store.state.get_setting(SETTING)
    if text is None:
        raise ConfigError("no SMTP server is set")
    store.state.delete_setting(SETTING)
    _forget_password(store, json.loads(text), keep=None)


def _forget_password(store: Store, settings: dict[str, Any], keep: str | None) -> None:
    ref = settings.get("password_ref")
    if ref is not None and ref != keep:
        store.secrets.delete(ref)


def send(server: SmtpServer, to: Sequence[str], subject: str, body: str) -> None:
    """Send a plain-text email; a MailError names the server and what it said."""
    message = EmailMessage()
    message["From"] = server.sender
    message["To"] = ", ".join(check_address(a) for a in to)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="lakeport")
    message.set_content(body)
    where = f"the SMTP server {server.host}:{server.port}"
    try:
        with smtplib.SMTP(server.host, server.port, timeout=server.timeout) as smtp:
            if server.starttls:
                context = ssl.create_default_context(cafile=server.ca_file)
                smtp.starttls(context=context)
            if server.user is not None and server.password is not None:
                smtp.login(server.user, server.password.reveal())
            smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(
            f"{where} refused the login of '{server.user}' ({exc.smtp_code}): check the user "
            "and password with `lakeport smtp set`"
        ) from None
    except smtplib.SMTPNotSupportedError:
        raise MailError(
            f"{where} does not offer STARTTLS: use a server that does, or set --no-starttls "
            "only for a relay on a trusted network"
        ) from None
    except smtplib.SMTPResponseException as exc:
        error = exc.smtp_error
        said = redact(error.decode("utf-8", "replace") if isinstance(error, bytes) else error)
        raise MailError(f"{where} refused the message ({exc.smtp_code} {said})") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailError(
            f"{where} refused the recipients {', '.join(exc.recipients)}: check email_to"
        ) from None
    except ssl.SSLError as exc:
        raise MailError(
            f"{where}: the TLS handshake failed ({exc.reason}): if it uses a private CA, "
            "give its certificate with `lakeport smtp set --ca-file`"
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else redact(str(exc))
        raise MailError(
            f"cannot send email through {where} ({reason}): check the host and port"
        ) from None
