"""What each KMS key spec is, which usages it allows, and its algorithms (as AWS KMS).

`material` says what the token holds for the spec; the token layer maps it to
mechanisms and templates.
"""

from __future__ import annotations

from dataclasses import dataclass

from hsmkms.store.model import KeySpec, KeyUsage
from hsmkms.token import Aes, EcPair, EdPair, HmacKey, MaterialKind, RsaPair

HASH_BYTES = {"SHA1": 20, "SHA224": 28, "SHA256": 32, "SHA384": 48, "SHA512": 64}


@dataclass(frozen=True)
class SigningAlgorithm:
    name: str
    scheme: str  # "pss" | "pkcs1" | "ecdsa" | "eddsa"
    hash: str

    @property
    def digest_bytes(self) -> int:
        return HASH_BYTES[self.hash]


SIGNING_ALGORITHMS = {
    a.name: a
    for a in (
        SigningAlgorithm("RSASSA_PSS_SHA_256", "pss", "SHA256"),
        SigningAlgorithm("RSASSA_PSS_SHA_384", "pss", "SHA384"),
        SigningAlgorithm("RSASSA_PSS_SHA_512", "pss", "SHA512"),
        SigningAlgorithm("RSASSA_PKCS1_V1_5_SHA_256", "pkcs1", "SHA256"),
        SigningAlgorithm("RSASSA_PKCS1_V1_5_SHA_384", "pkcs1", "SHA384"),
        SigningAlgorithm("RSASSA_PKCS1_V1_5_SHA_512", "pkcs1", "SHA512"),
        SigningAlgorithm("ECDSA_SHA_256", "ecdsa", "SHA256"),
        SigningAlgorithm("ECDSA_SHA_384", "ecdsa", "SHA384"),
        SigningAlgorithm("ECDSA_SHA_512", "ecdsa", "SHA512"),
        SigningAlgorithm("ED25519_SHA_512", "eddsa", "SHA512"),
    )
}
RSA_SIGNING = [n for n, a in SIGNING_ALGORITHMS.items() if a.scheme in ("pss", "pkcs1")]
RSA_ENCRYPTION = {"RSAES_OAEP_SHA_1": "SHA1", "RSAES_OAEP_SHA_256": "SHA256"}
MAC_ALGORITHMS = {
    "HMAC_SHA_224": "SHA224",
    "HMAC_SHA_256": "SHA256",
    "HMAC_SHA_384": "SHA384",
    "HMAC_SHA_512": "SHA512",
}


@dataclass(frozen=True)
class Spec:
    material: MaterialKind | None  # None: the material depends on the usage (RSA, ECC)
    usages: tuple[KeyUsage, ...]
    signing: tuple[str, ...] = ()
    encryption: tuple[str, ...] = ()
    mac: tuple[str, ...] = ()
    agreement: tuple[str, ...] = ()
    rsa_bits: int = 0
    curve_oid: str = ""


def _rsa(bits: int) -> Spec:
    return Spec(
        None,
        (KeyUsage.ENCRYPT_DECRYPT, KeyUsage.SIGN_VERIFY),
        signing=tuple(RSA_SIGNING),
        encryption=tuple(RSA_ENCRYPTION),
        rsa_bits=bits,
    )


def _ecc(oid: str, signing: str) -> Spec:
    return Spec(
        None,
        (KeyUsage.SIGN_VERIFY, KeyUsage.KEY_AGREEMENT),
        signing=(signing,),
        agreement=("ECDH",),
        curve_oid=oid,
    )


def _hmac(bits: int) -> Spec:
    return Spec(HmacKey(bits // 8), (KeyUsage.GENERATE_VERIFY_MAC,), mac=(f"HMAC_SHA_{bits}",))


SPECS: dict[KeySpec, Spec] = {
    KeySpec.SYMMETRIC_DEFAULT: Spec(
        Aes(256), (KeyUsage.ENCRYPT_DECRYPT,), encryption=("SYMMETRIC_DEFAULT",)
    ),
    KeySpec.RSA_2048: _rsa(2048),
    KeySpec.RSA_3072: _rsa(3072),
    KeySpec.RSA_4096: _rsa(4096),
    KeySpec.ECC_NIST_P256: _ecc("1.2.840.10045.3.1.7", "ECDSA_SHA_256"),
    KeySpec.ECC_NIST_P384: _ecc("1.3.132.0.34", "ECDSA_SHA_384"),
    KeySpec.ECC_NIST_P521: _ecc("1.3.132.0.35", "ECDSA_SHA_512"),
    KeySpec.ECC_SECG_P256K1: _ecc("1.3.132.0.10", "ECDSA_SHA_256"),
    KeySpec.ECC_NIST_EDWARDS25519: Spec(
        EdPair(), (KeyUsage.SIGN_VERIFY,), signing=("ED25519_SHA_512",)
    ),
    KeySpec.HMAC_224: _hmac(224),
    KeySpec.HMAC_256: _hmac(256),
    KeySpec.HMAC_384: _hmac(384),
    KeySpec.HMAC_512: _hmac(512),
}

# GenerateDataKeyPair's KeyPairSpec values this release makes (not SM2).
DATA_KEY_PAIR_SPECS = {
    "ECC_NIST_EDWARDS25519": KeySpec.ECC_NIST_EDWARDS25519,
    "RSA_2048": KeySpec.RSA_2048,
    "RSA_3072": KeySpec.RSA_3072,
    "RSA_4096": KeySpec.RSA_4096,
    "ECC_NIST_P256": KeySpec.ECC_NIST_P256,
    "ECC_NIST_P384": KeySpec.ECC_NIST_P384,
    "ECC_NIST_P521": KeySpec.ECC_NIST_P521,
    "ECC_SECG_P256K1": KeySpec.ECC_SECG_P256K1,
}


def material_for(spec: KeySpec, usage: KeyUsage) -> MaterialKind:
    entry = SPECS[spec]
    if entry.material is not None:
        return entry.material
    if entry.rsa_bits:
        return RsaPair(entry.rsa_bits, decrypt=usage is KeyUsage.ENCRYPT_DECRYPT,
                       sign=usage is KeyUsage.SIGN_VERIFY)  # fmt: skip
    return EcPair(entry.curve_oid, sign=usage is KeyUsage.SIGN_VERIFY,
                  derive=usage is KeyUsage.KEY_AGREEMENT)  # fmt: skip


def oaep_plaintext_limit(rsa_bits: int, hash_name: str) -> int:
    """RSAES-OAEP: k - 2 hLen - 2 bytes (214/190 for RSA-2048 with SHA-1/SHA-256)."""
    return rsa_bits // 8 - 2 * HASH_BYTES[hash_name] - 2
