"""Public halves of key pairs as plain token objects, made from their public values.

Used where material arrives without a public object: imported private keys and
key pairs restored from a backup. Public values are not secrets.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from hsmkms.token.kinds import CURVES, ED25519_OID

_OID_OF_CURVE = {curve.name: oid for oid, curve in CURVES.items()}


def der_octet_string(content: bytes) -> bytes:
    """DER OCTET STRING: how PKCS#11 tokens hold CKA_EC_POINT."""
    size = len(content)
    if size < 0x80:
        return b"\x04" + bytes([size]) + content
    width = (size.bit_length() + 7) // 8
    return b"\x04" + bytes([0x80 | width]) + size.to_bytes(width, "big") + content


def public_attributes(spki_der: bytes) -> dict[Any, Any]:
    """Class, key type and public values of a SubjectPublicKeyInfo, as token attributes."""
    key = serialization.load_der_public_key(spki_der)
    attributes: dict[Any, Any] = {Attribute.CLASS: ObjectClass.PUBLIC_KEY}
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        attributes.update({
            Attribute.KEY_TYPE: KeyType.RSA,
            Attribute.MODULUS: numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"),
            Attribute.PUBLIC_EXPONENT: numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"),
        })  # fmt: skip
    elif isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        attributes.update({
            Attribute.KEY_TYPE: KeyType.EC,
            Attribute.EC_PARAMS: encode_named_curve_parameters(_OID_OF_CURVE[key.curve.name]),
            Attribute.EC_POINT: der_octet_string(point),
        })  # fmt: skip
    elif isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        attributes.update({
            Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
            Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID),
            Attribute.EC_POINT: der_octet_string(raw),
        })  # fmt: skip
    else:
        raise ValueError(f"unsupported public key type {type(key).__name__}")
    return attributes


def create_public(
    session: Any, label: str, cka_id: bytes, spki_der: bytes, *, verify: bool, encrypt: bool
) -> Any:
    """A token public-key object with the pair's label and CKA_ID."""
    return session.create_object({
        **public_attributes(spki_der),
        Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.MODIFIABLE: False,
        Attribute.LABEL: label, Attribute.ID: cka_id,
        Attribute.VERIFY: verify, Attribute.ENCRYPT: encrypt,
        Attribute.WRAP: False, Attribute.DERIVE: False,
    })  # fmt: skip


def rsa_public_of(key: Any) -> rsa.RSAPublicKey:
    """The RSA public key of a token key (public or private), from its public attributes."""
    return rsa.RSAPublicNumbers(
        int.from_bytes(key[Attribute.PUBLIC_EXPONENT], "big"),
        int.from_bytes(key[Attribute.MODULUS], "big"),
    ).public_key()


def spki_of_rsa_private(private: Any) -> bytes:
    """SPKI of an RSA private key object, from its public attributes only."""
    return rsa_public_of(private).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
