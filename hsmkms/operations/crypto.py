"""Symmetric cryptography: Encrypt, Decrypt, ReEncrypt, GenerateDataKey(WithoutPlaintext),
GenerateRandom. AES-GCM runs in the token; RSA keys take the OAEP path in rsa.py.
"""

from __future__ import annotations

from hsmkms.errors import (
    IncorrectKeyException,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.keys import blob, blobs, context, lifecycle
from hsmkms.keys.lifecycle import Use
from hsmkms.keys.resolved import Resolved
from hsmkms.keystores import external_blob, external_keys
from hsmkms.keystores.records import EXTERNAL, require_connected
from hsmkms.operations.checks import (
    check_bytes,
    check_enum,
    check_range,
    usage_error,
)
from hsmkms.operations.context import OperationContext, Response
from hsmkms.operations.rsa import rsa_decrypt, rsa_encrypt
from hsmkms.store.model import (
    KeyRecord,
    KeySpec,
    KeyUsage,
)
from hsmkms.token import MaterialRef

MAX_PLAINTEXT = 4096
MAX_CIPHERTEXT = 6144
MAX_RANDOM_BYTES = 1024
DATA_KEY_SPECS = {"AES_128": 16, "AES_256": 32}
SYMMETRIC_ALGORITHM = "SYMMETRIC_DEFAULT"


def require_symmetric_encryption(record: KeyRecord, algorithm: str | None, operation: str) -> None:
    if record.key_usage is not KeyUsage.ENCRYPT_DECRYPT:
        raise usage_error(record, operation)
    if algorithm not in (None, SYMMETRIC_ALGORITHM) or (
        record.key_spec is not KeySpec.SYMMETRIC_DEFAULT
    ):
        raise InvalidKeyUsageException(
            f"The encryption algorithm {algorithm or SYMMETRIC_ALGORITHM} is not compatible "
            f"with {record.arn}."
        )


def _encrypt_with(
    ctx: OperationContext,
    key: Resolved,
    plaintext: bytes,
    canonical_context: bytes,
    operation: str = "Encrypt",
) -> bytes:
    if external_keys.is_external(key.record):  # double encryption through the XKS proxy
        return external_keys.encrypt(ctx, key, plaintext, canonical_context, operation)
    if not key.symmetric_ready:
        lifecycle.require(key.record, Use.CRYPTO)
    iv, body = ctx.token_for(key.record).gcm_encrypt(
        key.ref, key.header + canonical_context, plaintext
    )
    return key.header + iv + body


def _decrypt_blob(
    ctx: OperationContext,
    ciphertext: bytes,
    canonical_context: bytes,
    key_id: str | None,
    operation: str = "Decrypt",
) -> tuple[KeyRecord, bytes]:
    parsed = blobs.decode(ciphertext)
    key = ctx.keys.by_uuid(parsed.key_uuid)
    record = key.record
    if key_id is not None and ctx.cached(key_id).record.key_id != record.key_id:
        raise IncorrectKeyException(
            "The key ID in the request does not identify a CMK that can perform this operation."
        )
    if isinstance(parsed, external_blob.XksBlob):
        return record, external_keys.decrypt(ctx, record, parsed, canonical_context, operation)
    if not isinstance(parsed, blob.Blob) or external_keys.is_external(record):
        raise InvalidCiphertextException()
    if not key.symmetric_ready:
        lifecycle.require(record, Use.CRYPTO)
        require_symmetric_encryption(record, None, operation)
    if not 1 <= parsed.version <= record.current_version:
        raise InvalidCiphertextException()
    ref = (
        key.ref if parsed.version == key.ref.version else MaterialRef(record.key_id, parsed.version)
    )
    plaintext = ctx.token_for(record).gcm_decrypt(
        ref, parsed.iv, parsed.header + canonical_context, parsed.body
    )
    return record, plaintext


def _encrypt_any(
    ctx: OperationContext,
    key: Resolved,
    plaintext: bytes,
    encryption_context: object,
    algorithm: str | None,
    operation: str = "Encrypt",
) -> bytes:
    if key.rsa:
        return rsa_encrypt(ctx, key, plaintext, algorithm, encryption_context)
    aad = context.canonical(encryption_context)
    if not key.symmetric_ready or algorithm not in (None, SYMMETRIC_ALGORITHM):
        require_symmetric_encryption(key.record, algorithm, operation)
    return _encrypt_with(ctx, key, plaintext, aad, operation)


def _decrypt_any(
    ctx: OperationContext,
    ciphertext: bytes,
    encryption_context: object,
    key_id: str | None,
    algorithm: str | None,
    operation: str = "Decrypt",
) -> tuple[KeyRecord, bytes, str]:
    if key_id is not None:
        key = ctx.cached(key_id)
        if key.rsa:
            plaintext = rsa_decrypt(ctx, key, ciphertext, algorithm, encryption_context)
            return key.record, plaintext, str(algorithm)
    if algorithm not in (None, SYMMETRIC_ALGORITHM):
        raise InvalidCiphertextException()
    record, plaintext = _decrypt_blob(
        ctx, ciphertext, context.canonical(encryption_context), key_id, operation
    )
    return record, plaintext, SYMMETRIC_ALGORITHM


def encrypt(
    ctx: OperationContext,
    *,
    key_id: str,
    plaintext: bytes,
    encryption_context: dict[str, str] | None = None,
    encryption_algorithm: str | None = None,
) -> Response:
    data = check_bytes("plaintext", plaintext, MAX_PLAINTEXT)
    key = ctx.cached(key_id)
    return {
        "CiphertextBlob": _encrypt_any(ctx, key, data, encryption_context, encryption_algorithm),
        "KeyId": key.record.arn,
        "EncryptionAlgorithm": encryption_algorithm or SYMMETRIC_ALGORITHM,
    }


def decrypt(
    ctx: OperationContext,
    *,
    ciphertext_blob: bytes,
    encryption_context: dict[str, str] | None = None,
    key_id: str | None = None,
    encryption_algorithm: str | None = None,
) -> Response:
    data = check_bytes("ciphertextBlob", ciphertext_blob, MAX_CIPHERTEXT)
    record, plaintext, algorithm = _decrypt_any(
        ctx, data, encryption_context, key_id, encryption_algorithm
    )
    return {"KeyId": record.arn, "Plaintext": plaintext, "EncryptionAlgorithm": algorithm}


def re_encrypt(
    ctx: OperationContext,
    *,
    ciphertext_blob: bytes,
    destination_key_id: str,
    source_encryption_context: dict[str, str] | None = None,
    source_key_id: str | None = None,
    destination_encryption_context: dict[str, str] | None = None,
    source_encryption_algorithm: str | None = None,
    destination_encryption_algorithm: str | None = None,
) -> Response:
    data = check_bytes("ciphertextBlob", ciphertext_blob, MAX_CIPHERTEXT)
    destination = ctx.cached(destination_key_id)
    lifecycle.require(destination.record, Use.CRYPTO)
    source, plaintext, source_algorithm = _decrypt_any(
        ctx,
        data,
        source_encryption_context,
        source_key_id,
        source_encryption_algorithm,
        "ReEncrypt",
    )
    return {
        "CiphertextBlob": _encrypt_any(
            ctx,
            destination,
            plaintext,
            destination_encryption_context,
            destination_encryption_algorithm,
            "ReEncrypt",
        ),
        "SourceKeyId": source.arn,
        "KeyId": destination.record.arn,
        "SourceEncryptionAlgorithm": source_algorithm,
        "DestinationEncryptionAlgorithm": destination_encryption_algorithm or SYMMETRIC_ALGORITHM,
    }


def wrap_private_key(
    ctx: OperationContext,
    key_id: str,
    private_der: bytes,
    context: dict[str, str] | None,
    operation: str,
) -> Response:
    key = ctx.cached(key_id)
    if key.record.key_spec is not KeySpec.SYMMETRIC_DEFAULT:
        require_symmetric_encryption(key.record, None, operation)
    return {
        "CiphertextBlob": _encrypt_any(ctx, key, private_der, context, None, operation),
        "KeyId": key.record.arn,
    }


def generate_data_key(
    ctx: OperationContext,
    *,
    key_id: str,
    key_spec: str | None = None,
    number_of_bytes: int | None = None,
    encryption_context: dict[str, str] | None = None,
) -> Response:
    return _data_key(ctx, "GenerateDataKey", key_id, key_spec, number_of_bytes, encryption_context)


def _data_key(
    ctx: OperationContext,
    operation: str,
    key_id: str,
    key_spec: str | None,
    number_of_bytes: int | None,
    encryption_context: dict[str, str] | None,
) -> Response:
    if (key_spec is None) == (number_of_bytes is None):
        raise ValidationException("Please specify either number of bytes or key spec.")
    if key_spec is not None:
        size = DATA_KEY_SPECS[check_enum("keySpec", key_spec, "DataKeySpec")]
    else:
        size = check_range("numberOfBytes", number_of_bytes, 1, MAX_RANDOM_BYTES)
    aad = context.canonical(encryption_context)
    key = ctx.cached(key_id)
    require_symmetric_encryption(key.record, None, operation)
    lifecycle.require(key.record, Use.CRYPTO)
    plaintext = ctx.hsm.random(size)
    return {
        "CiphertextBlob": _encrypt_with(ctx, key, plaintext, aad, operation),
        "Plaintext": plaintext,
        "KeyId": key.record.arn,
    }


def generate_data_key_without_plaintext(
    ctx: OperationContext,
    *,
    key_id: str,
    key_spec: str | None = None,
    number_of_bytes: int | None = None,
    encryption_context: dict[str, str] | None = None,
) -> Response:
    response = _data_key(
        ctx,
        "GenerateDataKeyWithoutPlaintext",
        key_id,
        key_spec,
        number_of_bytes,
        encryption_context,
    )
    del response["Plaintext"]  # the caller never sees it; it is dropped here
    return response


def generate_random(
    ctx: OperationContext,
    *,
    number_of_bytes: int | None = None,
    custom_key_store_id: str | None = None,
) -> Response:
    if number_of_bytes is None:
        raise ValidationException("NumberOfBytes is required.")
    count = check_range("numberOfBytes", number_of_bytes, 1, MAX_RANDOM_BYTES)
    if custom_key_store_id is None:
        return {"Plaintext": ctx.hsm.random(count)}
    store = require_connected(ctx.store, ctx.region, custom_key_store_id)
    if store.store_type == EXTERNAL:
        raise UnsupportedOperationException(
            "GenerateRandom is not supported in external key stores."
        )
    return {"Plaintext": ctx.tokens.for_store(custom_key_store_id).random(count)}
