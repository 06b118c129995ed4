"""Signatures, public keys, key agreement and data key pairs for RSA, ECC and Ed25519 keys.

Private halves stay in the token; hashing for signatures happens here (RAW
messages), the signature and ECDH inside the token.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from hsmkms.errors import (
    InvalidKeyUsageException,
    KMSInvalidSignatureException,
    MalformedPublicKeyException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.keys import lifecycle
from hsmkms.keys.lifecycle import Use
from hsmkms.keys.metadata import PUBLIC_KEY, algorithms
from hsmkms.keys.resolved import Resolved
from hsmkms.keys.specs import (
    DATA_KEY_PAIR_SPECS,
    SIGNING_ALGORITHMS,
    SPECS,
    SigningAlgorithm,
    material_for,
)
from hsmkms.operations.checks import (
    check_bytes,
    check_enum,
    usable,
)
from hsmkms.operations.context import OperationContext, Response
from hsmkms.operations.crypto import wrap_private_key
from hsmkms.store.model import (
    KeyUsage,
)
from hsmkms.token import CURVES, EcPair, EdPair, RsaPair

MAX_MESSAGE = 4096
MAX_SIGNATURE = 6144
MAX_PUBLIC_KEY = 8192


HASH_FUNCTIONS = {
    "SHA256": hashlib.sha256,
    "SHA384": hashlib.sha384,
    "SHA512": hashlib.sha512,
}


def _der_integer(value: bytes) -> bytes:
    value = value.lstrip(b"\0") or b"\0"
    if value[0] & 0x80:
        value = b"\0" + value
    return b"\x02" + bytes([len(value)]) + value


def _ecdsa_der(raw: bytes) -> bytes:
    """r || s -> DER ECDSA-Sig-Value (what KMS returns), without big-int round trips."""
    half = len(raw) // 2
    body = _der_integer(raw[:half]) + _der_integer(raw[half:])
    length = bytes([len(body)]) if len(body) < 0x80 else b"\x81" + bytes([len(body)])
    return b"\x30" + length + body


def _ecdsa_raw(signature: bytes, coordinate_bytes: int) -> bytes:
    """DER ECDSA-Sig-Value -> r || s as a token verifies it."""
    try:
        r, s = decode_dss_signature(signature)
        return r.to_bytes(coordinate_bytes, "big") + s.to_bytes(coordinate_bytes, "big")
    except (ValueError, OverflowError):
        raise KMSInvalidSignatureException() from None


def _signing(
    ctx: OperationContext,
    key_id: str,
    message: bytes,
    message_type: str | None,
    algorithm_name: str,
    operation: str,
) -> tuple[Resolved, SigningAlgorithm, bytes]:
    data = check_bytes("message", message, MAX_MESSAGE)
    kind = check_enum("messageType", message_type or "RAW", "MessageType")
    check_enum("signingAlgorithm", algorithm_name, "SigningAlgorithmSpec")
    key = usable(ctx, key_id, KeyUsage.SIGN_VERIFY, operation)
    if algorithm_name not in SPECS[key.record.key_spec].signing:
        raise InvalidKeyUsageException(
            f"Signing algorithm {algorithm_name} is not valid for {key.record.arn} "
            f"({key.record.key_spec.value})."
        )
    algorithm = SIGNING_ALGORITHMS[algorithm_name]
    if algorithm.scheme == "eddsa":
        if kind != "RAW":
            raise ValidationException(f"{algorithm_name} signs RAW messages only.")
        return key, algorithm, data
    if kind == "RAW":
        return key, algorithm, HASH_FUNCTIONS[algorithm.hash](data).digest()
    if len(data) != algorithm.digest_bytes:
        raise ValidationException(f"Digest is invalid length for algorithm {algorithm_name}.")
    return key, algorithm, data


def sign(
    ctx: OperationContext,
    *,
    key_id: str,
    message: bytes,
    signing_algorithm: str,
    message_type: str | None = None,
) -> Response:
    key, algorithm, data = _signing(ctx, key_id, message, message_type, signing_algorithm, "Sign")
    signature = ctx.token_for(key.record).sign(key.ref, algorithm.scheme, algorithm.hash, data)
    if algorithm.scheme == "ecdsa":  # tokens give r || s; KMS returns DER
        signature = _ecdsa_der(signature)
    return {
        "KeyId": key.record.arn,
        "Signature": signature,
        "SigningAlgorithm": algorithm.name,
    }


def verify(
    ctx: OperationContext,
    *,
    key_id: str,
    message: bytes,
    signature: bytes,
    signing_algorithm: str,
    message_type: str | None = None,
) -> Response:
    given = check_bytes("signature", signature, MAX_SIGNATURE)
    key, algorithm, data = _signing(ctx, key_id, message, message_type, signing_algorithm, "Verify")
    if algorithm.scheme == "ecdsa":
        curve = SPECS[key.record.key_spec].curve_oid
        given = _ecdsa_raw(given, _coordinate_bytes(curve))
    if not ctx.token_for(key.record).verify(key.ref, algorithm.scheme, algorithm.hash, data, given):
        raise KMSInvalidSignatureException()
    return {"KeyId": key.record.arn, "SignatureValid": True, "SigningAlgorithm": algorithm.name}


def get_public_key(ctx: OperationContext, *, key_id: str) -> Response:
    key = ctx.cached(key_id)
    record = key.record
    public_key = record.extra.get(PUBLIC_KEY)
    if public_key is None:
        raise UnsupportedOperationException(
            f"{record.arn} is not an asymmetric key; it has no public key."
        )
    lifecycle.require(record, Use.CRYPTO)
    return {
        "KeyId": record.arn,
        "PublicKey": base64.b64decode(public_key),
        "CustomerMasterKeySpec": record.key_spec.value,
        "KeySpec": record.key_spec.value,
        "KeyUsage": record.key_usage.value,
        **algorithms(record),
    }


# -- MACs --------------------------------------------------------------------------


def derive_shared_secret(
    ctx: OperationContext, *, key_id: str, key_agreement_algorithm: str, public_key: bytes
) -> Response:
    check_enum("keyAgreementAlgorithm", key_agreement_algorithm, "KeyAgreementAlgorithmSpec")
    der = check_bytes("publicKey", public_key, MAX_PUBLIC_KEY)
    key = usable(ctx, key_id, KeyUsage.KEY_AGREEMENT, "DeriveSharedSecret")
    curve_oid = SPECS[key.record.key_spec].curve_oid
    try:
        peer = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise MalformedPublicKeyException("PublicKey is not a DER-encoded public key.") from None
    if not isinstance(peer, ec.EllipticCurvePublicKey) or (
        peer.curve.name != CURVES[curve_oid].name
    ):
        raise ValidationException(
            f"PublicKey must be an elliptic-curve key on the curve of {key.record.key_spec.value}."
        )
    point = peer.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    secret = ctx.token_for(key.record).ecdh(key.ref, point, _coordinate_bytes(curve_oid))
    return {
        "KeyId": key.record.arn,
        "SharedSecret": secret,
        "KeyOrigin": key.record.origin.value,
        "KeyAgreementAlgorithm": "ECDH",
    }


# -- data key pairs -------------------------------------------------------------------


def generate_data_key_pair(
    ctx: OperationContext,
    *,
    key_id: str,
    key_pair_spec: str,
    encryption_context: dict[str, str] | None = None,
) -> Response:
    return _data_key_pair(ctx, "GenerateDataKeyPair", key_id, key_pair_spec, encryption_context)


def _data_key_pair(
    ctx: OperationContext,
    operation: str,
    key_id: str,
    key_pair_spec: str,
    encryption_context: dict[str, str] | None,
) -> Response:
    spec = DATA_KEY_PAIR_SPECS[check_enum("keyPairSpec", key_pair_spec, "DataKeyPairSpec")]
    kind = material_for(spec, KeyUsage.SIGN_VERIFY)
    assert isinstance(kind, RsaPair | EcPair | EdPair)
    ctx.cached(key_id)  # NotFound before the (slow) key pair generation
    private_der, public_der = ctx.hsm.data_key_pair(kind)
    wrapped = wrap_private_key(ctx, key_id, private_der, encryption_context, operation)
    return {
        "PrivateKeyCiphertextBlob": wrapped["CiphertextBlob"],
        "PrivateKeyPlaintext": private_der,
        "PublicKey": public_der,
        "KeyId": wrapped["KeyId"],
        "KeyPairSpec": key_pair_spec,
    }


def generate_data_key_pair_without_plaintext(
    ctx: OperationContext,
    *,
    key_id: str,
    key_pair_spec: str,
    encryption_context: dict[str, str] | None = None,
) -> Response:
    response = _data_key_pair(
        ctx, "GenerateDataKeyPairWithoutPlaintext", key_id, key_pair_spec, encryption_context
    )
    del response["PrivateKeyPlaintext"]  # dropped here; the caller never sees it
    return response


def _coordinate_bytes(curve_oid: str) -> int:
    return (CURVES[curve_oid].key_size + 7) // 8
