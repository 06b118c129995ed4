"""KMS exceptions: one class per meaning, named and coded as AWS KMS names them.

Every layer raises these; the edges (HTTP, CLI) map them once. `code` is the
`__type` a KMS client sees and `status` the HTTP status AWS uses for it.
"""

from __future__ import annotations

from typing import ClassVar


class KMSError(Exception):
    """Base of every error a KMS client can receive."""

    code: ClassVar[str] = "KMSInternalException"
    status: ClassVar[int] = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _ClientError(KMSError):
    status = 400


class NotFoundException(_ClientError):
    code = "NotFoundException"


class DisabledException(_ClientError):
    code = "DisabledException"


class KMSInvalidStateException(_ClientError):
    code = "KMSInvalidStateException"


class DeploymentMismatch(KMSInvalidStateException):
    """The database belongs to another token than the configured one: hsmkms refuses to
    use the two together (hsmkms/binding.py)."""


class InvalidCiphertextException(_ClientError):
    code = "InvalidCiphertextException"


class IncorrectKeyException(_ClientError):
    code = "IncorrectKeyException"


class IncorrectKeyMaterialException(_ClientError):
    """Imported material is invalid for the key, or differs from what it had before."""

    code = "IncorrectKeyMaterialException"


class ExpiredImportTokenException(_ClientError):
    """The import token (and its wrapping key) from GetParametersForImport expired."""

    code = "ExpiredImportTokenException"


class InvalidImportTokenException(_ClientError):
    """The import token is unknown, used up, or was issued for another key."""

    code = "InvalidImportTokenException"


class InvalidKeyUsageException(_ClientError):
    code = "InvalidKeyUsageException"


class ValidationException(_ClientError):
    code = "ValidationException"


class MalformedPublicKeyException(ValidationException):
    """DeriveSharedSecret's PublicKey is not a DER-encoded public key (AWS sends it with
    no message; the text here is for the audit trail, the CLI and the library)."""


class AlreadyExistsException(_ClientError):
    code = "AlreadyExistsException"


class InvalidAliasNameException(_ClientError):
    code = "InvalidAliasNameException"


class InvalidArnException(_ClientError):
    code = "InvalidArnException"


class InvalidMarkerException(_ClientError):
    code = "InvalidMarkerException"


class LimitExceededException(_ClientError):
    code = "LimitExceededException"


# IAM's codes for the same meanings, where the CLI manages principals and access keys in
# IAM's shapes (`hsmkms principal ...`).
class NoSuchEntityException(NotFoundException):
    code = "NoSuchEntity"


class IamLimitExceededException(LimitExceededException):
    code = "LimitExceeded"


class UnsupportedOperationException(_ClientError):
    code = "UnsupportedOperationException"


class KeyCannotRotateException(UnsupportedOperationException):
    """RotateKeyOnDemand of a key whose spec or origin does not rotate (AWS sends it with
    no message; the text here is for the audit trail, the CLI and the library)."""


class KMSInvalidSignatureException(_ClientError):
    code = "KMSInvalidSignatureException"


class KMSInvalidMacException(_ClientError):
    code = "KMSInvalidMacException"


class AccessDeniedException(_ClientError):
    code = "AccessDeniedException"


class CustomKeyStoreNotFoundException(_ClientError):
    code = "CustomKeyStoreNotFoundException"


class CustomKeyStoreNameInUseException(_ClientError):
    code = "CustomKeyStoreNameInUseException"


class CustomKeyStoreHasCMKsException(_ClientError):
    code = "CustomKeyStoreHasCMKsException"


class CustomKeyStoreInvalidStateException(_ClientError):
    code = "CustomKeyStoreInvalidStateException"


class CloudHsmClusterNotFoundException(_ClientError):
    code = "CloudHsmClusterNotFoundException"


class CloudHsmClusterInUseException(_ClientError):
    code = "CloudHsmClusterInUseException"


class IncorrectTrustAnchorException(_ClientError):
    code = "IncorrectTrustAnchorException"


class NotAuthorizedException(_ClientError):
    code = "NotAuthorizedException"


class DryRunOperationException(KMSError):
    """The call would have succeeded; DryRun asked KMS not to make it (HTTP 412:
    https://docs.aws.amazon.com/kms/latest/APIReference/API_Encrypt.html#API_Encrypt_Errors)."""

    code = "DryRunOperationException"
    status = 412


class DryRunOperationAt400(DryRunOperationException):
    """The same answer with HTTP 400: what AWS KMS sends for GenerateDataKeyPair and
    GenerateDataKeyPairWithoutPlaintext (recorded), though its API Reference says 412."""

    status = 400


class ConflictException(_ClientError):
    """RotateKeyOnDemand while another rotation of the key is in progress."""

    code = "ConflictException"


class ThrottlingException(_ClientError):
    """A caller went over its request quota (AWS: HTTP 400, retryable)."""

    code = "ThrottlingException"


class KMSInternalException(KMSError):
    """A real fault on our side (token or database), never bad input."""

    code = "KMSInternalException"
    status = 500


class AuditTrailConflictException(KMSInternalException):
    """The data dir does not hold the audit trail the token knows (deleted, replaced,
    swapped, retired, or another deployment's): nothing writes a trail until an operator
    runs `hsmkms audit new-trail --reason ...`. No API client sees it: no server starts."""


class KeyUnavailableException(KMSError):
    code = "KeyUnavailableException"
    status = 500


class DependencyTimeoutException(KMSError):
    code = "DependencyTimeoutException"
    status = 503


# -- external key stores (EXTERNAL_KEY_STORE): AWS's names, all 400s ---------------------


class XksProxyUriUnreachableException(_ClientError):
    code = "XksProxyUriUnreachableException"


class XksProxyUriInUseException(_ClientError):
    code = "XksProxyUriInUseException"


class XksProxyUriEndpointInUseException(_ClientError):
    code = "XksProxyUriEndpointInUseException"


class XksProxyIncorrectAuthenticationCredentialException(_ClientError):
    code = "XksProxyIncorrectAuthenticationCredentialException"


class XksProxyInvalidResponseException(_ClientError):
    code = "XksProxyInvalidResponseException"


class XksProxyInvalidConfigurationException(_ClientError):
    code = "XksProxyInvalidConfigurationException"


class XksKeyNotFoundException(_ClientError):
    code = "XksKeyNotFoundException"


class XksKeyInvalidConfigurationException(_ClientError):
    code = "XksKeyInvalidConfigurationException"


class XksKeyAlreadyInUseException(_ClientError):
    code = "XksKeyAlreadyInUseException"


def validation_error(
    field: str, value: object, constraint: str, *, sensitive: bool = False
) -> ValidationException:
    """A ValidationException worded as AWS words its request-constraint failures; the
    value of a member the model marks sensitive (Plaintext, Message) is left out."""
    shown = "" if sensitive else f" '{value}'"
    return ValidationException(
        f"1 validation error detected: Value{shown} at '{field}' failed to satisfy "
        f"constraint: {constraint}"
    )
