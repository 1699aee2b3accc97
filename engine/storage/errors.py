"""AWS and OS errors, translated at the storage boundary into lakeport errors that name the
bucket, key or authorization and say what to change, with the original kept as `__cause__`."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from engine.auth import Authorization, DelegatedRole
from engine.errors import (
    AccessDenied,
    EndpointUnreachable,
    ExpiredCredentials,
    InvalidCredentials,
    LakeportError,
    NoSuchBucket,
    NoSuchKey,
    SourceChanged,
    StorageError,
)
from engine.storage.locations import Location

_INVALID_KEYS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
    "InvalidToken",
    "IncompleteSignature",
}
_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}
_PERMISSIONS = {
    "read": "s3:GetObject",
    "list": "s3:ListBucket",
    "write": "s3:PutObject and s3:AbortMultipartUpload",
    "delete": "s3:DeleteObject",
    "list the unfinished uploads of": "s3:ListBucketMultipartUploads",
    "abort an unfinished upload of": "s3:AbortMultipartUpload",
}
"""The permission each action needs, for the advice of an access-denied error."""


@contextmanager
def _translating(
    auth: Authorization | None,
    action: str,
    *,
    location: Location | None = None,
    listing_buckets: bool = False,
) -> Iterator[None]:
    """Turn whatever the storage client raises into a lakeport error, keeping it as the cause."""
    try:
        yield
    except LakeportError:
        raise
    except Exception as exc:  # the one place every client error is seen and named
        error = _translate(exc, auth, action, location, listing_buckets)
        if isinstance(error, AccessDenied) and _without_reason(exc):
            error = _why_refused(auth, action, location) or error
        raise error from exc


def _without_reason(exc: Exception) -> bool:
    """Whether a refusal came without S3's reason: a HEAD request's 403 has no body, so a
    wrong secret key and a missing permission look the same."""
    code, _ = _aws_error(exc)
    return code in ("403", "Forbidden") or (code is None and isinstance(exc, PermissionError))


Asker = Callable[[Authorization, Location], None]
"""Sends S3 a request whose answer has a body, about `location` (it raises what S3 says)."""
_askers: list[Asker] = []


def ask_again_with(asker: Asker) -> None:
    """Let refusals without a reason be asked about with `asker` (engine.storage.s3 gives
    it: the client lives there)."""
    _askers.append(asker)


def _why_refused(
    auth: Authorization | None, action: str, location: Location | None
) -> LakeportError | None:
    """Ask S3 again with a request whose answer has a body (a listing of one key under the
    same name): the error for bad keys if that is what it was, None if it was not."""
    if auth is None or location is None or location.scheme != "s3":
        return None
    for asker in _askers:
        try:
            asker(auth, location)
        except Exception as probe:
            code, _ = _aws_error(probe)
            if code in _INVALID_KEYS or code in _EXPIRED:
                return _translate(probe, auth, action, location, False)
    return None


def _translate(
    exc: Exception,
    auth: Authorization | None,
    action: str,
    location: Location | None,
    listing_buckets: bool,
) -> LakeportError:
    who = f"authorization '{auth.name}'" if auth is not None else "lakeport"
    what = location.url if location is not None else "S3"
    code, message = _aws_error(exc)
    refused = _credential_error(exc, auth, action, who, what, code, message)
    if refused is not None:
        return refused
    failure = _endpoint_failure(exc)
    if failure is not None:
        endpoint = (auth.endpoint_url if auth else None) or "the AWS S3 endpoint"
        return EndpointUnreachable(
            f"cannot reach {endpoint} to {action} {what} ({failure}): check the endpoint URL "
            f"of {who} and the network, then retry"
        )
    if code in ("PreconditionFailed", "412"):
        return SourceChanged(
            f"{what} changed while it was read (it is no longer the version that was listed): "
            "run the job again"
        )
    return _place_error(exc, auth, action, location, listing_buckets, who, what, code, message)


def _credential_error(
    exc: Exception,
    auth: Authorization | None,
    action: str,
    who: str,
    what: str,
    code: str | None,
    message: str,
) -> LakeportError | None:
    """The error when the keys are missing, wrong or expired, or a role cannot be assumed."""
    if _no_credentials(exc):
        return InvalidCredentials(
            f"{who} found no AWS credentials (environment, shared profile or instance role): "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or add an "
            "aws-keys authorization"
        )
    if action == "log in" and isinstance(auth, DelegatedRole) and code is not None:
        return AccessDenied(
            f"{who}: STS refused to let lakeport assume {auth.role_arn} ({code}: {message}): "
            f"the role's trust policy must allow lakeport's principal and require the external "
            f"id {auth.external_id}"
        )
    if code in _INVALID_KEYS:
        reason = (
            "the secret key does not match the access key id"
            if code == "SignatureDoesNotMatch"
            else "the access key id (or session token) is not known to the endpoint"
        )
        return InvalidCredentials(
            f"{who} was refused to {action} {what}: {reason}; add the authorization again "
            "with the right keys (`lakeport auth remove` then `lakeport auth add`)"
        )
    if code in _EXPIRED:
        return ExpiredCredentials(
            f"{who} has an expired session token ({action} {what}): give it a fresh token "
            "(`lakeport auth remove` then `lakeport auth add ... --session-token-env VAR`)"
        )
    return None


def _place_error(
    exc: Exception,
    auth: Authorization | None,
    action: str,
    location: Location | None,
    listing_buckets: bool,
    who: str,
    what: str,
    code: str | None,
    message: str,
) -> LakeportError:
    """The error about the bucket or the object: missing, refused, or something else."""
    bucket = location.bucket if location is not None else ""
    if code == "NoSuchBucket" or (code == "404" and location is not None and not location.key):
        return NoSuchBucket(
            f"bucket '{bucket}' does not exist or is not visible to {who}: check the name "
            "and the region of the authorization"
        )
    if listing_buckets and (code in _DENIED or isinstance(exc, PermissionError)):
        return AccessDenied(
            f"{who} may not list buckets (s3:ListAllMyBuckets): type the bucket name instead, "
            f"e.g. `lakeport ls s3://BUCKET/ --auth {auth.name if auth else 'NAME'}`"
        )
    if code in _DENIED or isinstance(exc, PermissionError):
        needed = _PERMISSIONS.get(action, "s3:ListBucket and s3:GetObject")
        return AccessDenied(
            f"{who} may not {action} {what} (access denied): grant it {needed} on the bucket "
            "(`lakeport auth policy` prints the policy; see the bucket policy in the README)"
        )
    if code in ("NoSuchKey", "404", "NotFound") or isinstance(exc, FileNotFoundError):
        return NoSuchKey(
            f"{what} does not exist: check the path (`lakeport ls` shows what is there)"
        )
    if isinstance(exc, NotADirectoryError):
        return NoSuchKey(f"{what} is not a folder")
    too_long = next(
        (link for link in _chain(exc) if getattr(link, "errno", None) == errno.ENAMETOOLONG), None
    )
    if too_long is not None:
        return NoSuchKey(
            f"{what} cannot exist here: a name in the path is longer than the file system "
            "allows (255 bytes a name): check the path"
        )
    if code is not None:
        return StorageError(f"{who} could not {action} {what}: {code}: {message}")
    return StorageError(f"could not {action} {what}: {type(exc).__name__}: {exc}")


def source_changed(location: Location, what: str) -> SourceChanged:
    """The error of a read that did not get the object that was listed, exactly."""
    return SourceChanged(
        f"{location.url} changed while it was read, or its bytes were cut short on the way "
        f"({what}): nothing of it was kept; run the job again"
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _aws_error(exc: Exception) -> tuple[str | None, str]:
    """The AWS error code and message anywhere in the exception's chain."""
    for link in _chain(exc):
        response = getattr(link, "response", None)
        if isinstance(response, dict) and "Error" in response:
            error = response["Error"]
            return str(error.get("Code", "")), str(error.get("Message", ""))
    return None, ""


def _no_credentials(exc: Exception) -> bool:
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    return any(
        isinstance(link, NoCredentialsError | PartialCredentialsError) for link in _chain(exc)
    )


def _endpoint_failure(exc: Exception) -> str | None:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    for link in _chain(exc):
        if isinstance(link, BotoConnectionError | HTTPClientError):
            return type(link).__name__
        if isinstance(link, ConnectionRefusedError | TimeoutError):
            return type(link).__name__
    return None
