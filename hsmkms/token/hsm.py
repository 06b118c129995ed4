"""The token as the rest of hsmkms sees it: named key material and operations on it.

Nothing above this package touches python-pkcs11. Every call runs on a pooled
session; a transient fault (session or device gone) re-opens sessions and the
call is tried once more; any other fault becomes a KMS error at once. A fault
while the token itself is gone makes the link reconnect later (token/link.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.exceptions import PKCS11Error
from pkcs11.mechanisms import GCMParams

from hsmkms.errors import InvalidCiphertextException
from hsmkms.token import asymmetric, lookup
from hsmkms.token.faults import TokenNotFound, to_kms_error
from hsmkms.token.kinds import Aes, EcPair, EdPair, MaterialKind, RsaPair
from hsmkms.token.library import first_find, opened
from hsmkms.token.link import TokenLink
from hsmkms.token.mechanisms import MechanismSet
from hsmkms.token.pool import PooledSession, SessionPool
from hsmkms.token.quirks import Quirks
from hsmkms.token.templates import (
    LABEL_PREFIX,
    Custody,
    MaterialRef,
    ObjectName,
    secret_key_template,
)

T = TypeVar("T")

GCM_IV_BYTES = 12
GCM_TAG_BITS = 128
# What tokens return for an RSA ciphertext that does not decrypt under the key.
RSA_DECRYPT_FAILURES = (
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.DataInvalid,
    p11.DataLenRange,
    p11.GeneralError,
)
# What tokens return when a GCM tag does not verify: SoftHSM2 says CKR_GENERAL_ERROR,
# others CKR_ENCRYPTED_DATA_INVALID or CKR_DATA_INVALID. All mean "not authentic" here,
# because the key handle and mechanism were just used successfully by encrypt.
GCM_AUTH_FAILURES = (
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.DataInvalid,
    p11.DataLenRange,
    p11.GeneralError,
)


@dataclass(frozen=True)
class TokenInfo:
    """What the token says about itself (CK_TOKEN_INFO), for health reports."""

    label: str
    manufacturer: str
    model: str
    serial: str
    firmware: str


@dataclass(frozen=True)
class ObjectFacts:
    """The security attributes of one token object, as the token reports them."""

    label: str
    object_class: str
    token: bool
    private: bool
    sensitive: bool
    extractable: bool
    always_sensitive: bool
    never_extractable: bool
    local: bool


_FLAGS = {
    "token": Attribute.TOKEN,
    "private": Attribute.PRIVATE,
    "sensitive": Attribute.SENSITIVE,
    "extractable": Attribute.EXTRACTABLE,
    "always_sensitive": Attribute.ALWAYS_SENSITIVE,
    "never_extractable": Attribute.NEVER_EXTRACTABLE,
    "local": Attribute.LOCAL,
}


def _flag(obj: Any, attribute: Attribute) -> bool:
    """A boolean attribute; False where it does not apply (public keys are not sensitive)."""
    try:
        return bool(obj[attribute])
    except p11.AttributeTypeInvalid:
        return False


class Hsm:
    def __init__(
        self,
        module_path: str,
        token_label: str,
        pin: str | None,
        pool_size: int,
        call_timeout: float | None = None,
        init_params: str | None = None,
    ) -> None:
        """call_timeout: seconds after which a token call that has not returned loses
        its session (retired, see SessionPool); None waits for ever. init_params: the
        module's C_Initialize string (NSS softokn's configdir)."""
        token = first_find(module_path, token_label, init_params)
        if token is None:
            raise TokenNotFound(f"no PKCS#11 token labelled {token_label!r}; run `hsmkms init`")
        self.token_label = token_label
        self.module_path = module_path
        # Custody of new material: Custody.DOMAIN once the token holds a security domain key.
        self.custody = Custody.NEVER_EXTRACTABLE
        serial = token.serial
        self.info = TokenInfo(
            label=token_label,
            manufacturer=str(token.manufacturer_id).strip(),
            model=str(token.model).strip(),
            serial=(
                serial.decode(errors="replace") if isinstance(serial, bytes) else str(serial)
            ).strip(),
            firmware=".".join(str(part) for part in token.firmware_version),
        )
        self.mechanisms = MechanismSet(token.slot)
        self._oaep: dict[str, bool] = {}
        self.quirks = Quirks(module_path)
        try:
            self.link = TokenLink(module_path, token, pin, pool_size, call_timeout)
        except PKCS11Error as exc:
            raise to_kms_error(exc) from exc
        self._module_path = module_path
        opened(module_path, +1)

    @property
    def pool(self) -> SessionPool:
        return self.link.pool

    def close(self) -> None:
        if self._module_path:
            opened(self._module_path, -1)
            self._module_path = ""
        self.pool.close()

    # -- plumbing ---------------------------------------------------------------

    def run(self, work: Callable[[PooledSession], T]) -> T:
        """Run token work on a pooled session (for token/ modules beside this one)."""
        return self._call(work)

    def _call(self, work: Callable[[PooledSession], T]) -> T:
        return self.link.run(work)

    def probe(self) -> None:
        """For health checks: the token is there and answers (KMS error if not)."""

        def check(pooled: PooledSession) -> None:
            if not self.link.present():
                raise p11.TokenNotPresent()
            pooled.session.generate_random(8)

        self._call(check)

    @staticmethod
    def _secret(pooled: PooledSession, ref: ObjectName) -> Any:
        key = pooled.objects.get(ref)
        if key is None:
            key = lookup.find_one(pooled.session, ref, ObjectClass.SECRET_KEY)
            pooled.objects[ref] = key
        return key

    # -- key material -------------------------------------------------------------

    def generate_aes_key(
        self, ref: ObjectName, bits: int = 256, custody: Custody | None = None
    ) -> None:
        self.mechanisms.require(Mechanism.AES_KEY_GEN, Mechanism.AES_GCM)
        chosen = custody or self.custody
        template = secret_key_template(ref, encrypt=True, sign=False, custody=chosen)

        def generate(pooled: PooledSession) -> None:
            pooled.session.generate_key(
                KeyType.AES, bits, store=True, label=ref.label, id=ref.cka_id, template=template
            )

        self._call(generate)

    def destroy(self, ref: ObjectName) -> int:
        """Destroy every object named by ref; returns how many there were."""

        def destroy(pooled: PooledSession) -> int:
            objects = lookup.find_all(pooled.session, {Attribute.LABEL: ref.label})
            for obj in objects:
                obj.destroy()
            return len(objects)

        count = self._call(destroy)
        self.pool.forget_object(ref)
        return count

    def require(self, kind: MaterialKind) -> None:
        """UnsupportedOperationException naming what the token lacks for this material."""
        self.mechanisms.require(*asymmetric.required_mechanisms(kind))
        if isinstance(kind, EcPair):
            self._call(lambda pooled: self.quirks.require_curve(pooled, kind))

    def generate(
        self, ref: MaterialRef, kind: MaterialKind, custody: Custody | None = None
    ) -> None:
        """Create the key material (one object, or a public/private pair) in the token."""
        self.require(kind)
        chosen = custody or self.custody
        if isinstance(kind, Aes):
            self.generate_aes_key(ref, kind.bits, chosen)
            return
        self._call(lambda pooled: asymmetric.generate(pooled, ref, kind, chosen))

    def public_key_der(self, ref: MaterialRef) -> bytes:
        return self._call(lambda pooled: asymmetric.public_key_der(pooled, ref))

    def sign(self, ref: MaterialRef, scheme: str, hash_name: str, data: bytes) -> bytes:
        return self._call(lambda pooled: asymmetric.sign(pooled, ref, scheme, hash_name, data))

    def verify(
        self, ref: MaterialRef, scheme: str, hash_name: str, data: bytes, signature: bytes
    ) -> bool:
        return self._call(
            lambda pooled: self.quirks.signature_verify(
                pooled, ref, scheme, hash_name, data, signature
            )
        )

    def rsa_encrypt(self, ref: MaterialRef, hash_name: str, data: bytes) -> bytes:
        return self._call(lambda pooled: asymmetric.rsa_encrypt(pooled, ref, hash_name, data))

    def rsa_decrypt(self, ref: MaterialRef, hash_name: str, data: bytes) -> bytes:
        def decrypt(pooled: PooledSession) -> bytes:
            try:
                return asymmetric.rsa_decrypt(pooled, ref, hash_name, data)
            except RSA_DECRYPT_FAILURES as exc:
                raise InvalidCiphertextException() from exc

        return self._call(decrypt)

    def oaep_supported(self, hash_name: str) -> bool:
        """Whether the token decrypts RSA-OAEP with this hash (probed once)."""
        if hash_name not in self._oaep:
            self._oaep[hash_name] = self._call(
                lambda pooled: asymmetric.oaep_supported(pooled, hash_name)
            )
        return self._oaep[hash_name]

    def hmac(self, ref: MaterialRef, hash_name: str, message: bytes) -> bytes:
        return self._call(lambda pooled: asymmetric.hmac(pooled, ref, hash_name, message))

    def hmac_verify(self, ref: MaterialRef, hash_name: str, message: bytes, mac: bytes) -> bool:
        return self._call(
            lambda pooled: self.quirks.hmac_verify(pooled, ref, hash_name, message, mac)
        )

    def ecdh(self, ref: MaterialRef, peer_point: bytes, length: int) -> bytes:
        return self._call(lambda pooled: asymmetric.ecdh(pooled, ref, peer_point, length))

    def data_key_pair(self, kind: RsaPair | EcPair | EdPair) -> tuple[bytes, bytes]:
        self.mechanisms.require(*asymmetric.required_mechanisms(kind)[:1])
        if isinstance(kind, EcPair):
            self._call(lambda pooled: self.quirks.require_curve(pooled, kind))
        return self._call(lambda pooled: asymmetric.data_key_pair(pooled, kind))

    def ensure_aes_key(self, ref: ObjectName) -> None:
        """Create the key unless the token already holds one by that label."""
        if not self.facts(ref):
            self.generate_aes_key(ref)

    def reports_cka_local(self) -> bool:
        """Whether the token marks keys it generated with CKA_LOCAL (NSS never does)."""
        return self._call(self.quirks.reports_local)

    def material_refs(self) -> set[MaterialRef]:
        """Every key-material version hsmkms has in the token, by label."""
        return set(self.material_census())

    def material_census(self) -> dict[MaterialRef, int]:
        """Every key-material version hsmkms has in the token: how many secret-key or
        private-key objects carry its name (more than one: a lost race to repair)."""

        def scan(pooled: PooledSession) -> dict[MaterialRef, int]:
            counts: dict[MaterialRef, int] = {}
            for obj in lookup.find_all(pooled.session, {}):
                try:
                    label = obj[Attribute.LABEL]
                    public = obj[Attribute.CLASS] == ObjectClass.PUBLIC_KEY
                except PKCS11Error:
                    continue
                if isinstance(label, str) and label.startswith(LABEL_PREFIX):
                    ref = MaterialRef.from_label(label)
                    if ref is not None:
                        counts[ref] = counts.get(ref, 0) + (0 if public else 1)
            # A vanished token answers searches with nothing: never report that as
            # every object missing.
            if not self.link.present():
                raise p11.TokenNotPresent()
            return counts

        return self._call(scan)

    def check_values(self, ref: ObjectName) -> list[bytes | None]:
        """The fingerprint (CKA_CHECK_VALUE) of each secret key named by ref."""
        return self._call(lambda pooled: lookup.secret_check_values(pooled.session, ref))

    def keep_only(self, ref: ObjectName, check_value: bytes) -> int:
        """Destroy the secret keys named by ref except the one with this fingerprint."""
        count = self._call(lambda pooled: lookup.keep_only(pooled.session, ref, check_value))
        self.pool.forget_object(ref)
        return count

    def facts(self, ref: ObjectName) -> list[ObjectFacts]:
        def read(pooled: PooledSession) -> list[ObjectFacts]:
            found = []
            for obj in lookup.find_all(pooled.session, {Attribute.LABEL: ref.label}):
                found.append(
                    ObjectFacts(
                        label=obj[Attribute.LABEL],
                        object_class=ObjectClass(obj[Attribute.CLASS]).name,
                        **{name: _flag(obj, attribute) for name, attribute in _FLAGS.items()},
                    )
                )
            return found

        return self._call(read)

    # -- operations -----------------------------------------------------------------

    def random(self, count: int) -> bytes:
        def draw(pooled: PooledSession) -> bytes:
            data: bytes = pooled.session.generate_random(count * 8)
            return data

        return self._call(draw)

    def gcm_encrypt(self, ref: ObjectName, aad: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
        """AES-GCM inside the token with a fresh IV from the token's RNG: (iv, ct||tag)."""

        def encrypt(pooled: PooledSession) -> tuple[bytes, bytes]:
            iv = pooled.random_bytes(GCM_IV_BYTES)
            key = self._secret(pooled, ref)
            direct = self.quirks.gcm_encrypt(pooled, key, iv, aad, plaintext)
            if direct is not None:
                return direct
            body = key.encrypt(
                plaintext,
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(iv, aad, GCM_TAG_BITS),
            )
            return iv, body

        return self._call(encrypt)

    def gcm_decrypt(self, ref: ObjectName, iv: bytes, aad: bytes, body: bytes) -> bytes:
        """AES-GCM decrypt inside the token. A version with duplicate objects (an older
        release's lost rotation race) is decrypted by whichever one authenticates."""

        def decrypt(pooled: PooledSession) -> bytes:
            try:
                keys = [self._secret(pooled, ref)]
            except lookup.DuplicateMaterial:
                keys = lookup.find_named(pooled.session, ref, ObjectClass.SECRET_KEY)
            for key in keys:
                with contextlib.suppress(*GCM_AUTH_FAILURES):
                    plaintext: bytes = key.decrypt(
                        body,
                        mechanism=Mechanism.AES_GCM,
                        mechanism_param=GCMParams(iv, aad, GCM_TAG_BITS),
                    )
                    return plaintext
            raise InvalidCiphertextException()

        return self._call(decrypt)
