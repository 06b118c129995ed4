"""Key pairs, signatures, RSA decryption, HMAC and ECDH inside the token.

Hashing happens outside (the caller passes digests): SoftHSM2 has raw CKM_ECDSA
only, and one digest-input path per scheme keeps the mechanism list short.
Runs on a pooled session handed in by Hsm.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pkcs11 import KDF, MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from hsmkms.token import lookup
from hsmkms.token.kinds import CURVES, EcPair, EdPair, HmacKey, MaterialKind, RsaPair
from hsmkms.token.pool import PooledSession
from hsmkms.token.templates import Custody, MaterialRef, custody_attributes, secret_key_template

HASH_MECHANISMS = {
    "SHA1": (Mechanism.SHA_1, MGF.SHA1),
    "SHA224": (Mechanism.SHA224, MGF.SHA224),
    "SHA256": (Mechanism.SHA256, MGF.SHA256),
    "SHA384": (Mechanism.SHA384, MGF.SHA384),
    "SHA512": (Mechanism.SHA512, MGF.SHA512),
}
HMAC_MECHANISMS = {
    "SHA224": Mechanism.SHA224_HMAC,
    "SHA256": Mechanism.SHA256_HMAC,
    "SHA384": Mechanism.SHA384_HMAC,
    "SHA512": Mechanism.SHA512_HMAC,
}
# DER DigestInfo prefixes (RFC 8017, section 9.2) for RSASSA-PKCS1-v1_5 over a digest.
DIGEST_INFO = {
    "SHA256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "SHA384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "SHA512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
F4 = b"\x01\x00\x01"


def required_mechanisms(kind: MaterialKind) -> tuple[Mechanism, ...]:
    if isinstance(kind, RsaPair):
        use = (Mechanism.RSA_PKCS_OAEP,) if kind.decrypt else (
            Mechanism.RSA_PKCS_PSS, Mechanism.RSA_PKCS
        )  # fmt: skip
        return (Mechanism.RSA_PKCS_KEY_PAIR_GEN, *use)
    if isinstance(kind, EcPair):
        use = (Mechanism.ECDSA,) if kind.sign else (Mechanism.ECDH1_DERIVE,)
        return (Mechanism.EC_KEY_PAIR_GEN, *use)
    if isinstance(kind, EdPair):
        return (Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA)
    if isinstance(kind, HmacKey):
        return (Mechanism.GENERIC_SECRET_KEY_GEN, Mechanism.SHA256_HMAC)
    return (Mechanism.AES_KEY_GEN, Mechanism.AES_GCM)


def _private_template(
    ref: MaterialRef | None, custody: Custody = Custody.NEVER_EXTRACTABLE, **uses: bool
) -> dict[Any, Any]:
    template: dict[Any, Any] = {
        Attribute.TOKEN: ref is not None,
        Attribute.PRIVATE: True,
        # only session-only data key pairs are extractable in plaintext
        **(
            custody_attributes(custody)
            if ref is not None
            else {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}
        ),
        Attribute.SIGN: uses.get("sign", False),
        Attribute.DECRYPT: uses.get("decrypt", False),
        Attribute.DERIVE: uses.get("derive", False),
        Attribute.UNWRAP: False,
    }
    if ref is not None:
        template.update({Attribute.LABEL: ref.label, Attribute.ID: ref.cka_id,
                         Attribute.MODIFIABLE: False})  # fmt: skip
    return template


def _public_template(ref: MaterialRef | None, **uses: bool) -> dict[Any, Any]:
    template: dict[Any, Any] = {
        Attribute.TOKEN: ref is not None,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: uses.get("sign", False),
        Attribute.ENCRYPT: uses.get("decrypt", False),
        Attribute.DERIVE: False,
        Attribute.WRAP: False,
    }
    if ref is not None:
        template.update({Attribute.LABEL: ref.label, Attribute.ID: ref.cka_id,
                         Attribute.MODIFIABLE: False})  # fmt: skip
    return template


def generate(
    pooled: PooledSession,
    ref: MaterialRef | None,
    kind: MaterialKind,
    custody: Custody = Custody.NEVER_EXTRACTABLE,
) -> Any:
    """Create the material; ref None makes extractable session objects (data key pairs)."""
    session = pooled.session
    store = ref is not None
    if isinstance(kind, HmacKey):
        assert ref is not None
        template = secret_key_template(ref, encrypt=False, sign=True, custody=custody)
        return session.generate_key(KeyType.GENERIC_SECRET, kind.length * 8, store=True,
                                    template=template)  # fmt: skip
    if isinstance(kind, RsaPair):
        uses = {"sign": kind.sign, "decrypt": kind.decrypt}
        return session.generate_keypair(
            KeyType.RSA, kind.bits, store=store,
            public_template={**_public_template(ref, **uses), Attribute.PUBLIC_EXPONENT: F4},
            private_template=_private_template(ref, custody, **uses),
        )  # fmt: skip
    if not isinstance(kind, EcPair | EdPair):
        raise TypeError(f"not key-pair material: {kind!r}")  # AES goes through Hsm
    key_type = KeyType.EC_EDWARDS if isinstance(kind, EdPair) else KeyType.EC
    uses = (
        {"sign": True} if isinstance(kind, EdPair) else {"sign": kind.sign, "derive": kind.derive}
    )
    parameters = session.create_domain_parameters(
        key_type, {Attribute.EC_PARAMS: encode_named_curve_parameters(kind.curve_oid)}, local=True
    )
    return parameters.generate_keypair(
        store=store,
        public_template=_public_template(ref, **uses),
        private_template=_private_template(ref, custody, **uses),
    )


def _find(pooled: PooledSession, ref: MaterialRef, object_class: ObjectClass) -> Any:
    key = (ref, object_class)
    cached = pooled.objects.get(key)
    if cached is None:
        cached = lookup.find_one(pooled.session, ref, object_class)
        pooled.objects[key] = cached
    return cached


def _octets(der_octet_string: bytes) -> bytes:
    """The content of a DER OCTET STRING (how tokens report CKA_EC_POINT)."""
    length = der_octet_string[1]
    if length < 0x80:
        return der_octet_string[2:]
    width = length & 0x7F
    return der_octet_string[2 + width :]


def public_key_der(pooled: PooledSession, ref: MaterialRef) -> bytes:
    public = _find(pooled, ref, ObjectClass.PUBLIC_KEY)
    der: bytes = _public_key(public).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _public_key(public: Any) -> Any:
    if public.key_type == KeyType.RSA:
        return rsa.RSAPublicNumbers(
            int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
            int.from_bytes(public[Attribute.MODULUS], "big"),
        ).public_key()
    point = _octets(public[Attribute.EC_POINT])
    if public.key_type == KeyType.EC_EDWARDS:
        return ed25519.Ed25519PublicKey.from_public_bytes(point)
    curve = _curve_of(public[Attribute.EC_PARAMS])
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)


def _curve_of(ec_params: bytes) -> ec.EllipticCurve:
    for oid, curve in CURVES.items():
        if encode_named_curve_parameters(oid) == ec_params:
            return curve
    raise ValueError("unknown curve")


def _signature_input(scheme: str, hash_name: str, data: bytes) -> tuple[Mechanism, Any, bytes]:
    if scheme == "pss":
        digest_mech, mgf = HASH_MECHANISMS[hash_name]
        return Mechanism.RSA_PKCS_PSS, (digest_mech, mgf, len(data)), data
    if scheme == "pkcs1":
        return Mechanism.RSA_PKCS, None, DIGEST_INFO[hash_name] + data
    if scheme == "ecdsa":
        return Mechanism.ECDSA, None, data
    return Mechanism.EDDSA, None, data  # eddsa signs the message itself


def sign(
    pooled: PooledSession, ref: MaterialRef, scheme: str, hash_name: str, data: bytes
) -> bytes:
    mechanism, param, payload = _signature_input(scheme, hash_name, data)
    key = _find(pooled, ref, ObjectClass.PRIVATE_KEY)
    signature: bytes = key.sign(payload, mechanism=mechanism, mechanism_param=param)
    return signature


def verify(
    pooled: PooledSession, ref: MaterialRef, scheme: str, hash_name: str, data: bytes,
    signature: bytes,
) -> bool:  # fmt: skip
    mechanism, param, payload = _signature_input(scheme, hash_name, data)
    key = _find(pooled, ref, ObjectClass.PUBLIC_KEY)
    valid: bool = key.verify(payload, signature, mechanism=mechanism, mechanism_param=param)
    return valid


def rsa_encrypt(pooled: PooledSession, ref: MaterialRef, hash_name: str, data: bytes) -> bytes:
    digest_mech, mgf = HASH_MECHANISMS[hash_name]
    key = _find(pooled, ref, ObjectClass.PUBLIC_KEY)
    ciphertext: bytes = key.encrypt(
        data, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=(digest_mech, mgf, None)
    )
    return ciphertext


def rsa_decrypt(pooled: PooledSession, ref: MaterialRef, hash_name: str, data: bytes) -> bytes:
    digest_mech, mgf = HASH_MECHANISMS[hash_name]
    key = _find(pooled, ref, ObjectClass.PRIVATE_KEY)
    plaintext: bytes = key.decrypt(
        data, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=(digest_mech, mgf, None)
    )
    return plaintext


def oaep_supported(pooled: PooledSession, hash_name: str) -> bool:
    """Probe: does the token decrypt OAEP with this hash? (SoftHSM2 2.6: SHA-1 only.)"""
    public, private = generate(pooled, None, RsaPair(1024, decrypt=True, sign=False))
    try:
        digest_mech, mgf = HASH_MECHANISMS[hash_name]
        ciphertext = public.encrypt(
            b"probe", mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=(digest_mech, mgf, None)
        )
        return bool(
            private.decrypt(
                ciphertext,
                mechanism=Mechanism.RSA_PKCS_OAEP,
                mechanism_param=(digest_mech, mgf, None),
            )
            == b"probe"
        )
    except Exception:  # any refusal means "not supported"; the reason is not needed
        return False
    finally:
        public.destroy()
        private.destroy()


def hmac(pooled: PooledSession, ref: MaterialRef, hash_name: str, message: bytes) -> bytes:
    key = _find(pooled, ref, ObjectClass.SECRET_KEY)
    mac: bytes = key.sign(message, mechanism=HMAC_MECHANISMS[hash_name])
    return mac


def hmac_verify(
    pooled: PooledSession, ref: MaterialRef, hash_name: str, message: bytes, mac: bytes
) -> bool:
    key = _find(pooled, ref, ObjectClass.SECRET_KEY)
    valid: bool = key.verify(message, mac, mechanism=HMAC_MECHANISMS[hash_name])
    return valid


def ecdh(pooled: PooledSession, ref: MaterialRef, peer_point: bytes, length: int) -> bytes:
    """The raw ECDH shared secret (x coordinate), derived inside the token. It is the
    operation's output, so the derived session object is readable and then destroyed."""
    key = _find(pooled, ref, ObjectClass.PRIVATE_KEY)
    derived = key.derive_key(
        KeyType.GENERIC_SECRET, length * 8,
        mechanism_param=(KDF.NULL, None, peer_point),
        template={Attribute.TOKEN: False, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
    )  # fmt: skip
    try:
        secret: bytes = derived[Attribute.VALUE]
        return secret
    finally:
        derived.destroy()


def _ed25519_private(value: bytes, public_key: ed25519.Ed25519PublicKey) -> Any:
    """An Ed25519 private key from CKA_VALUE (the 32-byte seed of RFC 8032; some tokens
    wrap it in a DER OCTET STRING), checked against the token's public half."""
    seed = _octets(value) if len(value) == 34 and value[:2] == b"\x04\x20" else value
    private_key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if private_key.public_key().public_bytes(*raw) != public_key.public_bytes(*raw):
        raise ValueError("the token's Ed25519 private value does not match its public key")
    return private_key


def data_key_pair(pooled: PooledSession, kind: RsaPair | EcPair | EdPair) -> tuple[bytes, bytes]:
    """A key pair made by the token's generator as session objects, returned as
    (PKCS#8 DER private key, SubjectPublicKeyInfo DER). Data key pairs are for the
    caller, so these objects are extractable by design; they are destroyed here."""
    public, private = generate(pooled, None, kind)
    try:
        public_key = _public_key(public)
        if isinstance(kind, RsaPair):
            p, q, d, dmp1, dmq1, iqmp = (int.from_bytes(private[a], "big") for a in (
                Attribute.PRIME_1, Attribute.PRIME_2, Attribute.PRIVATE_EXPONENT,
                Attribute.EXPONENT_1, Attribute.EXPONENT_2, Attribute.COEFFICIENT,
            ))  # fmt: skip
            numbers = rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, public_key.public_numbers())
            private_key: Any = numbers.private_key()
        elif isinstance(kind, EdPair):
            private_key = _ed25519_private(bytes(private[Attribute.VALUE]), public_key)
        else:
            value = int.from_bytes(private[Attribute.VALUE], "big")
            private_key = ec.derive_private_key(value, CURVES[kind.curve_oid])
        return (
            private_key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    finally:
        public.destroy()
        private.destroy()
