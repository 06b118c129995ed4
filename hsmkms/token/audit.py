"""What the audit trail keeps in the token: its HMAC key and the latest checkpoints.

The key (label `hsmkms-internal/audit`) is a generic secret that never leaves the
token in plaintext (sensitive); checkpoints are MACed inside the token. It has the
custody of other new material: never extractable, or, once the token is in a
security domain, extractable only wrapped under the domain key, so that a backup can
carry it and the trail still verifies after a restore onto another token of the domain
(docs/token-wrapping.md). A process that must give domain custody and finds only
never-extractable keys (made before the domain) makes a successor. Two processes may
create a key at the same moment, so each key gets a random CKA_ID, every process signs
with the smallest id among the keys it may use, and a checkpoint names the id of the
key that signed it. Older keys stay, for the checkpoints they signed. The latest
checkpoint of each chain is a private CKO_DATA object (label
`hsmkms-internal/audit-checkpoint/<chain>`), and each trail's record (its scope, and
whether it is active or was retired) one labelled `hsmkms-internal/audit-trail/<trail>`.
A value is updated in place where the token allows it, else replaced (SoftHSM2 2.6 keeps
CKA_VALUE of data objects read-only): the new object is made before the old one goes.
"""

from __future__ import annotations

import hmac as hmac_compare
import os
from typing import Any, Protocol

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.exceptions import PKCS11Error

from hsmkms.errors import KMSError, KMSInternalException, KMSInvalidStateException
from hsmkms.token import lookup
from hsmkms.token.faults import to_kms_error
from hsmkms.token.interface import Token
from hsmkms.token.pool import PooledSession
from hsmkms.token.templates import Custody, InternalRef, custody_attributes

KEY_LABEL = "hsmkms-internal/audit"
CHECKPOINT_PREFIX = "hsmkms-internal/audit-checkpoint/"
TRAIL_PREFIX = "hsmkms-internal/audit-trail/"
# What a shelf keeps, by the prefix of the token object it stands in for.
SHELF_KINDS = {CHECKPOINT_PREFIX: "checkpoint", TRAIL_PREFIX: "trail"}
APPLICATION = "hsmkms audit"
MECHANISM = Mechanism.SHA256_HMAC


def _key_template(cka_id: bytes, custody: Custody) -> dict[Any, Any]:
    return {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        **custody_attributes(custody),
        Attribute.MODIFIABLE: False,
        Attribute.LABEL: KEY_LABEL,
        Attribute.ID: cka_id,
        Attribute.SIGN: True,
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: False,
        Attribute.DECRYPT: False,
        Attribute.WRAP: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }


def _keys(pooled: PooledSession) -> dict[bytes, Any]:
    found = lookup.find_all(
        pooled.session, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: KEY_LABEL}
    )
    return {bytes(key[Attribute.ID]): key for key in found}


def _leaves_wrapped(key: Any) -> bool:
    """Domain custody: a backup can carry it (wrapped under the domain key)."""
    try:
        return bool(key[Attribute.EXTRACTABLE]) and bool(key[Attribute.WRAP_WITH_TRUSTED])
    except p11.AttributeTypeInvalid:  # a token without CKA_WRAP_WITH_TRUSTED
        return False


def key_ref(key_id: bytes) -> InternalRef:
    """The name of one audit key (all share the label; the CKA_ID tells them apart)."""
    return InternalRef(KEY_LABEL, key_id)


class CheckpointShelf(Protocol):
    """Where the latest checkpoints and the trail records go on a token that cannot hold
    data objects (NSS softokn refuses CKO_DATA token objects): e.g. the database. They
    are MACed by the token's key either way; the shelf only keeps them outside the log
    files. `kind` is "checkpoint" or "trail"."""

    def put(self, kind: str, name: str, value: bytes) -> None: ...

    def all(self, kind: str) -> dict[str, list[bytes]]: ...


class TokenAuditAnchor:
    """The audit trail's signer and checkpoint store (hsmkms.audit.checkpoint.Anchor)."""

    def __init__(
        self, hsm: Token, shelf: CheckpointShelf | None = None, scope: str = "default"
    ) -> None:
        self._hsm = hsm
        self.scope = scope  # the deployment's trails among those the token keeps
        self._signing_id: bytes | None = None
        self._shelf = shelf
        self._token_holds_data = True  # until the token refuses a data object

    # -- the key -------------------------------------------------------------------

    def _usable(self, pooled: PooledSession) -> set[bytes]:
        """The keys this process may sign with: those of the custody it gives new keys."""
        keys = _keys(pooled)
        if self._hsm.custody is Custody.DOMAIN:
            return {key_id for key_id, key in keys.items() if _leaves_wrapped(key)}
        return set(keys)

    def _signing_key(self, pooled: PooledSession) -> tuple[bytes, Any]:
        if self._signing_id is None:
            usable = self._usable(pooled)
            if not usable:
                self._hsm.mechanisms.require(Mechanism.GENERIC_SECRET_KEY_GEN, MECHANISM)
                template = _key_template(os.urandom(16), self._hsm.custody)
                pooled.session.generate_key(
                    KeyType.GENERIC_SECRET, 256, store=True, template=template
                )
                usable = self._usable(pooled)  # another process may have made one: smallest wins
            self._signing_id = min(usable)
        key = self._key(pooled, self._signing_id)
        if key is None:
            raise KMSInternalException("The token no longer holds the audit key it signs with.")
        return self._signing_id, key

    def _key(self, pooled: PooledSession, key_id: bytes) -> Any | None:
        cached = pooled.objects.get(("audit-key", key_id))
        if cached is None:
            cached = _keys(pooled).get(key_id)
            if cached is not None:
                pooled.objects[("audit-key", key_id)] = cached
        return cached

    def key_ids(self) -> list[bytes]:
        """Every audit key the token holds (a backup carries those it can wrap)."""
        return sorted(self._hsm.run(_keys))

    def holds(self, key_id: str) -> bool:
        """Whether the token holds the named key (else its MACs cannot be checked here)."""
        try:
            wanted = bytes.fromhex(key_id)
        except ValueError:
            return False
        return self._hsm.run(lambda pooled: self._key(pooled, wanted) is not None)

    def sign_with(self, key_id: bytes, message: bytes) -> bytes:
        """HMAC-SHA256 under one named key (a backup's hand-over to a key it carries)."""

        def sign(pooled: PooledSession) -> bytes:
            key = self._key(pooled, key_id)
            if key is None:
                raise KMSInvalidStateException(f"The token holds no audit key {key_id.hex()}.")
            mac: bytes = key.sign(message, mechanism=MECHANISM)
            return mac

        return self._hsm.run(sign)

    def key_id(self) -> str:
        """The CKA_ID (hex) of the key sign() uses; made on first use."""
        return self._hsm.run(lambda pooled: self._signing_key(pooled)[0].hex())

    def sign(self, message: bytes) -> bytes:
        """HMAC-SHA256 of message, computed in the token."""

        def sign(pooled: PooledSession) -> bytes:
            mac: bytes = self._signing_key(pooled)[1].sign(message, mechanism=MECHANISM)
            return mac

        return self._hsm.run(sign)

    def check(self, key_id: str, message: bytes, mac: bytes) -> bool:
        """Whether mac is the HMAC of message under the named key. Recomputed and
        compared here: some tokens (NSS) answer C_Verify failures with unrelated codes."""

        try:
            wanted = bytes.fromhex(key_id)
        except ValueError:
            return False

        def compute(pooled: PooledSession) -> bytes | None:
            key = self._key(pooled, wanted)
            if key is None:
                return None
            expected: bytes = key.sign(message, mechanism=MECHANISM)
            return expected

        expected = self._hsm.run(compute)
        return expected is not None and hmac_compare.compare_digest(expected, mac)

    # -- the latest checkpoint per chain, the record of each trail --------------------

    def store(self, chain: str, value: bytes) -> None:
        self._put(CHECKPOINT_PREFIX, chain, value)

    def load_all(self) -> dict[str, list[bytes]]:
        """Every chain's stored checkpoint values (normally one per chain)."""
        return self._load()[CHECKPOINT_PREFIX]

    def store_trail(self, trail: str, value: bytes) -> None:
        self._put(TRAIL_PREFIX, trail, value)

    def load_everything(self) -> tuple[dict[str, list[bytes]], dict[str, list[bytes]]]:
        """(every chain's checkpoint values, every trail's record values), in one scan."""
        found = self._load()
        return found[CHECKPOINT_PREFIX], found[TRAIL_PREFIX]

    def _put(self, prefix: str, name: str, value: bytes) -> None:
        if not self._token_holds_data and self._shelf is not None:
            self._shelf.put(SHELF_KINDS[prefix], name, value)
            return
        try:
            self._store_in_token(prefix + name, value)
        except KMSError as exc:
            if self._shelf is None or not isinstance(exc.__cause__, p11.AttributeValueInvalid):
                raise
            self._token_holds_data = False
            self._shelf.put(SHELF_KINDS[prefix], name, value)

    def _store_in_token(self, label: str, value: bytes) -> None:
        def store(pooled: PooledSession) -> None:
            old = list(pooled.session.get_objects(
                {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label}
            ))  # fmt: skip
            if len(old) == 1:
                try:
                    old[0][Attribute.VALUE] = value
                    return
                except (p11.AttributeReadOnly, p11.AttributeValueInvalid):
                    pass  # this token cannot modify it: replace it below
            pooled.session.create_object({
                Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True,
                Attribute.PRIVATE: True, Attribute.MODIFIABLE: True,
                Attribute.LABEL: label, Attribute.APPLICATION: APPLICATION,
                Attribute.VALUE: value,
            })  # fmt: skip
            for obj in old:  # after the new one exists: a crash leaves both, never none
                obj.destroy()

        self._hsm.run(store)

    def _load(self) -> dict[str, dict[str, list[bytes]]]:
        """The values of the audit's data objects, by prefix, then by name."""

        def scan(pooled: PooledSession) -> dict[str, dict[str, list[bytes]]]:
            found: dict[str, dict[str, list[bytes]]] = {prefix: {} for prefix in SHELF_KINDS}
            for obj in pooled.session.get_objects({Attribute.CLASS: ObjectClass.DATA}):
                try:
                    label = obj[Attribute.LABEL]
                    prefix = _prefix_of(label)
                    if prefix is not None:
                        name = label[len(prefix) :]
                        found[prefix].setdefault(name, []).append(bytes(obj[Attribute.VALUE]))
                except PKCS11Error:
                    continue
            return found

        try:
            found = self._hsm.run(scan)
        except PKCS11Error as exc:
            raise to_kms_error(exc) from exc
        if self._shelf is not None:
            for prefix, kind in SHELF_KINDS.items():
                for name, values in self._shelf.all(kind).items():
                    found[prefix].setdefault(name, []).extend(values)
        return found


def _prefix_of(label: object) -> str | None:
    if isinstance(label, str):
        for prefix in SHELF_KINDS:
            if label.startswith(prefix):
                return prefix
    return None
