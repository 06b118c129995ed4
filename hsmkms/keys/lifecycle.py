"""Which key states allow which operation, and the KMS error for each refusal.

From the AWS KMS key-state table: cryptographic use needs Enabled; management
needs a key that is not pending deletion; reads work in every state.
"""

from __future__ import annotations

from enum import Enum

from hsmkms.errors import DisabledException, KMSError, KMSInvalidStateException
from hsmkms.store.model import KeyRecord, KeyState


class Use(Enum):
    CRYPTO = "crypto"  # Encrypt, Decrypt, GenerateDataKey*, ReEncrypt, Sign, ...
    ROTATION = "rotation"  # EnableKeyRotation, DisableKeyRotation, RotateKeyOnDemand
    MANAGE = "manage"  # EnableKey, DisableKey, UpdateKeyDescription, aliases, deletion
    CANCEL_DELETION = "cancel-deletion"
    READ = "read"  # DescribeKey, GetKeyRotationStatus, ListKeyRotations, DeleteAlias


_STATE_WORDS = {
    KeyState.DISABLED: "disabled",
    KeyState.PENDING_DELETION: "pending deletion",
    KeyState.PENDING_REPLICA_DELETION: "pending replica deletion",
    KeyState.PENDING_IMPORT: "pending import",
    KeyState.UNAVAILABLE: "unavailable",
}


def _refusal(record: KeyRecord) -> KMSError:
    if record.state is KeyState.DISABLED:
        return DisabledException(f"{record.arn} is disabled.")
    return KMSInvalidStateException(f"{record.arn} is {_STATE_WORDS[record.state]}.")


def require(record: KeyRecord, use: Use) -> None:
    state = record.state
    if use is Use.READ:
        return
    if use is Use.CRYPTO or use is Use.ROTATION:
        if state is not KeyState.ENABLED:
            raise _refusal(record)
        return
    if use is Use.CANCEL_DELETION:
        if state not in (KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION):
            raise KMSInvalidStateException(f"{record.arn} is not pending deletion.")
        return
    if state in (KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION):
        raise _refusal(record)
