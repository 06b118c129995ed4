"""KMS errors on the wire: `{"__type": ..., "message": ...}` with KMS's statuses."""

from __future__ import annotations

from hsmkms.errors import KMSError


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


def error_body(error: KMSError) -> dict[str, str]:
    return {"__type": error.code, "message": error.message}
