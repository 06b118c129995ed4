"""Imported key material (AWS GetParametersForImport / ImportKeyMaterial), in the token.

The wrapping RSA key pair is made by the token; its private half can only unwrap.
Material is unwrapped by the token straight into a key object (C_UnwrapKey), so
plaintext material never passes through Python:
- RSAES_OAEP_SHA_*: one OAEP C_UnwrapKey.
- RSA_AES_KEY_WRAP_SHA_*: no software token has CKM_RSA_AES_KEY_WRAP, so it is done
  in the token in two steps: OAEP-unwrap the ephemeral AES key (first modulus-length
  bytes) into a session object that can only unwrap, RFC 5649-unwrap the material
  with it (the rest), destroy it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from pkcs11 import KDF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_named_curve_parameters

from hsmkms.errors import (
    IncorrectKeyMaterialException,
    InvalidCiphertextException,
    UnsupportedOperationException,
)
from hsmkms.token.kinds import CURVES, Aes, EcPair, EdPair, HmacKey, MaterialKind, RsaPair
from hsmkms.token.pool import PooledSession
from hsmkms.token.publics import create_public, spki_of_rsa_private
from hsmkms.token.templates import Custody, MaterialRef, ObjectName, custody_attributes
from hsmkms.token.wrapping import (
    key_template,
    oaep_param,
    oaep_unwrap_supported,
    rfc5649,
    secret_length,
    session_key,
)

if TYPE_CHECKING:
    from hsmkms.token.interface import Token

WRAPPING_KEY_SPECS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}


@dataclass(frozen=True)
class WrappingAlgorithm:
    hash_name: str
    with_aes: bool  # RSA_AES_KEY_WRAP_*: OAEP-wrapped AES key, then RFC 5649


WRAPPING_ALGORITHMS = {
    "RSAES_OAEP_SHA_1": WrappingAlgorithm("SHA1", with_aes=False),
    "RSAES_OAEP_SHA_256": WrappingAlgorithm("SHA256", with_aes=False),
    "RSA_AES_KEY_WRAP_SHA_1": WrappingAlgorithm("SHA1", with_aes=True),
    "RSA_AES_KEY_WRAP_SHA_256": WrappingAlgorithm("SHA256", with_aes=True),
}
# Imported HMAC material lengths in bytes, by the generated key's length (the digest size).
HMAC_IMPORT_BYTES = {28: range(28, 65), 32: range(32, 65), 48: range(48, 129), 64: range(64, 129)}
# Failures of the unwrap itself (bad blob, wrong wrapping key): KMS's InvalidCiphertext.
_UNWRAP_FAILURES = (
    p11.EncryptedDataInvalid, p11.EncryptedDataLenRange, p11.WrappedKeyInvalid,
    p11.WrappedKeyLenRange, p11.DataInvalid, p11.DataLenRange, p11.GeneralError,
    p11.ArgumentsBad,  # NSS softokn, for an OAEP blob that does not decrypt
)  # fmt: skip
# The blob decrypted but is not a valid key of the asked type (e.g. bad PKCS#8).
_MATERIAL_FAILURES = (
    p11.FunctionFailed, p11.TemplateInconsistent, p11.AttributeValueInvalid,
    p11.KeyTypeInconsistent, p11.DomainParamsInvalid, p11.KeySizeRange,
)  # fmt: skip
_CHECK_INPUT = b"hsmkms key check value"


def missing_mechanism(hsm: Token, wrapping_algorithm: str) -> str | None:
    """What the token lacks for this wrapping algorithm, or None (probed, cached)."""
    algorithm = WRAPPING_ALGORITHMS[wrapping_algorithm]
    missing = []
    if not oaep_unwrap_supported(hsm, algorithm.hash_name):
        missing.append(f"RSA_PKCS_OAEP with {algorithm.hash_name} (C_UnwrapKey)")
    if algorithm.with_aes and rfc5649(hsm).unwrap is None:
        missing.append("AES key wrap with padding (RFC 5649)")
    return ", ".join(missing) or None


def require(hsm: Token, wrapping_algorithm: str) -> None:
    missing = missing_mechanism(hsm, wrapping_algorithm)
    if missing:
        raise UnsupportedOperationException(
            f"The token does not support the mechanism(s) {missing}, "
            f"needed for {wrapping_algorithm}."
        )


def create_wrapping_key(hsm: Token, ref: ObjectName, key_spec: str) -> bytes:
    """An RSA key pair for one import: the private half is a token object that can only
    unwrap and never leaves the token; returns the public half as DER SPKI."""
    bits = WRAPPING_KEY_SPECS[key_spec]
    hsm.mechanisms.require(Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS_OAEP)

    def generate(pooled: PooledSession) -> bytes:
        public, private = pooled.session.generate_keypair(
            KeyType.RSA, bits, store=True,
            public_template=key_template(ObjectClass.PUBLIC_KEY, token=False, private=False,
                                         public_exponent=b"\x01\x00\x01"),
            private_template=key_template(
                ObjectClass.PRIVATE_KEY, token=True, private=True, sensitive=True,
                extractable=False, unwrap=True, modifiable=False, label=ref.label, id=ref.cka_id,
            ),
        )  # fmt: skip
        public.destroy()  # a session object: the SPKI is all anyone needs
        return spki_of_rsa_private(private)

    return hsm.run(generate)


def destroy_wrapping_key(hsm: Token, ref: ObjectName) -> int:
    return hsm.destroy(ref)


def import_material(
    hsm: Token,
    wrapping_key: ObjectName,
    wrapping_algorithm: str,
    encrypted: bytes,
    target: MaterialRef,
    kind: MaterialKind,
    custody: Custody | None = None,
) -> bytes:
    """Unwrap AWS-format encrypted material into token objects named by target (label and
    CKA_ID; a public object too for key pairs). Returns the material's check value (see
    check_value). InvalidCiphertextException: the blob does not unwrap under the wrapping
    key; IncorrectKeyMaterialException: it does, but is not valid material for kind."""
    require(hsm, wrapping_algorithm)
    _require_check_mechanism(hsm, kind)
    if isinstance(kind, EdPair):
        raise UnsupportedOperationException("Importing Ed25519 key material is not supported.")
    algorithm = WRAPPING_ALGORITHMS[wrapping_algorithm]
    mechanisms = rfc5649(hsm)
    chosen = custody or hsm.custody

    def work(pooled: PooledSession) -> bytes:
        private = pooled.session.get_key(
            object_class=ObjectClass.PRIVATE_KEY, label=wrapping_key.label, id=wrapping_key.cka_id
        )
        oaep = (Mechanism.RSA_PKCS_OAEP, oaep_param(algorithm.hash_name))
        if not algorithm.with_aes:
            return _unwrap_into(pooled, _unwrapper(private, *oaep, encrypted), target, kind,
                                chosen, mechanisms.wrap)  # fmt: skip
        size = (int.from_bytes(private[Attribute.MODULUS], "big").bit_length() + 7) // 8
        if len(encrypted) <= size:
            raise InvalidCiphertextException()
        try:
            ephemeral = private.unwrap_key(
                ObjectClass.SECRET_KEY, KeyType.AES, encrypted[:size], mechanism=oaep[0],
                mechanism_param=oaep[1], template=session_key(unwrap=True, extractable=False),
            )  # fmt: skip
        except _UNWRAP_FAILURES as exc:
            raise InvalidCiphertextException() from exc
        try:
            unwrap = _unwrapper(ephemeral, mechanisms.unwrap, None, encrypted[size:])
            return _unwrap_into(pooled, unwrap, target, kind, chosen, mechanisms.wrap)
        finally:
            ephemeral.destroy()

    return hsm.run(work)


Unwrapper = Callable[[ObjectClass, KeyType, dict[Any, Any]], Any]


def _unwrapper(key: Any, mechanism: Any, param: Any, blob: bytes) -> Unwrapper:
    def unwrap(object_class: ObjectClass, key_type: KeyType, template: dict[Any, Any]) -> Any:
        try:
            return key.unwrap_key(object_class, key_type, blob, mechanism=mechanism,
                                  mechanism_param=param, template=template)  # fmt: skip
        except _MATERIAL_FAILURES as exc:
            raise IncorrectKeyMaterialException(
                "The key material is not valid for this KMS key."
            ) from exc
        except _UNWRAP_FAILURES as exc:
            raise InvalidCiphertextException() from exc
        except (p11.TemplateIncomplete, p11.AttributeTypeInvalid) as exc:
            # Measured on NSS softokn: it cannot unwrap EC private keys at all.
            raise UnsupportedOperationException(
                f"The token cannot unwrap {key_type.name} private keys (PKCS#8) "
                f"({type(exc).__name__})."
            ) from exc

    return unwrap


def _incorrect(reason: str) -> IncorrectKeyMaterialException:
    return IncorrectKeyMaterialException(
        f"The key material is not valid for this KMS key: {reason}."
    )


def _unwrap_into(
    pooled: PooledSession, unwrap: Unwrapper, target: MaterialRef, kind: MaterialKind,
    custody: Custody, wrap: Any,
) -> bytes:  # fmt: skip
    # No CKA_MODIFIABLE=false: SoftHSM2 refuses it in unwrap (and copy) templates with
    # CKR_ATTRIBUTE_READ_ONLY. The custody attributes can only be tightened anyway.
    final = {"token": True, "private": True, "label": target.label, "id": target.cka_id}
    custody_attrs = custody_attributes(custody)
    created: list[Any] = []
    try:
        if isinstance(kind, Aes | HmacKey):
            key_type = KeyType.AES if isinstance(kind, Aes) else KeyType.GENERIC_SECRET
            _check_secret_length(pooled, unwrap, key_type, kind, wrap)
            uses = {"encrypt": True, "decrypt": True} if isinstance(kind, Aes) else {
                "sign": True, "verify": True}  # fmt: skip
            template = {**key_template(ObjectClass.SECRET_KEY, **final, **uses), **custody_attrs}
            created.append(unwrap(ObjectClass.SECRET_KEY, key_type, template))
            return _secret_check_value(created[0], kind)
        if isinstance(kind, RsaPair):
            uses = {"sign": kind.sign, "decrypt": kind.decrypt}
            template = {**key_template(ObjectClass.PRIVATE_KEY, **final, **uses), **custody_attrs}
            private = unwrap(ObjectClass.PRIVATE_KEY, KeyType.RSA, template)
            created.append(private)
            if int.from_bytes(private[Attribute.MODULUS], "big").bit_length() != kind.bits:
                raise _incorrect(f"it is not an RSA {kind.bits}-bit key")
            spki = spki_of_rsa_private(private)
            created.append(create_public(pooled.session, target.label, target.cka_id, spki,
                                         verify=kind.sign, encrypt=kind.decrypt))  # fmt: skip
            return _public_check_value(spki)
        if isinstance(kind, EcPair):
            uses = {"sign": kind.sign, "derive": kind.derive}
            template = {**key_template(ObjectClass.PRIVATE_KEY, **final, **uses), **custody_attrs}
            private = unwrap(ObjectClass.PRIVATE_KEY, KeyType.EC, template)
            created.append(private)
            if private[Attribute.EC_PARAMS] != encode_named_curve_parameters(kind.curve_oid):
                raise _incorrect("it is on another curve")
            spki = _ec_public_key(unwrap, kind.curve_oid)
            created.append(create_public(pooled.session, target.label, target.cka_id, spki,
                                         verify=kind.sign, encrypt=False))  # fmt: skip
            return _public_check_value(spki)
        raise UnsupportedOperationException(f"Cannot import {type(kind).__name__} material.")
    except BaseException:
        for obj in created:
            obj.destroy()
        raise


def _check_secret_length(
    pooled: PooledSession, unwrap: Unwrapper, key_type: KeyType, kind: Aes | HmacKey, wrap: Any
) -> None:
    """Reject material of the wrong length before it becomes a key (SoftHSM2 takes a
    20-byte "AES" key). Measured on an extractable session copy."""
    copy = unwrap(ObjectClass.SECRET_KEY, key_type, session_key(extractable=True))
    try:
        possible = secret_length(pooled, copy, wrap)
    finally:
        copy.destroy()
    allowed = range(kind.bits // 8, kind.bits // 8 + 1) if isinstance(kind, Aes) else (
        HMAC_IMPORT_BYTES.get(kind.length, range(kind.length, kind.length + 1)))  # fmt: skip
    # SoftHSM2 measures to 8 bytes: accept when an allowed length fits the measurement.
    if not set(possible) & set(allowed):
        raise _incorrect("its length is not allowed for this key spec")


def _secret_check_value(key: Any, kind: Aes | HmacKey) -> bytes:
    """A check value computed inside the token: equal for equal material, and reveals
    nothing useful about it. AES: the classic ECB-of-zeros KCV (also proves the length
    is a valid AES length); HMAC: the MAC of a fixed input. Hashed and cut to 16 bytes."""
    try:
        if isinstance(kind, Aes):
            raw = key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
        else:
            raw = key.sign(_CHECK_INPUT, mechanism=Mechanism.SHA256_HMAC)
    except (*_MATERIAL_FAILURES, p11.MechanismInvalid) as exc:
        # The mechanism is offered (checked up front): the key is what it refuses.
        raise _incorrect("the token cannot use it as this key type") from exc
    return hashlib.sha256(b"hsmkms-kcv/secret/" + bytes(raw)).digest()[:16]


def _require_check_mechanism(hsm: Token, kind: MaterialKind) -> None:
    if isinstance(kind, Aes):
        hsm.mechanisms.require(Mechanism.AES_ECB)
    elif isinstance(kind, HmacKey):
        hsm.mechanisms.require(Mechanism.SHA256_HMAC)
    elif isinstance(kind, EcPair):  # the public point is found with ECDH and ECDSA
        hsm.mechanisms.require(Mechanism.ECDH1_DERIVE, Mechanism.ECDSA)


def _public_check_value(spki: bytes) -> bytes:
    return hashlib.sha256(b"hsmkms-kcv/public/" + spki).digest()[:16]


def _ec_public_key(unwrap: Unwrapper, curve_oid: str) -> bytes:
    """The public key of unwrapped EC material, without exposing the private key.

    SoftHSM2 keeps no CKA_EC_POINT on private keys. So a session copy that may sign and
    derive computes ECDH with the curve's generator G (giving x of the public point d*G),
    and a signature picks which of the two points with that x is the key."""
    curve = CURVES[curve_oid]
    generator = (
        ec.derive_private_key(1, curve)
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    size = (curve.key_size + 7) // 8
    template = session_key(ObjectClass.PRIVATE_KEY, sign=True, derive=True, extractable=False)
    copy = unwrap(ObjectClass.PRIVATE_KEY, KeyType.EC, template)
    try:
        shared = copy.derive_key(
            KeyType.GENERIC_SECRET, size * 8, mechanism_param=(KDF.NULL, None, generator),
            template={Attribute.TOKEN: False, Attribute.SENSITIVE: False,
                      Attribute.EXTRACTABLE: True},
        )  # fmt: skip
        try:
            x = bytes(shared[Attribute.VALUE])  # a public value: x of the public point
        finally:
            shared.destroy()
        digest = hashlib.sha256(secrets.token_bytes(32)).digest()
        raw = copy.sign(digest, mechanism=Mechanism.ECDSA)
    finally:
        copy.destroy()
    signature = encode_dss_signature(
        int.from_bytes(raw[: len(raw) // 2], "big"), int.from_bytes(raw[len(raw) // 2 :], "big")
    )
    for prefix in (b"\x02", b"\x03"):
        candidate = ec.EllipticCurvePublicKey.from_encoded_point(curve, prefix + x)
        try:
            candidate.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        except InvalidSignature:
            continue
        return candidate.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    raise _incorrect("its public key could not be derived")


def check_value(hsm: Token, ref: MaterialRef, kind: MaterialKind) -> bytes:
    """The check value of material already in the token (as import_material returns):
    compare two to tell whether re-imported material is the same, never extracting it."""

    if not isinstance(kind, Aes | HmacKey):
        return _public_check_value(hsm.public_key_der(ref))
    _require_check_mechanism(hsm, kind)
    secret_kind = kind

    def compute(pooled: PooledSession) -> bytes:
        key = pooled.session.get_key(
            object_class=ObjectClass.SECRET_KEY, label=ref.label, id=ref.cka_id
        )
        return _secret_check_value(key, secret_kind)

    return hsm.run(compute)


def same_material(hsm: Token, first: MaterialRef, second: MaterialRef, kind: MaterialKind) -> bool:
    return check_value(hsm, first, kind) == check_value(hsm, second, kind)


def ensure_same(expected: bytes, actual: bytes) -> None:
    """IncorrectKeyMaterialException unless re-imported material is what the key had."""
    if not secrets.compare_digest(expected, actual):
        raise IncorrectKeyMaterialException(
            "The key material is not the same key material that was previously imported "
            "into this KMS key."
        )
