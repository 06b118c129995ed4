"""Kinds of key material the token holds, independent of KMS key specs."""

from __future__ import annotations

from dataclasses import dataclass

ED25519_OID = "1.3.101.112"


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
