"""What a token enforces of the protections the security domain relies on, measured on
the token itself before a domain key is installed, and checked again on the key after.

A holder of the user PIN (user.pin, not the SO PIN) must not get domain-custody material
out in plaintext. That holds only if the token enforces all of these:
- CKA_MODIFIABLE=false on the domain key (else CKA_DECRYPT can be set, on it or on a
  copy of it, and any blob wrapped under it decrypted);
- its CKA_UNWRAP_TEMPLATE (else a wrapped key unwraps as non-sensitive and readable);
- its CKA_WRAP_TEMPLATE (it wraps domain-custody material only);
- CKA_WRAP_WITH_TRUSTED (else any key of the user's making wraps the material out);
- CKA_TRUSTED settable by the SO only (else the user makes a "trusted" key of their own).
The probe uses session objects only; the one secret it unwraps is a throwaway.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error

from hsmkms.token.templates import Custody, custody_attributes, domain_key_templates

MODIFIABLE = "CKA_MODIFIABLE"
UNWRAP_TEMPLATE = "CKA_UNWRAP_TEMPLATE"
WRAP_TEMPLATE = "CKA_WRAP_TEMPLATE"
WRAP_WITH_TRUSTED = "CKA_WRAP_WITH_TRUSTED"
TRUSTED = "CKA_TRUSTED"
_KW = Mechanism.AES_KEY_WRAP  # RFC 3394: the same mechanism number on every token
_READABLE = {Attribute.TOKEN: False, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}


def _refused(action: Callable[[], Any]) -> bool:
    try:
        action()
    except PKCS11Error:
        return True
    return False


class _Scratch:
    """Session objects made for one probe, destroyed at its end."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.made: list[Any] = []

    def key(self, attributes: dict[Any, Any], value: bytes | None = None) -> Any:
        obj = self.session.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
            Attribute.VALUE: value or os.urandom(32), Attribute.TOKEN: False,
            Attribute.PRIVATE: True, Attribute.ENCRYPT: False, Attribute.DECRYPT: False,
            **attributes,
        })  # fmt: skip
        self.made.append(obj)
        return obj

    def close(self) -> None:
        for obj in self.made:
            with suppress(PKCS11Error):
                obj.destroy()


def _set_decrypt(key: Any) -> None:
    key[Attribute.DECRYPT] = True


def _copies_with_decrypt(scratch: _Scratch, key: Any) -> bool:
    """Whether a (session) copy of key can be made with CKA_DECRYPT: NSS softokn lets a
    copy of a non-modifiable key change its usages."""
    try:
        copy = key.copy({Attribute.TOKEN: False, Attribute.DECRYPT: True})
    except PKCS11Error:
        return False
    scratch.made.append(copy)
    return bool(copy[Attribute.DECRYPT])


def _unwraps_readable(scratch: _Scratch, kek: Any, blob: bytes) -> bool:
    """Whether blob unwraps under kek into a key whose value can be read."""
    try:
        copy = kek.unwrap_key(
            ObjectClass.SECRET_KEY, KeyType.AES, blob, mechanism=_KW, template=_READABLE
        )
    except PKCS11Error:
        return False
    scratch.made.append(copy)
    return not _refused(lambda: copy[Attribute.VALUE])


def unenforced_protections(session: Any) -> list[str]:
    """The protections (names above) this token does not enforce; empty when it
    enforces them all. `session`: a user session opened with ArrayAttributes()."""
    scratch = _Scratch(session)
    gaps: list[str] = []
    try:
        value = os.urandom(32)
        try:
            kek = scratch.key({
                Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                Attribute.MODIFIABLE: False, Attribute.WRAP: True, Attribute.UNWRAP: True,
                **domain_key_templates(),
            }, value)  # fmt: skip
        except PKCS11Error:
            gaps += [UNWRAP_TEMPLATE, WRAP_TEMPLATE]  # not even accepted
        else:
            if not _refused(lambda: _set_decrypt(kek)) or _copies_with_decrypt(scratch, kek):
                gaps.append(MODIFIABLE)
            if _unwraps_readable(scratch, kek, aes_key_wrap(value, os.urandom(32))):
                gaps.append(UNWRAP_TEMPLATE)
            own = scratch.key({Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
            if not _refused(lambda: kek.wrap_key(own, mechanism=_KW)):
                gaps.append(WRAP_TEMPLATE)
        plain = scratch.key({Attribute.SENSITIVE: True, Attribute.WRAP: True})
        material = scratch.key(custody_attributes(Custody.DOMAIN))
        if not _refused(lambda: plain.wrap_key(material, mechanism=_KW)):
            gaps.append(WRAP_WITH_TRUSTED)
        if not _refused(lambda: scratch.key({Attribute.WRAP: True, Attribute.TRUSTED: True})):
            gaps.append(TRUSTED)
    finally:
        scratch.close()
    return gaps


def domain_key_gaps(session: Any, key: Any) -> list[str]:
    """The same attack on an installed domain key: what of it the key lets through."""
    scratch = _Scratch(session)
    gaps: list[str] = []
    try:
        # Never try to change the real key: read it, and try a session copy.
        if key[Attribute.MODIFIABLE] or _copies_with_decrypt(scratch, key):
            gaps.append(MODIFIABLE)
        material = scratch.key(custody_attributes(Custody.DOMAIN))
        if _unwraps_readable(scratch, key, bytes(key.wrap_key(material, mechanism=_KW))):
            gaps.append(UNWRAP_TEMPLATE)
        own = scratch.key({Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
        if not _refused(lambda: key.wrap_key(own, mechanism=_KW)):
            gaps.append(WRAP_TEMPLATE)
    finally:
        scratch.close()
    return gaps
