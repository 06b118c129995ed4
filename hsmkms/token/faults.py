"""The one mapping from PKCS#11 errors to hsmkms errors."""

from __future__ import annotations

from pkcs11 import exceptions as p11

from hsmkms.errors import (
    InvalidCiphertextException,
    KeyUnavailableException,
    KMSError,
    KMSInternalException,
    KMSInvalidStateException,
    UnsupportedOperationException,
)

# Faults after which a fresh session may succeed: the session or device went away.
TRANSIENT: tuple[type[Exception], ...] = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.UserNotLoggedIn,
)


class MaterialMissing(KMSInvalidStateException):
    """A key-material object the metadata names is not in the token: the key cannot be
    used (AWS's answer for a KMS key whose material is unusable), never a server fault."""


class TokenNotFound(KMSInternalException):
    """The PKCS#11 module cannot be loaded, or has no token with the label."""


class TokenLoginFailed(KMSInternalException):
    """The token refused the PIN (`locked`: it refuses every PIN now)."""

    def __init__(self, message: str, *, locked: bool = False) -> None:
        super().__init__(message)
        self.locked = locked


def to_kms_error(exc: Exception) -> KMSError:
    if isinstance(exc, KMSError):
        return exc
    if isinstance(exc, p11.EncryptedDataInvalid | p11.EncryptedDataLenRange):
        return InvalidCiphertextException()
    if isinstance(exc, p11.MechanismInvalid | p11.FunctionNotSupported):
        return UnsupportedOperationException(
            f"The token does not support this operation ({type(exc).__name__})."
        )
    if isinstance(exc, p11.PinIncorrect | p11.PinInvalid | p11.PinLenRange):
        return TokenLoginFailed("The token refused the PIN.")
    if isinstance(exc, p11.PinLocked):
        return TokenLoginFailed("The token's PIN is locked.", locked=True)
    if isinstance(exc, p11.NoSuchKey):
        return MaterialMissing(
            "The key material this request needs is not in the token; the KMS key is "
            "unusable until it is restored (`hsmkms maintain` marks it Unavailable)."
        )
    if isinstance(exc, TRANSIENT):
        return KeyUnavailableException("The token is not reachable.")
    # Never leak a message from the module: name the fault only.
    return KMSInternalException(f"Token error: {type(exc).__name__}")
