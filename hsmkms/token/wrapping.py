"""Key wrapping inside the token: which mechanisms really do what, and templates
for material that arrives wrapped.

Tokens disagree on mechanism numbers: SoftHSM2's CKM_AES_KEY_WRAP_PAD (0x210A)
is RFC 5649, while NSS's 0x210A is PKCS#7 padding + RFC 3394 and RFC 5649 is
CKM_AES_KEY_WRAP_KWP (0x210B). So RFC 5649 is probed with a known vector, never
assumed. Probes use throwaway session keys with public test values only.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from pkcs11 import DEFAULT, MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error

from hsmkms.errors import UnsupportedOperationException
from hsmkms.token.pool import PooledSession
from hsmkms.token.publics import rsa_public_of

if TYPE_CHECKING:
    from hsmkms.token.interface import Token

# Public test values for the RFC 5649 probe (not secrets: they only name a format).
# Wrapping is compared on a multiple of 8 bytes: SoftHSM2 2.6 zero-pads key data to a
# multiple of 8 before wrapping (so its MLI counts the zeros), which no unwrapper
# notices for secrets but breaks an exact comparison. Unwrapping is checked on a
# length that needs the RFC 5649 padding.
_PROBE_KEK = bytes(range(32))
_PROBE_WRAPPED = bytes(range(0x40, 0x40 + 24))
_PROBE_UNWRAPPED = bytes(range(0x60, 0x60 + 20))
RFC5649_CANDIDATES = (Mechanism.AES_KEY_WRAP_KWP, Mechanism.AES_KEY_WRAP_PAD)
OAEP_HASHES = {"SHA1": (Mechanism.SHA_1, MGF.SHA1), "SHA256": (Mechanism.SHA256, MGF.SHA256)}
_SOFTWARE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA1": hashes.SHA1,
    "SHA256": hashes.SHA256,
}
# Usage attributes by object class. Unwrap and generate templates name each usage the
# class has (False unless asked: token defaults differ, SoftHSM2's are mostly True) and
# leave out the rest: python-pkcs11's defaults name them all, and tokens refuse e.g.
# CKA_ENCRYPT on a private key (AttributeTypeInvalid).
_ALL_USAGES = (
    Attribute.ENCRYPT, Attribute.DECRYPT, Attribute.SIGN, Attribute.VERIFY,
    Attribute.WRAP, Attribute.UNWRAP, Attribute.DERIVE,
)  # fmt: skip
_USAGES = {
    ObjectClass.SECRET_KEY: _ALL_USAGES,
    ObjectClass.PRIVATE_KEY: (Attribute.DECRYPT, Attribute.SIGN, Attribute.UNWRAP,
                              Attribute.DERIVE),
    ObjectClass.PUBLIC_KEY: (Attribute.ENCRYPT, Attribute.VERIFY, Attribute.WRAP,
                             Attribute.DERIVE),
}  # fmt: skip


def oaep_param(hash_name: str) -> tuple[Mechanism, MGF, None]:
    digest, mgf = OAEP_HASHES[hash_name]
    return digest, mgf, None


def software_oaep(hash_name: str) -> padding.OAEP:
    algorithm = _SOFTWARE_HASHES[hash_name]()
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)


def key_template(object_class: ObjectClass, **attributes: Any) -> dict[Any, Any]:
    """A template naming exactly the given attributes and the class's usages."""
    template: dict[Any, Any] = dict.fromkeys(_ALL_USAGES, DEFAULT)
    template.update(dict.fromkeys(_USAGES[object_class], False))
    template.update({Attribute[name.upper()]: value for name, value in attributes.items()})
    return template


def session_key(object_class: ObjectClass = ObjectClass.SECRET_KEY, **attributes: Any) -> Any:
    """A session key that is sensitive and usable only as told."""
    return key_template(object_class, token=False, private=True, sensitive=True, **attributes)


@dataclass(frozen=True)
class Rfc5649:
    """The mechanism that does RFC 5649 on a token, per direction (None: cannot)."""

    unwrap: Mechanism | None
    wrap: Mechanism | None


@dataclass
class WrapCapabilities:
    """What one token can do for key wrapping, probed once per Hsm."""

    rfc5649: Rfc5649 | None = None
    oaep_unwrap: dict[str, bool] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_capabilities: weakref.WeakKeyDictionary[Token, WrapCapabilities] = weakref.WeakKeyDictionary()
_capabilities_lock = threading.Lock()


def capabilities(hsm: Token) -> WrapCapabilities:
    with _capabilities_lock:
        found = _capabilities.get(hsm)
        if found is None:
            found = _capabilities[hsm] = WrapCapabilities()
        return found


def rfc5649(hsm: Token) -> Rfc5649:
    """Which mechanism does RFC 5649 (AES key wrap with padding) on this token, probed
    once. Directions can differ: NSS 3.87 unwraps with CKM_AES_KEY_WRAP_KWP, but its
    C_WrapKey size query is too small and python-pkcs11 fails with "Buffer was too small"."""
    caps = capabilities(hsm)
    with caps.lock:
        if caps.rfc5649 is None:
            offered = [m for m in RFC5649_CANDIDATES if m in hsm.mechanisms]
            caps.rfc5649 = hsm.run(lambda pooled: _probe_rfc5649(pooled, offered))
        return caps.rfc5649


def _probe_rfc5649(pooled: PooledSession, offered: list[Mechanism]) -> Rfc5649:
    session = pooled.session
    kek = session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
        Attribute.VALUE: _PROBE_KEK, Attribute.TOKEN: False, Attribute.SENSITIVE: False,
        Attribute.EXTRACTABLE: False, Attribute.WRAP: True, Attribute.UNWRAP: True,
    })  # fmt: skip
    target = session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.VALUE: _PROBE_WRAPPED, Attribute.TOKEN: False, Attribute.SENSITIVE: False,
        Attribute.EXTRACTABLE: True,
    })  # fmt: skip
    try:
        unwrap = next((m for m in offered if _unwraps_rfc5649(kek, m)), None)
        wrap = next((m for m in offered if _wraps_rfc5649(kek, target, m)), None)
        return Rfc5649(unwrap, wrap)
    finally:
        kek.destroy()
        target.destroy()


def _wraps_rfc5649(kek: Any, target: Any, mechanism: Mechanism) -> bool:
    expected = aes_key_wrap_with_padding(_PROBE_KEK, _PROBE_WRAPPED)
    try:
        # Another output: same number, another format (NSS's 0x210A: PKCS#7 + RFC 3394).
        return bool(kek.wrap_key(target, mechanism=mechanism) == expected)
    except PKCS11Error:
        return False


def _unwraps_rfc5649(kek: Any, mechanism: Mechanism) -> bool:
    try:
        unwrapped = kek.unwrap_key(
            ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET,
            aes_key_wrap_with_padding(_PROBE_KEK, _PROBE_UNWRAPPED), mechanism=mechanism,
            template={Attribute.TOKEN: False, Attribute.SENSITIVE: False,
                      Attribute.EXTRACTABLE: True},
        )  # fmt: skip
    except PKCS11Error:
        return False
    try:
        return bytes(unwrapped[Attribute.VALUE]) == _PROBE_UNWRAPPED
    finally:
        unwrapped.destroy()


def oaep_unwrap_supported(hsm: Token, hash_name: str) -> bool:
    """Whether C_UnwrapKey with RSA-OAEP and this hash works (SoftHSM2 2.6: SHA-1 only)."""
    caps = capabilities(hsm)
    with caps.lock:
        if hash_name not in caps.oaep_unwrap:
            needed = (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS_OAEP)
            caps.oaep_unwrap[hash_name] = all(m in hsm.mechanisms for m in needed) and hsm.run(
                lambda pooled: _probe_oaep_unwrap(pooled, hash_name)
            )
        return caps.oaep_unwrap[hash_name]


def _probe_oaep_unwrap(pooled: PooledSession, hash_name: str) -> bool:
    public, private = pooled.session.generate_keypair(
        KeyType.RSA, 1024, store=False,
        public_template=key_template(
            ObjectClass.PUBLIC_KEY, token=False, encrypt=True, public_exponent=b"\x01\x00\x01"
        ),
        private_template=session_key(ObjectClass.PRIVATE_KEY, unwrap=True, extractable=False),
    )  # fmt: skip
    try:
        blob = rsa_public_of(private).encrypt(bytes(32), software_oaep(hash_name))
        key = private.unwrap_key(
            ObjectClass.SECRET_KEY, KeyType.AES, blob, mechanism=Mechanism.RSA_PKCS_OAEP,
            mechanism_param=oaep_param(hash_name), template=session_key(encrypt=True),
        )  # fmt: skip
        key.destroy()
        return True
    except PKCS11Error:  # the token refused this hash: not supported
        return False
    finally:
        public.destroy()
        private.destroy()


def secret_length(pooled: PooledSession, key: Any, wrap: Mechanism | None) -> range:
    """The possible lengths of an extractable secret, measured inside the token: its
    CKA_VALUE_LEN, or (SoftHSM2 leaves that 0 on unwrapped keys) the length of its
    RFC 5649 wrapping under a throwaway key the token generated, which gives the length
    rounded up to 8. The value itself never leaves the token."""
    exact = int(key[Attribute.VALUE_LEN] or 0)
    if exact:
        return range(exact, exact + 1)
    if wrap is None:
        raise UnsupportedOperationException(
            "The token can measure unwrapped material neither by CKA_VALUE_LEN nor by "
            "wrapping it (RFC 5649)."
        )
    kek = pooled.session.generate_key(
        KeyType.AES, 256, store=False, template=session_key(wrap=True, extractable=False)
    )
    try:
        padded = len(kek.wrap_key(key, mechanism=wrap)) - 8
    finally:
        with contextlib.suppress(PKCS11Error):
            kek.destroy()
    return range(padded - 7, padded + 1)
