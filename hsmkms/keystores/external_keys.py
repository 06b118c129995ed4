"""KMS keys in an external key store: CreateKey's checks of the external key, and the
double encryption of Encrypt / Decrypt / ReEncrypt / GenerateDataKey.

As AWS KMS does for XKS keys, every such KMS key also has its own AES-256 material
in the main token. Encrypt seals the plaintext under it first (AES-GCM, the header
and canonical encryption context as additional data), then sends that ciphertext to
the external key through the proxy; Decrypt undoes the two layers in reverse
order. Neither layer alone reveals the plaintext (blob format: hsmkms/keystores/external_blob.py).
"""

from __future__ import annotations

from typing import Any

from hsmkms.errors import (
    InvalidCiphertextException,
    UnsupportedOperationException,
    ValidationException,
    XksKeyAlreadyInUseException,
    XksKeyInvalidConfigurationException,
)
from hsmkms.keys import lifecycle
from hsmkms.keys.lifecycle import Use
from hsmkms.keys.metadata import XKS_KEY_ID
from hsmkms.keys.resolved import Resolved
from hsmkms.keystores import external_blob
from hsmkms.keystores.context import KeyStoreContext
from hsmkms.keystores.external_client import XksProxyFailure
from hsmkms.keystores.external_failures import create_key_error, crypto_error
from hsmkms.keystores.external_stores import client_for, connected_store, request_metadata
from hsmkms.keystores.records import EXTERNAL, CustomKeyStore, require_connected
from hsmkms.store.model import KeyRecord, KeySpec, KeyUsage, Origin
from hsmkms.token import MaterialRef
from hsmkms.xks_spec import IV_BYTES


def external_key_extra(
    ctx: KeyStoreContext,
    *,
    store_id: str | None,
    origin: Origin,
    spec: KeySpec,
    usage: KeyUsage,
    multi_region: bool,
    xks_key_id: str | None,
) -> dict[str, Any]:
    """CreateKey with Origin EXTERNAL_KEY_STORE: AWS's rules, then the external key's
    metadata from the proxy; the key's extra fields."""
    if origin is not Origin.EXTERNAL_KEY_STORE:
        raise ValidationException("XksKeyId is only for keys with Origin EXTERNAL_KEY_STORE.")
    if store_id is None or xks_key_id is None:
        raise ValidationException(
            "Origin EXTERNAL_KEY_STORE needs a CustomKeyStoreId and an XksKeyId."
        )
    if spec is not KeySpec.SYMMETRIC_DEFAULT or usage is not KeyUsage.ENCRYPT_DECRYPT:
        raise UnsupportedOperationException(
            "An external key store holds only symmetric encryption keys."
        )
    if multi_region:
        raise UnsupportedOperationException("Multi-Region keys cannot be in a custom key store.")
    store = require_connected(ctx.store, ctx.region, store_id)
    if store.store_type != EXTERNAL:
        raise ValidationException(
            f"Custom key store {store_id} is not an EXTERNAL_KEY_STORE key store."
        )
    _check_not_in_use(ctx, store, xks_key_id)
    try:
        meta = client_for(ctx, store).key_metadata(xks_key_id, request_metadata(ctx, "CreateKey"))
    except XksProxyFailure as failure:
        raise create_key_error(failure) from None
    if meta["keySpec"] != "AES_256":
        raise XksKeyInvalidConfigurationException(
            f"External key {xks_key_id} is {meta['keySpec']}, not AES_256."
        )
    if not {"ENCRYPT", "DECRYPT"} <= set(meta["keyUsage"]):
        raise XksKeyInvalidConfigurationException(
            f"External key {xks_key_id} does not support both ENCRYPT and DECRYPT."
        )
    if meta["keyStatus"] != "ENABLED":
        raise XksKeyInvalidConfigurationException(
            f"External key {xks_key_id} is not enabled in the external key manager."
        )
    return {XKS_KEY_ID: xks_key_id}


def _check_not_in_use(ctx: KeyStoreContext, store: CustomKeyStore, xks_key_id: str) -> None:
    """One external key backs at most one KMS key of a store (AWS's rule)."""
    after: str | None = None
    while page := ctx.store.list_keys(None, after, 500):
        after = page[-1].key_id
        for record in page:
            if (
                record.custom_key_store_id == store.store_id
                and record.extra.get(XKS_KEY_ID) == xks_key_id
            ):
                raise XksKeyAlreadyInUseException(
                    f"External key {xks_key_id} is already associated with {record.arn}."
                )


def is_external(record: KeyRecord) -> bool:
    return record.origin is Origin.EXTERNAL_KEY_STORE


def encrypt(
    ctx: KeyStoreContext, key: Resolved, plaintext: bytes, canonical_context: bytes, operation: str
) -> bytes:
    record = key.record
    lifecycle.require(record, Use.CRYPTO)
    store = connected_store(ctx, record.custom_key_store_id or "")
    header = external_blob.header(key.key_uuid, key.ref.version)
    iv, body = ctx.hsm.gcm_encrypt(key.ref, header + canonical_context, plaintext)
    try:
        outer = client_for(ctx, store).encrypt(
            record.extra[XKS_KEY_ID],
            request_metadata(ctx, operation, record.arn),
            iv + body,
            external_blob.outer_aad(header, canonical_context),
        )
    except XksProxyFailure as failure:
        raise crypto_error(failure) from None
    return external_blob.encode(header, outer)


def decrypt(
    ctx: KeyStoreContext,
    record: KeyRecord,
    parsed: external_blob.XksBlob,
    canonical_context: bytes,
    operation: str,
) -> bytes:
    lifecycle.require(record, Use.CRYPTO)
    if not is_external(record) or not 1 <= parsed.version <= record.current_version:
        raise InvalidCiphertextException()
    store = connected_store(ctx, record.custom_key_store_id or "")
    try:
        inner = client_for(ctx, store).decrypt(
            record.extra[XKS_KEY_ID],
            request_metadata(ctx, operation, record.arn),
            parsed.outer,
            external_blob.outer_aad(parsed.header, canonical_context),
        )
    except XksProxyFailure as failure:
        raise crypto_error(failure) from None
    ref = MaterialRef(record.key_id, parsed.version)
    iv, body = inner[:IV_BYTES], inner[IV_BYTES:]
    return ctx.hsm.gcm_decrypt(ref, iv, parsed.header + canonical_context, body)
