"""How XKS proxy failures become KMS errors: the "KMS Considerations" table of the XKS
Proxy API specification. Management operations (Create/UpdateCustomKeyStore) get the
XksProxy* exceptions, ConnectCustomKeyStore records a ConnectionErrorCode, CreateKey
gets CustomKeyStoreInvalidState / XksKey*, and cryptographic operations get
KMSInvalidStateException with the table's message (never the proxy's own errorMessage).
"""

from __future__ import annotations

from hsmkms.errors import (
    CustomKeyStoreInvalidStateException,
    KMSError,
    KMSInvalidStateException,
    XksKeyInvalidConfigurationException,
    XksKeyNotFoundException,
    XksProxyIncorrectAuthenticationCredentialException,
    XksProxyInvalidConfigurationException,
    XksProxyInvalidResponseException,
    XksProxyUriUnreachableException,
)
from hsmkms.keystores import external_client
from hsmkms.keystores.external_client import XksProxyFailure

# reason -> (management exception, ConnectionErrorCode, CreateKey exception, message)
_UNREACHABLE = XksProxyUriUnreachableException
_INVALID = XksProxyInvalidResponseException
_STORE = CustomKeyStoreInvalidStateException
_TABLE: dict[str, tuple[type[KMSError], str, type[KMSError], str]] = {
    "ValidationException": (
        _INVALID,
        "XKS_PROXY_INVALID_RESPONSE",
        _STORE,
        "AWS KMS cannot interpret the response from the external key store proxy.",
    ),
    "InvalidStateException": (
        XksProxyInvalidConfigurationException,
        "XKS_PROXY_INVALID_CONFIGURATION",
        XksKeyInvalidConfigurationException,
        "The external key associated with this KMS key in an external key store is not "
        "enabled in the external key manager.",
    ),
    "InvalidCiphertextException": (
        _INVALID,
        "XKS_PROXY_INVALID_RESPONSE",
        _STORE,
        "The external key store proxy rejected the request because the specified "
        "ciphertext or encryption context is corrupted, missing, or otherwise invalid.",
    ),
    external_client.BAD_CIPHERTEXT: (
        _INVALID,
        "XKS_PROXY_INVALID_RESPONSE",
        _STORE,
        "The ciphertext that the external key store proxy returned is corrupted, missing, "
        "or otherwise invalid.",
    ),
    "InvalidKeyUsageException": (
        _INVALID,
        "XKS_PROXY_INVALID_RESPONSE",
        XksKeyInvalidConfigurationException,
        "The external key associated with this KMS key in an external key store does not "
        "support the requested operation.",
    ),
    "AuthenticationFailedException": (
        XksProxyIncorrectAuthenticationCredentialException,
        "INVALID_CREDENTIALS",
        _STORE,
        "The external key store proxy rejected the request because it could not "
        "authenticate AWS KMS. Verify the XKS proxy authentication credential.",
    ),
    "AccessDeniedException": (
        XksProxyInvalidConfigurationException,
        "XKS_PROXY_ACCESS_DENIED",
        KMSInvalidStateException,
        "The external key store proxy denied access to the operation.",
    ),
    "KeyNotFoundException": (
        _INVALID,
        "XKS_PROXY_INVALID_RESPONSE",
        XksKeyNotFoundException,
        "The external key associated with this KMS key in an external key store was not "
        "found in its external key manager.",
    ),
    "InvalidUriPathException": (
        XksProxyInvalidConfigurationException,
        "XKS_PROXY_INVALID_CONFIGURATION",
        _STORE,
        "The external key store proxy rejected the request because of an invalid URI path.",
    ),
    "UnsupportedOperationException": (
        _INVALID,
        "XKS_PROXY_INVALID_RESPONSE",
        _STORE,
        "The external key store proxy rejected the request because it does not support "
        "the requested operation.",
    ),
    "DependencyTimeoutException": (
        _UNREACHABLE,
        "XKS_PROXY_TIMED_OUT",
        _STORE,
        "The external key store proxy did not respond to the request in the time allotted.",
    ),
    "ThrottlingException": (
        _UNREACHABLE,
        "XKS_PROXY_NOT_REACHABLE",
        _STORE,
        "The external key store proxy rejected the request due to a very high request rate.",
    ),
    "InternalException": (
        _INVALID,
        "XKS_PROXY_INVALID_RESPONSE",
        _STORE,
        "The external key store proxy rejected the request because it cannot communicate "
        "with the external key manager.",
    ),
    external_client.UNREACHABLE: (
        _UNREACHABLE,
        "XKS_PROXY_NOT_REACHABLE",
        _STORE,
        "AWS KMS cannot communicate with the external key store proxy.",
    ),
    external_client.TLS: (
        _UNREACHABLE,
        "XKS_PROXY_INVALID_TLS_CONFIGURATION",
        _STORE,
        "AWS KMS cannot establish a TLS connection to the external key store proxy.",
    ),
    external_client.TIMED_OUT: (
        _UNREACHABLE,
        "XKS_PROXY_TIMED_OUT",
        _STORE,
        "AWS KMS rejected the request because the external key store proxy did not "
        "respond in time.",
    ),
    external_client.ALL_UNAVAILABLE: (
        _UNREACHABLE,
        "XKS_PROXY_NOT_REACHABLE",
        _STORE,
        "The external key store proxy reports every external key manager unavailable.",
    ),
    external_client.MALFORMED: (
        _INVALID,
        "XKS_PROXY_INVALID_RESPONSE",
        _STORE,
        "AWS KMS cannot interpret the response from the external key store proxy.",
    ),
}


def _row(failure: XksProxyFailure) -> tuple[type[KMSError], str, type[KMSError], str]:
    return _TABLE.get(failure.reason, _TABLE[external_client.MALFORMED])


def management_error(failure: XksProxyFailure) -> KMSError:
    kind, _, _, message = _row(failure)
    return kind(message)


def connection_error_code(failure: XksProxyFailure) -> str:
    return _row(failure)[1]


def create_key_error(failure: XksProxyFailure) -> KMSError:
    _, _, kind, message = _row(failure)
    return kind(message)


def crypto_error(failure: XksProxyFailure) -> KMSError:
    """Cryptographic operations return KMSInvalidStateException for every proxy failure."""
    return KMSInvalidStateException(_row(failure)[3])
