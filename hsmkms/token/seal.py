"""The seal that makes a whole backup file tamper-evident.

A fresh HMAC-SHA256 key is generated in the token as a session object with domain
custody, MACs the file's payload, and is wrapped under the security domain key (RFC 3394,
CKM_AES_KEY_WRAP, the same mechanism on every token) into the file. Only a token of the
same domain can unwrap it, so only such a token can check the seal, and nobody without the
domain key can recompute it after editing the payload. The MAC key is destroyed at once on
both sides; its value never reaches Python.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass
from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from hsmkms.errors import KMSInvalidStateException, ValidationException
from hsmkms.token.domain import domain_key
from hsmkms.token.interface import Token
from hsmkms.token.pool import PooledSession
from hsmkms.token.templates import Custody, custody_attributes

_CONTEXT = b"hsmkms backup seal v1\0"
_WRAP = Mechanism.AES_KEY_WRAP
_MAC = Mechanism.SHA256_HMAC


@dataclass(frozen=True)
class Seal:
    domain_id: str
    wrapped_key: bytes
    mac: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain_id,
            "mac_key": base64.b64encode(self.wrapped_key).decode(),
            "mac": self.mac.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Seal:
        return cls(
            str(data["domain"]),
            base64.b64decode(data["mac_key"], validate=True),
            bytes.fromhex(data["mac"]),
        )


def seal(hsm: Token, payload: bytes) -> Seal:
    hsm.mechanisms.require(Mechanism.GENERIC_SECRET_KEY_GEN, _MAC, _WRAP)

    def work(pooled: PooledSession) -> Seal:
        kek, domain_id = domain_key(pooled)
        key = pooled.session.generate_key(
            KeyType.GENERIC_SECRET, 256, store=False,
            template={
                Attribute.TOKEN: False, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True,
                Attribute.WRAP_WITH_TRUSTED: True, Attribute.SIGN: True, Attribute.VERIFY: False,
            },
        )  # fmt: skip
        try:
            mac = bytes(key.sign(_CONTEXT + payload, mechanism=_MAC))
            wrapped = bytes(kek.wrap_key(key, mechanism=_WRAP))
        finally:
            key.destroy()
        return Seal(domain_id, wrapped, mac)

    return hsm.run(work)


def verify(hsm: Token, payload: bytes, found: Seal) -> None:
    """ValidationException unless the payload is exactly what the seal was made over."""

    def work(pooled: PooledSession) -> bytes:
        kek, domain_id = domain_key(pooled)
        if domain_id != found.domain_id:
            raise KMSInvalidStateException(
                f"The backup was made in security domain {found.domain_id}; this token "
                f"belongs to {domain_id}."
            )
        try:
            key = kek.unwrap_key(
                ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, found.wrapped_key,
                mechanism=_WRAP,
                # Domain custody: what the domain key's CKA_UNWRAP_TEMPLATE makes of it.
                template={
                    Attribute.TOKEN: False, Attribute.SIGN: True,
                    **custody_attributes(Custody.DOMAIN),
                },
            )  # fmt: skip
        except (p11.WrappedKeyInvalid, p11.WrappedKeyLenRange, p11.GeneralError) as exc:
            raise ValidationException("The backup's seal is damaged.") from exc
        try:
            return bytes(key.sign(_CONTEXT + payload, mechanism=_MAC))
        finally:
            key.destroy()

    if not hmac.compare_digest(hsm.run(work), found.mac):
        raise ValidationException("The backup file was altered: its seal does not match.")
