"""Object naming and attribute templates for key material in the token."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pkcs11 import Attribute

LABEL_PREFIX = "hsmkms/"


def key_uuid_bytes(key_id: str) -> bytes:
    """The 16 bytes naming a key: its UUID, or the hex part of an `mrk-` id."""
    if key_id.startswith("mrk-"):
        return bytes.fromhex(key_id[4:])
    return uuid.UUID(key_id).bytes


@dataclass(frozen=True, slots=True)
class MaterialRef:
    """One version of one key's material: one object (or key pair) in the token."""

    key_id: str
    version: int

    @property
    def label(self) -> str:
        return f"{LABEL_PREFIX}{self.key_id}/v{self.version}"

    @property
    def cka_id(self) -> bytes:
        return key_uuid_bytes(self.key_id) + struct.pack(">I", self.version)

    @classmethod
    def from_label(cls, label: str) -> MaterialRef | None:
        """Parse a label we wrote; None for objects that are not ours."""
        if not label.startswith(LABEL_PREFIX):
            return None
        key_id, sep, version = label[len(LABEL_PREFIX) :].rpartition("/v")
        if not sep or not version.isdigit():
            return None
        return cls(key_id, int(version))


@dataclass(frozen=True, slots=True)
class InternalRef:
    """A token object hsmkms uses for itself (not a KMS key); outside the
    `hsmkms/` label space, so reconcile never considers it."""

    label: str
    cka_id: bytes


# Wraps stored SigV4 secrets (AES-GCM inside the token).
CREDENTIALS_KEY = InternalRef("hsmkms-internal/credentials", b"hsmkms-internal/credentials")

ObjectName = MaterialRef | InternalRef


class Custody(Enum):
    """How key material may leave the token: never, or only wrapped under the
    security domain's key (a CKA_TRUSTED key only the token's SO can install)."""

    NEVER_EXTRACTABLE = "never-extractable"
    DOMAIN = "domain"


def custody_attributes(custody: Custody = Custody.NEVER_EXTRACTABLE) -> dict[Any, Any]:
    """The attributes that keep secret or private material in the token."""
    if custody is Custody.DOMAIN:
        return {
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: True,
            Attribute.WRAP_WITH_TRUSTED: True,
        }
    return {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False}


def domain_key_templates() -> dict[Any, Any]:
    """The security domain key's CKA_UNWRAP_TEMPLATE and CKA_WRAP_TEMPLATE: whatever it
    unwraps becomes domain-custody material (sensitive, out of the token only wrapped
    under a trusted key), and it wraps only such material. Pack them with
    token/arrays.py's ArrayAttributes."""
    custody = custody_attributes(Custody.DOMAIN)
    return {Attribute.UNWRAP_TEMPLATE: custody, Attribute.WRAP_TEMPLATE: custody}


def secret_key_template(
    ref: ObjectName,
    *,
    encrypt: bool,
    sign: bool,
    custody: Custody = Custody.NEVER_EXTRACTABLE,
) -> dict[Any, Any]:
    """A secret key that never leaves the token in plaintext."""
    return {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        **custody_attributes(custody),
        Attribute.MODIFIABLE: False,
        Attribute.LABEL: ref.label,
        Attribute.ID: ref.cka_id,
        Attribute.ENCRYPT: encrypt,
        Attribute.DECRYPT: encrypt,
        Attribute.SIGN: sign,
        Attribute.VERIFY: sign,
        Attribute.WRAP: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
