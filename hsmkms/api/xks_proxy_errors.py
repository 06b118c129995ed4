"""XKS proxy errors on the wire: `{"errorName": ..., "errorMessage": ...}` with the
XKS Proxy API specification's HTTP statuses.

Operations raise hsmkms's KMS errors (one class per meaning); this is the one place
that names them as the XKS specification does.
"""

from __future__ import annotations

import json

from hsmkms.api.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from hsmkms.errors import (
    AccessDeniedException,
    DependencyTimeoutException,
    DisabledException,
    IncorrectKeyException,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    KMSError,
    KMSInvalidStateException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.policy.model import MalformedPolicyDocumentException


class InvalidUriPathException(KMSError):
    code = "InvalidUriPathException"
    status = 404


class ThrottlingException(KMSError):
    code = "ThrottlingException"
    status = 429


class MethodNotAllowed(KMSError):
    """A GET (or anything but POST) on an XKS URI: the specification wants a 405."""

    code = "ValidationException"
    status = 405


_AUTHENTICATION = (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
# (hsmkms error classes, XKS status, XKS errorName); the first match wins.
_NAMES: tuple[tuple[tuple[type[KMSError], ...], int, str], ...] = (
    ((InvalidUriPathException, ThrottlingException, MethodNotAllowed), 0, ""),
    ((ValidationException, MalformedPolicyDocumentException), 400, "ValidationException"),
    ((DisabledException, KMSInvalidStateException), 400, "InvalidStateException"),
    ((InvalidCiphertextException, IncorrectKeyException), 400, "InvalidCiphertextException"),
    ((InvalidKeyUsageException,), 400, "InvalidKeyUsageException"),
    (_AUTHENTICATION, 401, "AuthenticationFailedException"),
    ((AccessDeniedException,), 403, "AccessDeniedException"),
    ((NotFoundException,), 404, "KeyNotFoundException"),
    ((UnsupportedOperationException,), 501, "UnsupportedOperationException"),
    ((DependencyTimeoutException,), 503, "DependencyTimeoutException"),
)


def _printable(message: str) -> str:
    """The specification: under 512 characters, printable ASCII only."""
    return "".join(c if " " <= c <= "~" else "?" for c in message)[:511]


def xks_error(error: KMSError) -> tuple[int, str, str]:
    """(HTTP status, errorName, errorMessage) of an error, as the XKS API names it."""
    for classes, status, name in _NAMES:
        if isinstance(error, classes):
            return (status or error.status), (name or error.code), _printable(error.message)
    # Token faults and anything unexpected: the backing key manager failed.
    return 500, "InternalException", _printable(error.message or "Internal error.")


def xks_names(error: KMSError) -> tuple[str, str]:
    """(errorName, errorMessage), as the caller is told and the audit record says."""
    _, name, message = xks_error(error)
    return name, message


def error_json(name: str, message: str) -> bytes:
    body = {"errorName": name}
    if message:
        body["errorMessage"] = message
    return json.dumps(body).encode()
