"""KMS errors on the wire: `{"__type": ..., "message": ...}` with KMS's statuses."""

from __future__ import annotations

from hsmkms.errors import (
    InvalidCiphertextException,
    KeyCannotRotateException,
    KMSError,
    KMSInvalidMacException,
    KMSInvalidSignatureException,
    MalformedPublicKeyException,
)


class UnknownOperationException(KMSError):
    code = "UnknownOperationException"
    status = 400


class MissingAuthenticationTokenException(KMSError):
    code = "MissingAuthenticationTokenException"
    status = 400


class IncompleteSignatureException(KMSError):
    code = "IncompleteSignatureException"
    status = 400


class InvalidSignatureException(KMSError):
    code = "InvalidSignatureException"
    status = 400


class UnrecognizedClientException(KMSError):
    code = "UnrecognizedClientException"
    status = 400


class RequestEntityTooLargeException(KMSError):
    """What AWS's JSON front end answers for an oversized body (HTTP 413, e.g.
    "Request must be smaller than 6291456 bytes for the InvokeFunction operation")."""

    code = "RequestEntityTooLargeException"
    status = 413


class RequestHeaderFieldsTooLarge(KMSError):
    """Too many headers, or too many header bytes (HTTP 431), refused as they arrive."""

    code = "RequestHeaderFieldsTooLarge"
    status = 431


class RequestTimeoutException(KMSError):
    """A client too slow with its headers (HTTP 408) or its body (the connection is
    just closed then)."""

    code = "RequestTimeoutException"
    status = 408


class BadRequestException(KMSError):
    """Bytes that are no HTTP request: the parser's refusal (uvicorn's plain 400)."""

    code = "BadRequestException"
    status = 400


class ServiceUnavailableException(KMSError):
    """A connection over the server's cap, or over one client's share of it (HTTP 503)."""

    code = "ServiceUnavailableException"
    status = 503


# The errors AWS KMS sends with no `message` member at all, decided from its recorded
# responses: a `"message": ""` instead makes some SDKs report "UnknownError". The
# exception keeps its text for the audit trail, the CLI and the library.
SENT_WITHOUT_MESSAGE: tuple[type[KMSError], ...] = (
    InvalidCiphertextException,  # Decrypt, ReEncrypt: any blob that does not decrypt
    KMSInvalidSignatureException,  # Verify
    KMSInvalidMacException,  # VerifyMac
    KeyCannotRotateException,  # RotateKeyOnDemand of an asymmetric or HMAC key
    MalformedPublicKeyException,  # DeriveSharedSecret (a ValidationException)
)


def error_body(error: KMSError) -> dict[str, str]:
    """The KMS JSON error body; without `message` where AWS sends none."""
    if isinstance(error, SENT_WITHOUT_MESSAGE):
        return {"__type": error.code}
    return {"__type": error.code, "message": error.message}
