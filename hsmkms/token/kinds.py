"""Kinds of key material the token holds, independent of KMS key specs."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

ED25519_OID = "1.3.101.112"
# The Weierstrass curves KMS offers, by the OID in CKA_EC_PARAMS.
CURVES: dict[str, ec.EllipticCurve] = {
    "1.2.840.10045.3.1.7": ec.SECP256R1(),
    "1.3.132.0.34": ec.SECP384R1(),
    "1.3.132.0.35": ec.SECP521R1(),
    "1.3.132.0.10": ec.SECP256K1(),
}


@dataclass(frozen=True)
class Aes:
    bits: int = 256


@dataclass(frozen=True)
class RsaPair:
    bits: int
    decrypt: bool
    sign: bool


@dataclass(frozen=True)
class EcPair:
    curve_oid: str
    sign: bool
    derive: bool


@dataclass(frozen=True)
class EdPair:
    curve_oid: str = ED25519_OID


@dataclass(frozen=True)
class HmacKey:
    length: int  # bytes


MaterialKind = Aes | RsaPair | EcPair | EdPair | HmacKey
