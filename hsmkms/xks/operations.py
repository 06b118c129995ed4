"""The XKS proxy operations (AWS KMS External Key Store Proxy API v1) over hsmkms keys.

An external key is an hsmkms SYMMETRIC_DEFAULT key, named by its key id or by an
alias without its `alias/` prefix (externalKeyId allows no slash). Encrypt and
Decrypt are AES-256-GCM inside the token with a 12-byte IV from the token's RNG and
a 16-byte tag. The ciphertextMetadata names the key-material version, so rotated
keys still decrypt old ciphertexts; as the specification requires, it is bound into
the GCM additional data as

    len(aad) (u16 be) || aad || len(metadata) (u8) || metadata

Which of ENCRYPT and DECRYPT a key offers to XKS is a per-key setting
(`KeyRecord.extra["XksKeyUsage"]`, default both), so a key can be encrypt-only,
decrypt-only or neither, as the specification's tests need.
"""

from __future__ import annotations

import hmac
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from hsmkms.errors import (
    InvalidCiphertextException,
    InvalidKeyUsageException,
    KMSError,
    KMSInternalException,
    KMSInvalidStateException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.keys.ids import KEY_ID
from hsmkms.keys.resolved import Resolved
from hsmkms.keys.resolver import KeyResolver
from hsmkms.store.base import MetadataStore
from hsmkms.store.model import KeyRecord, KeySpec, KeyState, KeyUsage
from hsmkms.token import InternalRef, MaterialRef, Token
from hsmkms.xks_spec import TAG_BYTES, cdiv

ENCRYPT, DECRYPT = "ENCRYPT", "DECRYPT"
USAGE_EXTRA = "XksKeyUsage"
MAX_PLAINTEXT = 8192  # the specification asks for 4300
MAX_AAD = 8192
METADATA_FORMAT = 0x01  # metadata = format (1) || key-material version (u32 be)
_METADATA = struct.Struct(">BI")
# The deep health check's own key: health checks never touch a customer's key.
HEALTH_KEY = InternalRef("hsmkms-internal/xks-health", b"hsmkms-internal/xks-health")
_HEALTH_PLAINTEXT = b"hsmkms xks health check"
Response = dict[str, Any]  # XKS response members (bytes become Base64 on the wire)


class ProxyContext(Protocol):
    """What the proxy operations use of an operation's context (xks/ sits below
    operations/; operations/context.py's OperationContext has all of it)."""

    @property
    def store(self) -> MetadataStore: ...
    @property
    def hsm(self) -> Token: ...
    @property
    def keys(self) -> KeyResolver: ...

    def cached(self, key_id: str) -> Resolved: ...
    def resolve(self, key_id: str) -> KeyRecord: ...
    def update(self, record: KeyRecord, **changes: Any) -> KeyRecord: ...


def check_usage(values: Sequence[str]) -> list[str]:
    if not set(values) <= {ENCRYPT, DECRYPT}:
        raise ValidationException("An XKS key usage is a subset of ENCRYPT and DECRYPT.")
    return [usage for usage in (ENCRYPT, DECRYPT) if usage in values]


def external_key(ctx: ProxyContext, external_key_id: str) -> Resolved:
    """The hsmkms key an externalKeyId names: a key id, else the alias of that name."""
    if KEY_ID.match(external_key_id):
        return ctx.cached(external_key_id)
    try:
        return ctx.cached(f"alias/{external_key_id}")
    except ValidationException:
        raise NotFoundException(f"External key {external_key_id} is not found.") from None


def _xks_usage(key: Resolved) -> list[str]:
    record = key.record
    if record.key_spec is not KeySpec.SYMMETRIC_DEFAULT:
        return []
    usage: list[str] = record.extra.get(USAGE_EXTRA, [ENCRYPT, DECRYPT])
    return usage


def _usable(key: Resolved, use: str) -> None:
    record = key.record
    if record.state is not KeyState.ENABLED:
        raise KMSInvalidStateException(f"External key {record.key_id} is {record.state.value}.")
    if record.key_spec is not KeySpec.SYMMETRIC_DEFAULT or use not in _xks_usage(key):
        raise InvalidKeyUsageException(
            f"External key {record.key_id} does not support {use} through XKS."
        )


def gcm_aad(aad: bytes, metadata: bytes) -> bytes:
    """The additional data the token authenticates (the specification's construction)."""
    return struct.pack(">H", len(aad)) + aad + bytes([len(metadata)]) + metadata


def get_key_metadata(ctx: ProxyContext, *, external_key_id: str) -> Response:
    key = external_key(ctx, external_key_id)
    record = key.record
    spec = "AES_256" if record.key_spec is KeySpec.SYMMETRIC_DEFAULT else record.key_spec.value
    usage = _xks_usage(key)
    if record.key_spec is not KeySpec.SYMMETRIC_DEFAULT:
        usage = {
            KeyUsage.SIGN_VERIFY: ["SIGN", "VERIFY"],
            KeyUsage.GENERATE_VERIFY_MAC: ["SIGN", "VERIFY"],
            KeyUsage.KEY_AGREEMENT: ["DERIVE"],
        }.get(record.key_usage, [])
    return {
        "keySpec": spec,
        "keyUsage": usage,
        "keyStatus": "ENABLED" if record.state is KeyState.ENABLED else "DISABLED",
    }


def encrypt(
    ctx: ProxyContext,
    *,
    external_key_id: str,
    plaintext: bytes,
    additional_authenticated_data: bytes = b"",
    with_integrity_value: bool = False,
) -> Response:
    if not plaintext:
        raise ValidationException("plaintext must not be empty.")
    if len(plaintext) > MAX_PLAINTEXT or len(additional_authenticated_data) > MAX_AAD:
        raise UnsupportedOperationException(
            f"plaintext and additionalAuthenticatedData are limited to {MAX_PLAINTEXT} bytes."
        )
    key = external_key(ctx, external_key_id)
    _usable(key, ENCRYPT)
    if with_integrity_value:  # the CDIV is only given after the token decrypted the result
        _usable(key, DECRYPT)
    metadata = _METADATA.pack(METADATA_FORMAT, key.ref.version)
    aad = additional_authenticated_data
    iv, body = ctx.hsm.gcm_encrypt(key.ref, gcm_aad(aad, metadata), plaintext)
    ciphertext, tag = body[:-TAG_BYTES], body[-TAG_BYTES:]
    response: Response = {
        "ciphertext": ciphertext,
        "ciphertextMetadata": metadata,
        "initializationVector": iv,
        "authenticationTag": tag,
    }
    if with_integrity_value:
        # Appendix C: the value first, then a decrypt of exactly what is returned.
        value = cdiv(aad, metadata, iv, ciphertext, tag)
        try:
            check = ctx.hsm.gcm_decrypt(key.ref, iv, gcm_aad(aad, metadata), ciphertext + tag)
        except InvalidCiphertextException:
            check = b""
        if not hmac.compare_digest(check, plaintext):
            raise KMSInternalException("The encrypt result did not decrypt; not returned.")
        response["ciphertextDataIntegrityValue"] = value
    return response


def decrypt(
    ctx: ProxyContext,
    *,
    external_key_id: str,
    ciphertext: bytes,
    initialization_vector: bytes,
    authentication_tag: bytes,
    additional_authenticated_data: bytes = b"",
    ciphertext_metadata: bytes = b"",
) -> Response:
    key = external_key(ctx, external_key_id)
    _usable(key, DECRYPT)
    if (
        len(initialization_vector) not in (12, 16)
        or len(authentication_tag) != TAG_BYTES
        or len(additional_authenticated_data) > 0xFFFF
        or len(ciphertext_metadata) != _METADATA.size
        or ciphertext_metadata[0] != METADATA_FORMAT
    ):
        raise InvalidCiphertextException("The ciphertext or its parameters are not valid.")
    if len(ciphertext) > MAX_PLAINTEXT:
        raise UnsupportedOperationException(f"ciphertext is limited to {MAX_PLAINTEXT} bytes.")
    _, version = _METADATA.unpack(ciphertext_metadata)
    if not 1 <= version <= key.record.current_version:
        raise InvalidCiphertextException("The ciphertext metadata is not valid.")
    ref = key.ref if version == key.ref.version else MaterialRef(key.record.key_id, version)
    plaintext = ctx.hsm.gcm_decrypt(
        ref,
        initialization_vector,
        gcm_aad(additional_authenticated_data, ciphertext_metadata),
        ciphertext + authentication_tag,
    )
    return {"plaintext": plaintext}


def set_xks_key_usage(ctx: ProxyContext, *, key_id: str, key_usage: list[str]) -> Response:
    """Limit what XKS may do with a symmetric key: ENCRYPT, DECRYPT, both or neither."""
    usage = check_usage(key_usage)
    record = ctx.resolve(key_id)
    if record.key_spec is not KeySpec.SYMMETRIC_DEFAULT:
        raise InvalidKeyUsageException(f"{record.arn} is not a symmetric encryption key.")
    ctx.update(record, extra={**record.extra, USAGE_EXTRA: usage})
    return {"KeyId": record.key_id, "XksKeyUsage": usage}


class HealthCheck:
    """The deep health check (a GCM round trip in the token with its own key, and a
    database ping), its result kept for `cache_seconds` (the specification allows
    up to a minute) so a burst of health calls costs one check."""

    def __init__(self, cache_seconds: float = 1.0) -> None:
        self.cache_seconds = cache_seconds
        self._status: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def status(self, ctx: ProxyContext) -> str:
        cached = self._status
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        with self._lock:
            status = _probe(ctx)
            self._status = (status, time.monotonic() + self.cache_seconds)
        return status


def _probe(ctx: ProxyContext) -> str:
    try:
        ctx.hsm.ensure_aes_key(HEALTH_KEY)
        iv, body = ctx.hsm.gcm_encrypt(HEALTH_KEY, b"health", _HEALTH_PLAINTEXT)
        if ctx.hsm.gcm_decrypt(HEALTH_KEY, iv, b"health", body) != _HEALTH_PLAINTEXT:
            return "UNAVAILABLE"
    except (KMSError, OSError, RuntimeError):
        return "UNAVAILABLE"
    try:
        ctx.store.ping()
    except Exception:  # reported as the status, not raised: this is the health check
        return "DEGRADED"  # the token works; keys seen in the last second still serve
    return "ACTIVE"


def get_health_status(ctx: ProxyContext, *, check: HealthCheck, fleet_size: int = 1) -> Response:
    info = ctx.hsm.info
    from hsmkms import __version__

    details: dict[str, Any] = {
        "id": f"{info.label}/{info.serial}" if info.serial else info.label,
        "model": f"{info.model} (firmware {info.firmware})",
        "healthStatus": check.status(ctx),
    }
    return {
        "xksProxyFleetSize": fleet_size,
        "xksProxyVendor": "hsmkms",
        "xksProxyModel": f"hsmkms {__version__}",
        "ekmVendor": info.manufacturer or "unknown",
        "ekmFleetDetails": [details],
    }
