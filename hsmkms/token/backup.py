"""Key material wrapped under the security domain key (backup, restore, replication).

A secret or private key made with Custody.DOMAIN is wrapped by the token with RFC 5649
under the domain key (C_WrapKey) and unwrapped by another token of the same domain
(C_UnwrapKey) with the same custody attributes, label and CKA_ID. Public halves travel
as their public values. Plaintext material never passes through Python.
"""

from __future__ import annotations

import base64
import threading
import weakref
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11 import exceptions as p11

from hsmkms.errors import (
    AlreadyExistsException,
    KMSError,
    KMSInvalidStateException,
    UnsupportedOperationException,
)
from hsmkms.token import asymmetric, lookup
from hsmkms.token.domain import domain_key
from hsmkms.token.pool import PooledSession
from hsmkms.token.publics import create_public
from hsmkms.token.templates import (
    Custody,
    InternalRef,
    MaterialRef,
    ObjectName,
    custody_attributes,
)
from hsmkms.token.wrapping import key_template, rfc5649

if TYPE_CHECKING:
    from hsmkms.token.interface import Token

FORMAT = 1
_USAGES = {
    ObjectClass.SECRET_KEY: ("encrypt", "decrypt", "sign", "verify", "wrap", "unwrap", "derive"),
    ObjectClass.PRIVATE_KEY: ("decrypt", "sign", "unwrap", "derive"),
    ObjectClass.PUBLIC_KEY: ("encrypt", "verify"),
}


@dataclass(frozen=True)
class WrappedMaterial:
    """One key-material version, wrapped under a domain key: JSON-able via to_json."""

    domain_id: str
    label: str
    cka_id: bytes
    object_class: str  # SECRET_KEY or PRIVATE_KEY
    key_type: str  # AES, GENERIC_SECRET, RSA, EC, EC_EDWARDS
    usages: tuple[str, ...]
    wrapped: bytes
    public_key: bytes | None = None  # SubjectPublicKeyInfo DER of a key pair
    public_usages: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "domain": self.domain_id, "label": self.label,
            "id": self.cka_id.hex(), "class": self.object_class, "key_type": self.key_type,
            "usages": list(self.usages), "wrapped": base64.b64encode(self.wrapped).decode(),
            "public_key": base64.b64encode(self.public_key).decode() if self.public_key else None,
            "public_usages": list(self.public_usages),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WrappedMaterial:
        if data.get("format") != FORMAT:
            raise ValueError("not a wrapped-material record of a known format")
        public = data.get("public_key")
        return cls(
            domain_id=str(data["domain"]), label=str(data["label"]),
            cka_id=bytes.fromhex(data["id"]), object_class=str(data["class"]),
            key_type=str(data["key_type"]), usages=tuple(data["usages"]),
            wrapped=base64.b64decode(data["wrapped"]),
            public_key=base64.b64decode(public) if public else None,
            public_usages=tuple(data.get("public_usages", ())),
        )  # fmt: skip


def _name(named: ObjectName | WrappedMaterial) -> dict[Attribute, Any]:
    """Label and CKA_ID: internal objects may share a label (the audit keys do)."""
    return {Attribute.LABEL: named.label, Attribute.ID: named.cka_id}


def holds(hsm: Token, material: WrappedMaterial) -> bool:
    """Whether the token has an object with this material's label and CKA_ID."""
    return bool(hsm.run(lambda pooled: lookup.find_all(pooled.session, _name(material))))


def discard(hsm: Token, material: WrappedMaterial) -> None:
    """Destroy what unwrap_material made of it (a restore that fails half-way)."""

    def destroy(pooled: PooledSession) -> None:
        for obj in lookup.find_all(pooled.session, _name(material)):
            obj.destroy()

    hsm.run(destroy)
    name = MaterialRef.from_label(material.label)
    hsm.pool.forget_object(name or InternalRef(material.label, material.cka_id))


def _usages(obj: Any, object_class: ObjectClass) -> tuple[str, ...]:
    return tuple(u for u in _USAGES[object_class] if obj[Attribute[u.upper()]])


def _mechanism(hsm: Token, direction: str) -> Any:
    mechanism = getattr(rfc5649(hsm), direction)
    if mechanism is None:
        raise UnsupportedOperationException(
            f"The token cannot {direction} with AES key wrap with padding (RFC 5649)."
        )
    return mechanism


def wrap_material(hsm: Token, ref: ObjectName) -> WrappedMaterial:
    """Wrap one material version (its secret or private key) under the domain key."""
    hsm.run(domain_key)  # first: no domain is the more basic refusal
    mechanism = _mechanism(hsm, "wrap")

    def wrap(pooled: PooledSession) -> WrappedMaterial:
        kek, domain_id = domain_key(pooled)
        found = [
            obj for obj in lookup.find_all(pooled.session, _name(ref))
            if obj[Attribute.CLASS] in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY)
        ]  # fmt: skip
        if len(found) != 1:
            raise KMSInvalidStateException(f"{len(found)} secret/private objects for {ref.label}.")
        key = found[0]
        object_class = ObjectClass(key[Attribute.CLASS])
        key_type = KeyType(key[Attribute.KEY_TYPE])
        try:
            wrapped = bytes(kek.wrap_key(key, mechanism=mechanism))
        except p11.KeyUnextractable as exc:
            raise UnsupportedOperationException(
                "This key material was made never-extractable (before the security domain "
                "existed) and cannot leave the token."
            ) from exc
        except p11.KeyNotWrappable as exc:
            raise UnsupportedOperationException(
                f"The token cannot wrap {key_type.name} {object_class.name} objects."
            ) from exc
        public_key: bytes | None = None
        public_usages: tuple[str, ...] = ()
        if object_class == ObjectClass.PRIVATE_KEY:
            assert isinstance(ref, MaterialRef), "key pairs are KMS key material"
            public_key = asymmetric.public_key_der(pooled, ref)
            public = pooled.session.get_key(
                object_class=ObjectClass.PUBLIC_KEY, label=ref.label, id=ref.cka_id
            )
            public_usages = _usages(public, ObjectClass.PUBLIC_KEY)
        return WrappedMaterial(
            domain_id, ref.label, bytes(key[Attribute.ID]), object_class.name, key_type.name,
            _usages(key, object_class), wrapped, public_key, public_usages,
        )  # fmt: skip

    return hsm.run(wrap)


def unwrap_material(hsm: Token, material: WrappedMaterial) -> None:
    """Recreate wrapped material in this token (same domain): Custody.DOMAIN attributes,
    the same label, CKA_ID and usages, and the public object of a key pair."""
    mechanism = _mechanism(hsm, "unwrap")
    object_class = ObjectClass[material.object_class]
    key_type = KeyType[material.key_type]

    def unwrap(pooled: PooledSession) -> None:
        kek, domain_id = domain_key(pooled)
        if domain_id != material.domain_id:
            raise KMSInvalidStateException(
                f"The material was wrapped in security domain {material.domain_id}; "
                f"this token belongs to {domain_id}."
            )
        if lookup.find_all(pooled.session, _name(material)):
            raise AlreadyExistsException(f"The token already holds {material.label}.")
        template = {
            **key_template(object_class, token=True, private=True, label=material.label,
                           id=material.cka_id, **dict.fromkeys(material.usages, True)),
            **custody_attributes(Custody.DOMAIN),
        }  # fmt: skip
        try:
            key = kek.unwrap_key(
                object_class, key_type, material.wrapped, mechanism=mechanism, template=template
            )
        except (p11.WrappedKeyInvalid, p11.WrappedKeyLenRange, p11.GeneralError) as exc:
            raise KMSInvalidStateException("The wrapped material does not unwrap here.") from exc
        if material.public_key is None:
            return
        try:
            uses = set(material.public_usages)
            create_public(
                pooled.session, material.label, material.cka_id, material.public_key,
                verify="verify" in uses, encrypt="encrypt" in uses,
            )  # fmt: skip
        except BaseException:
            key.destroy()
            raise

    hsm.run(unwrap)


_refusals: weakref.WeakKeyDictionary[Token, dict[Hashable, str | None]] = (
    weakref.WeakKeyDictionary()
)
_refusals_lock = threading.Lock()


def carry_refusal(hsm: Token, ref: MaterialRef, kind: Hashable) -> str | None:
    """Why a backup could not carry this material (None: it could). Found out by
    wrapping the first object of each kind under the domain key (the wrapped copy is
    dropped: it is what a backup would hold) and kept for the token. SoftHSM2 2.6, for
    one, cannot wrap Ed25519 private keys."""
    with _refusals_lock:
        known = _refusals.setdefault(hsm, {})
        if kind in known:
            return known[kind]
    try:
        wrap_material(hsm, ref)
        reason = None
    except UnsupportedOperationException as exc:
        reason = exc.message
    except KMSError:
        return None  # not an answer about the kind (the token had a fault): ask again
    with _refusals_lock:
        known[kind] = reason
    return reason
