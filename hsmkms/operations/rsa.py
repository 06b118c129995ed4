"""RSA encryption (OAEP inside the token), used by Encrypt, Decrypt and ReEncrypt."""

from __future__ import annotations

from hsmkms.errors import (
    InvalidKeyUsageException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.keys import lifecycle
from hsmkms.keys.lifecycle import Use
from hsmkms.keys.metadata import algorithms
from hsmkms.keys.resolved import Resolved
from hsmkms.keys.specs import (
    RSA_ENCRYPTION,
    SPECS,
    oaep_plaintext_limit,
)
from hsmkms.operations.checks import (
    usage_error,
)
from hsmkms.operations.context import OperationContext
from hsmkms.store.model import (
    KeyRecord,
    KeyUsage,
)


def rsa_hash(record: KeyRecord, algorithm: str | None) -> str:
    supported = algorithms(record).get("EncryptionAlgorithms", [])
    if algorithm is None or algorithm not in RSA_ENCRYPTION:
        raise InvalidKeyUsageException(
            f"The encryption algorithm {algorithm or 'SYMMETRIC_DEFAULT'} is not compatible "
            f"with {record.arn}; use one of {', '.join(supported)}."
        )
    if algorithm not in supported:
        raise UnsupportedOperationException(
            f"The token cannot do {algorithm} (CKM_RSA_PKCS_OAEP with "
            f"{RSA_ENCRYPTION[algorithm]}); this key supports {', '.join(supported)}."
        )
    return RSA_ENCRYPTION[algorithm]


def rsa_checks(key: Resolved, algorithm: str | None, context: object, operation: str) -> str:
    """State, usage and algorithm checks shared by RSA encryption and decryption;
    returns the OAEP hash."""
    record = key.record
    lifecycle.require(record, Use.CRYPTO)
    if record.key_usage is not KeyUsage.ENCRYPT_DECRYPT:
        raise usage_error(record, operation)
    if context:
        raise ValidationException("EncryptionContext is not supported with asymmetric keys.")
    return rsa_hash(record, algorithm)


def rsa_encrypt(
    ctx: OperationContext, key: Resolved, plaintext: bytes, algorithm: str | None, context: object
) -> bytes:
    record = key.record
    hash_name = rsa_checks(key, algorithm, context, "Encrypt")
    limit = oaep_plaintext_limit(SPECS[record.key_spec].rsa_bits, hash_name)
    if len(plaintext) > limit:
        raise ValidationException(
            f"Algorithm {algorithm} and key spec {record.key_spec.value} cannot encrypt data "
            f"larger than {limit} bytes."
        )
    return ctx.token_for(key.record).rsa_encrypt(key.ref, hash_name, plaintext)


def rsa_decrypt(
    ctx: OperationContext, key: Resolved, ciphertext: bytes, algorithm: str | None, context: object
) -> bytes:
    hash_name = rsa_checks(key, algorithm, context, "Decrypt")
    return ctx.token_for(key.record).rsa_decrypt(key.ref, hash_name, ciphertext)


# -- signatures ------------------------------------------------------------------
