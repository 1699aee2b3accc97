"""Authorizations: how lakeport gets into a customer's bucket.

Three kinds, each a frozen dataclass whose secrets are `Secret` values:

- `AwsKeys`: an access key id and secret key, with an optional session token.
- `DefaultChain`: whatever the AWS default credential chain finds (environment, profile, instance
  role).
- `DelegatedRole`: an IAM role in the customer's account, assumed through STS with an external id
  that lakeport generates per authorization (the confused-deputy defence).

Every kind takes an optional region and endpoint URL (S3-compatible stores, the test server),
and optional OpenPGP keys (engine.pgp): public keys that its exports are encrypted to, and a
private key (with its passphrase) that its encrypted imports are decrypted with. The keys are
secrets (kept in the secrets file); their fingerprints are settings, pinned: a stored key that is
not the one added is refused at use.
"""

from __future__ import annotations

import base64
import json
import re
import secrets as _random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlparse

from engine.errors import ConfigError
from engine.secrets import Secret

if TYPE_CHECKING:
    from engine.secrets import SecretsFile
    from engine.state import StateDB

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


def check_name(name: str) -> str:
    """An authorization name: letters, digits, `_ . -`, at most 64 characters."""
    if not _NAME.match(name):
        raise ConfigError(
            f"'{name}' is not a valid authorization name: use 1-64 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    return name


def check_endpoint_url(url: str | None) -> str | None:
    if url is None:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            f"endpoint URL '{url}' is not an http(s) URL: give one like https://s3.example.com"
        )
    return url


@dataclass(frozen=True, kw_only=True)
class Authorization:
    """What every kind has: a name, and where the S3 endpoint is."""

    kind: ClassVar[str]
    name: str
    region: str | None = None
    endpoint_url: str | None = None
    pgp_recipients: tuple[str, ...] = ()
    """The fingerprints of the public keys exports are encrypted to (none: not encrypted)."""
    pgp_public_keys: Secret | None = field(default=None, repr=False)
    """Their key files (`public_key_files`)."""
    pgp_decrypts_with: str | None = None
    """The fingerprint of the private key that decrypts encrypted imports."""
    pgp_private_key: Secret | None = field(default=None, repr=False)
    pgp_passphrase: Secret | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_name(self.name)
        check_endpoint_url(self.endpoint_url)
        object.__setattr__(self, "pgp_recipients", tuple(self.pgp_recipients))
        if bool(self.pgp_recipients) != (self.pgp_public_keys is not None):
            raise ConfigError(f"authorization '{self.name}': PGP recipients need their keys")
        if (self.pgp_decrypts_with is None) != (self.pgp_private_key is None):
            raise ConfigError(f"authorization '{self.name}': a PGP private key needs its id")

    def secrets(self) -> dict[str, Secret]:
        """The secret fields, by name."""
        found = {
            "pgp_public_keys": self.pgp_public_keys,
            "pgp_private_key": self.pgp_private_key,
            "pgp_passphrase": self.pgp_passphrase,
        }
        return {key: secret for key, secret in found.items() if secret is not None}

    def settings(self) -> dict[str, Any]:
        """The fields that are not secret, as stored and shown."""
        shown: dict[str, Any] = {"region": self.region, "endpoint_url": self.endpoint_url}
        if self.pgp_recipients:
            shown["pgp_recipients"] = list(self.pgp_recipients)
        if self.pgp_decrypts_with is not None:
            shown["pgp_decrypts_with"] = self.pgp_decrypts_with
        return shown

    @property
    def encrypts(self) -> bool:
        """Whether exports under this authorization are encrypted."""
        return bool(self.pgp_recipients)

    def public_key_files(self) -> list[bytes]:
        """The recipients' key files, as they were added."""
        return [] if self.pgp_public_keys is None else unpack_keys(self.pgp_public_keys)

    def private_key_file(self) -> bytes | None:
        """The private key file, as it was added (None: encrypted imports cannot be read)."""
        return None if self.pgp_private_key is None else unpack_keys(self.pgp_private_key)[0]

    def describe(self) -> dict[str, Any]:
        """Everything about the authorization that can be shown: secrets by reference only."""
        shown: dict[str, Any] = {"name": self.name, "kind": self.kind, **self.settings()}
        shown.update({key: secret.describe() for key, secret in self.secrets().items()})
        return shown


@dataclass(frozen=True, kw_only=True)
class AwsKeys(Authorization):
    """An access key id and secret key, with an optional session token."""

    kind: ClassVar[str] = "aws-keys"
    access_key_id: str
    secret_key: Secret = field(repr=False)
    session_token: Secret | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not re.fullmatch(r"[A-Za-z0-9]{8,128}", self.access_key_id):
            raise ConfigError(
                f"authorization '{self.name}': access key id '{self.access_key_id}' is not an "
                "AWS access key id (8-128 letters and digits, like AKIA...)"
            )

    def secrets(self) -> dict[str, Secret]:
        found = {"secret_key": self.secret_key, **super().secrets()}
        if self.session_token is not None:
            found["session_token"] = self.session_token
        return found

    def settings(self) -> dict[str, Any]:
        return {"access_key_id": self.access_key_id, **super().settings()}


@dataclass(frozen=True, kw_only=True)
class DefaultChain(Authorization):
    """The AWS default credential chain: environment, shared profile, instance or task role."""

    kind: ClassVar[str] = "default-chain"


def new_external_id() -> str:
    """A fresh external id: unguessable, so no other customer can name this role through us."""
    return "lakeport-" + _random.token_hex(16)


@dataclass(frozen=True, kw_only=True)
class DelegatedRole(Authorization):
    """An IAM role in the bucket owner's account, assumed through STS with an external id."""

    kind: ClassVar[str] = "delegated-role"
    role_arn: str
    external_id: str = field(default_factory=new_external_id)
    session_seconds: int = 3600

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _ROLE_ARN.match(self.role_arn):
            raise ConfigError(
                f"authorization '{self.name}': '{self.role_arn}' is not an IAM role ARN "
                "(arn:aws:iam::123456789012:role/NAME)"
            )
        if not re.fullmatch(r"[\w+=,.@:/-]{2,1224}", self.external_id):
            raise ConfigError(
                f"authorization '{self.name}': the external id must be 2-1224 characters of "
                "letters, digits and + = , . @ : / - _"
            )
        if not 900 <= self.session_seconds <= 43200:
            raise ConfigError(
                f"authorization '{self.name}': session_seconds must be 900-43200 (STS limits)"
            )

    def settings(self) -> dict[str, Any]:
        return {
            "role_arn": self.role_arn,
            "external_id": self.external_id,
            "session_seconds": self.session_seconds,
            **super().settings(),
        }


def pack_keys(files: list[bytes]) -> Secret:
    """Key files (armored or binary) as one secret value."""
    return Secret(json.dumps([base64.b64encode(data).decode() for data in files]))


def unpack_keys(secret: Secret) -> list[bytes]:
    return [base64.b64decode(text) for text in json.loads(secret.reveal())]


KINDS: dict[str, type[Authorization]] = {
    kind.kind: kind for kind in (AwsKeys, DefaultChain, DelegatedRole)
}


def from_stored(
    name: str, kind: str, settings: dict[str, Any], secrets: dict[str, Secret]
) -> Authorization:
    """Rebuild an authorization from what `state.db` holds."""
    cls = KINDS.get(kind)
    if cls is None:
        raise ConfigError(
            f"authorization '{name}' has kind '{kind}', which this lakeport does not know: "
            "upgrade lakeport or remove and add the authorization again"
        )
    fields: dict[str, Any] = {**settings, **secrets}
    return cls(name=name, **fields)


def bucket_policy(bucket: str, *, write: bool = True) -> dict[str, Any]:
    """The IAM permissions lakeport needs on a bucket: reading for imports, writing for exports."""
    objects = ["s3:GetObject"]
    on_bucket = ["s3:ListBucket", "s3:GetBucketLocation"]
    if write:
        objects += ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
        on_bucket.append("s3:ListBucketMultipartUploads")  # to find a dead run's uploads
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": on_bucket,
                "Resource": f"arn:aws:s3:::{bucket}",
            },
            {"Effect": "Allow", "Action": objects, "Resource": f"arn:aws:s3:::{bucket}/*"},
        ],
    }


def trust_policy(principal: str, external_id: str) -> dict[str, Any]:
    """The trust policy of a delegated role: only `principal`, and only with the external id."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": principal},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }
        ],
    }


class Authorizations:
    """The authorizations of a store: their settings in `state.db`, their secrets in the
    secrets file (or named environment variables)."""

    def __init__(self, state: StateDB, secrets: SecretsFile) -> None:
        self.state = state
        self.secrets = secrets
        self.in_use: dict[str, str] = {}
        """Authorizations that cannot be removed, with what uses them."""

    def add(self, auth: Authorization) -> Authorization:
        """Save an authorization; secrets typed in are moved to the secrets file first."""
        check_name(auth.name)
        if self.state.get_authorization(auth.name) is not None:
            raise ConfigError(
                f"an authorization named '{auth.name}' exists already: remove it first "
                f"(`lakeport auth remove {auth.name}`) or choose another name"
            )
        refs: dict[str, str] = {}
        stored: dict[str, Secret] = {}
        try:
            for field_name, secret in auth.secrets().items():
                kept = secret if secret.ref is not None else self.secrets.put(secret)
                refs[field_name] = kept.ref or ""
                stored[field_name] = kept
            self.state.put_authorization(auth.name, auth.kind, auth.settings(), refs)
        except BaseException:
            for ref in refs.values():
                self.secrets.delete(ref)
            raise
        return from_stored(auth.name, auth.kind, auth.settings(), stored)

    def get(self, name: str) -> Authorization:
        row = self.state.get_authorization(name)
        if row is None:
            known = ", ".join(a.name for a in self.state.list_authorizations()) or "none yet"
            raise ConfigError(
                f"no authorization named '{name}' in {self.state.path.parent} (known: {known}): "
                "add it with `lakeport auth add`"
            )
        secrets = {key: self.secrets.load(ref) for key, ref in row.secret_refs.items()}
        return from_stored(row.name, row.kind, row.settings, secrets)

    def list(self) -> list[Authorization]:
        return [self.get(row.name) for row in self.state.list_authorizations()]

    def remove(self, name: str) -> None:
        """Forget an authorization and delete its stored secrets."""
        row = self.state.get_authorization(name)
        if row is None:
            raise ConfigError(f"no authorization named '{name}' in {self.state.path.parent}")
        if name in self.in_use:
            raise ConfigError(
                f"authorization '{name}' reaches {self.in_use[name]}: it cannot be removed "
                "while the store uses it"
            )
        self.state.delete_authorization(name)
        for ref in row.secret_refs.values():
            self.secrets.delete(ref)
