"""Export emails through a real SMTP server on 127.0.0.1 (aiosmtpd): STARTTLS with a
certificate checked against its CA, a login, and links that fetch the exported files."""

from __future__ import annotations

import datetime as dt
import email
import ipaddress
import json
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from engine import mail
from engine.secrets import Secret
from engine.store import Store
from pipelines import jobs
from pipelines.cli import cli
from tests.conftest import S3Server, _reset_auth
from tests.test_audience_export import job_toml, profiled, profiles_table

USER = "exports"
PASSWORD = "smtp-password-4b1d"


@dataclass
class SmtpServer:
    host: str
    port: int
    ca_file: Path
    received: list[Message] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lakeport test SMTP")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert_file, key_file = _certificate(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert_file, key_file)
    server = SmtpServer("127.0.0.1", _free_port(), cert_file)

    class Handler:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            server.received.append(email.message_from_bytes(envelope.content))
            server.recipients.append(list(envelope.rcpt_tos))
            return "250 OK"

    def authenticate(*args: Any) -> Any:
        data = args[-1]
        good = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        return AuthResult(success=good, handled=False)

    controller = Controller(
        Handler(),
        hostname=server.host,
        port=server.port,
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


def configure(store: Store, server: SmtpServer, password: str = PASSWORD) -> None:
    mail.save(
        store,
        mail.SmtpServer(
            host=server.host,
            port=server.port,
            user=USER,
            password=Secret(password),
            sender="lakeport@example.com",
            ca_file=str(server.ca_file),
        ),
    )


@pytest.fixture
def sample(tmp_path: Path) -> Store:
    rows = [{"name": f"user {i}", "tags": ["a", "b"]} for i in range(50)]
    return profiled(tmp_path, profiles_table(rows))


def test_an_export_emails_a_link_to_each_file(
    sample: Store, s3: S3Server, smtp_server: SmtpServer
) -> None:
    configure(sample, smtp_server)
    sample.authorizations.add(s3.authorization())
    bucket = s3.new_bucket()
    job = jobs.load(
        job_toml(
            bucket=bucket,
            auth="moto",
            format="multi-csv",
            email_to=["a@example.com", "b@example.com"],
            email_link_days=2,
        ),
        "job.toml",
    )
    record = jobs.run(sample, job)
    assert not record.failed, record.error
    assert record.note == "emailed links to a@example.com, b@example.com"
    (message,) = smtp_server.received
    assert smtp_server.recipients == [["a@example.com", "b@example.com"]]
    assert message["From"] == "lakeport@example.com"
    assert message["Subject"] == "lakeport: audience 'everyone' exported (50 users)"
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    text = body.decode()
    assert "work for 2 days" in text
    links = [line.strip() for line in text.splitlines() if line.startswith("  http")]
    assert record.files is not None
    assert len(links) == len(record.files) == 4  # users, tags, the manifest... and their links
    for key, link in zip(record.files, links, strict=True):
        query = parse_qs(urlsplit(link).query)
        assert urlsplit(link).path == f"/{bucket}/{key}"
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert query["X-Amz-Expires"] == ["172800"]
        assert query["X-Amz-Credential"][0].startswith(s3.admin.access_key_id + "/")
        assert s3.admin.secret_key not in link
    # moto cannot check a signature in a query string while it checks IAM policies (it reads
    # the Authorization header only), so the links are fetched with its checks off for a moment.
    client = s3.client()
    _reset_auth(s3.endpoint, b"inf")
    try:
        fetched = [urllib.request.urlopen(link, timeout=10).read() for link in links]
    finally:
        _reset_auth(s3.endpoint, b"0")
    for key, body in zip(record.files, fetched, strict=True):
        assert body == client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert json.loads(fetched[-1])["audience"] == "everyone"


def test_an_event_export_emails_a_link_to_each_file(
    sample: Store, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    import pyarrow as pa

    from engine.store import Source

    configure(sample, smtp_server)
    sample.append("web", [pa.record_batch({"id": ["1", "2"]})], source=Source("f", "e"), job="x")
    text = (
        'name = "events"\ntype = "event-export"\n'
        f'bucket = "{tmp_path / "out"}"\nemail_to = "a@example.com"\n'
    )
    record = jobs.run(sample, jobs.load(text, "events.toml"))
    assert not record.failed, record.error
    assert record.note == "emailed links to a@example.com"
    (message,) = smtp_server.received
    assert message["Subject"] == "lakeport: 2 events exported (job 'events')"
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert "lakeport exported the events of web (job 'events'): 2 events in 1 file," in (
        body.decode()
    )
    links = [line.strip() for line in body.decode().splitlines() if line.startswith("  file:")]
    assert record.files is not None
    assert len(links) == len(record.files) == 2


def test_a_refused_login_fails_the_run_and_keeps_the_files(
    sample: Store, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    wrong = "wrong-password-77"
    configure(sample, smtp_server, password=wrong)
    job = jobs.load(job_toml(bucket=str(tmp_path / "out"), email_to="a@example.com"), "job.toml")
    record = jobs.run(sample, job)
    assert record.failed
    error = str(record.error)
    assert "the export is complete" in error
    assert f"refused the login of '{USER}'" in error
    assert wrong not in error
    assert smtp_server.received == []
    assert len(list((tmp_path / "out").iterdir())) == 2  # the file and its manifest


def test_a_certificate_from_an_unknown_ca_is_refused(
    sample: Store, smtp_server: SmtpServer
) -> None:
    server = mail.SmtpServer(host=smtp_server.host, port=smtp_server.port, timeout=5)
    with pytest.raises(mail.MailError, match=r"TLS handshake failed.*--ca-file"):
        mail.send(server, ["a@example.com"], "s", "b")


def test_no_smtp_server_is_a_clear_error(sample: Store, tmp_path: Path) -> None:
    job = jobs.load(job_toml(bucket=str(tmp_path / "out"), email_to="a@example.com"), "job.toml")
    record = jobs.run(sample, job)
    assert record.failed
    assert "no SMTP server is set for emails: set one with `lakeport smtp set" in str(record.error)
    assert not (tmp_path / "out").exists()  # found out before anything was written


def test_the_smtp_commands(store: Store, smtp_server: SmtpServer, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--store", str(store.path)]
    secret = tmp_path / "password.txt"
    secret.write_text(PASSWORD + "\n")
    result = runner.invoke(
        cli,
        [
            *base,
            "smtp",
            "set",
            "--host",
            smtp_server.host,
            "--port",
            str(smtp_server.port),
            "--user",
            USER,
            "--password-file",
            str(secret),
            "--ca-file",
            str(smtp_server.ca_file),
        ],
    )
    assert result.exit_code == 0, result.output
    shown = runner.invoke(cli, [*base, "smtp", "show", "-o", "json"])
    assert json.loads(shown.output)["password"] == "stored"
    assert PASSWORD not in shown.output
    assert PASSWORD not in (store.path / "state.db").read_bytes().decode("latin-1")
    sent = runner.invoke(cli, [*base, "smtp", "test", "ops@example.com"])
    assert sent.exit_code == 0, sent.output
    assert smtp_server.recipients == [["ops@example.com"]]
    assert runner.invoke(cli, [*base, "smtp", "remove"]).exit_code == 0
    assert json.loads((store.path / "secrets" / "secrets.json").read_text()) == {}
    missing = runner.invoke(cli, [*base, "smtp", "show"])
    assert missing.exit_code == 1
    assert "no SMTP server is set" in missing.output
