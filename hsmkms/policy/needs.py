"""What authorization needs to know about an operation: which key(s) it acts on, and
what a caller of another account may do through it.

The operation table (hsmkms/operations/table.py) gives each KMS operation one of
these; the authorizer reads it instead of knowing operations by name.

hsmkms serves one account (HSMKMS_ACCOUNT_ID). As in AWS, an operation that names no key
acts in the caller's own account, and another account reaches a key of ours only
through the key's policy, for the operations AWS allows across accounts:
https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-modifying-external-accounts.html
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any


class Resource(Enum):
    KEY = "KeyId"  # the key named by KeyId
    # No key: identity policies decide, in the caller's own account. Another account is
    # refused: what it would change or use (keys, custom key stores, the token) is ours.
    ACCOUNT = "Account"
    # Lists the caller's own account (a KeyId, if given, is checked). Another account
    # is shown its own account, which this server does not hold: an empty listing.
    LISTING = "Listing"
    # ListRetirableGrants: a principal of the caller's own account, and the grants (on
    # keys of any account) it may retire.
    RETIRING_PRINCIPAL = "RetiringPrincipal"
    # Alias operations act on the alias and on every key they touch:
    NEW_ALIAS = "NewAlias"  # CreateAlias: the alias and TargetKeyId
    TARGET_KEY = "TargetKeyId"  # UpdateAlias: the alias, its current key and TargetKeyId
    ALIAS = "AliasName"  # DeleteAlias: the alias and the key it points at
    CIPHERTEXT = "CiphertextBlob"  # Decrypt: KeyId, else the key the blob names
    REENCRYPT = "ReEncrypt"  # ReEncryptFrom the source, ReEncryptTo the destination
    GRANT = "Grant"  # RetireGrant: the grant's key, unless the caller may retire it


class Access(Enum):
    """What the authorizer lets the call do (it raises AccessDeniedException otherwise)."""

    GRANTED = "granted"
    # A LISTING by a caller of another account: its own account, empty here.
    EMPTY_ACCOUNT = "empty"


# The permissions AWS honours for a principal of another account: "Cross-account use:
# Yes" in https://docs.aws.amazon.com/kms/latest/developerguide/kms-api-permissions-reference.html
# (ListRetirableGrants is RETIRING_PRINCIPAL's). Any other permission a key policy gives
# another account has no effect.
CROSS_ACCOUNT_ACTIONS = frozenset({
    "kms:CreateGrant", "kms:Decrypt", "kms:DeriveSharedSecret", "kms:DescribeKey",
    "kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext", "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateMac", "kms:GetKeyRotationStatus", "kms:GetPublicKey", "kms:ListGrants",
    "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:RetireGrant", "kms:RevokeGrant", "kms:Sign",
    "kms:Verify", "kms:VerifyMac",
})  # fmt: skip

IGNORE_CIPHERTEXT = "IGNORE_CIPHERTEXT"
NO_KEY_NAMED = "With IGNORE_CIPHERTEXT and no CiphertextBlob, name the KMS key."


def ignores_ciphertext(request: Mapping[str, Any]) -> bool:
    """A DryRun with the IGNORE_CIPHERTEXT modifier (Decrypt, ReEncrypt): only the keys and
    the permissions are checked, the ciphertext is not read."""
    return request.get("DryRun") is True and IGNORE_CIPHERTEXT in (
        request.get("DryRunModifiers") or ()
    )
