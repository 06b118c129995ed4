"""What authorization needs to know about an operation: which key(s) it acts on.

The operation table (hsmkms/operations/table.py) gives each KMS operation one of
these; the authorizer reads it instead of knowing operations by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any


class Resource(Enum):
    KEY = "KeyId"  # the key named by KeyId
    KEYLESS = "none"  # no key: identity policies decide (a KeyId, if given, is checked)
    # Alias operations act on the alias and on every key they touch:
    NEW_ALIAS = "NewAlias"  # CreateAlias: the alias and TargetKeyId
    TARGET_KEY = "TargetKeyId"  # UpdateAlias: the alias, its current key and TargetKeyId
    ALIAS = "AliasName"  # DeleteAlias: the alias and the key it points at
    CIPHERTEXT = "CiphertextBlob"  # Decrypt: KeyId, else the key the blob names
    REENCRYPT = "ReEncrypt"  # ReEncryptFrom the source, ReEncryptTo the destination
    GRANT = "Grant"  # RetireGrant: the grant's key, unless the caller may retire it


IGNORE_CIPHERTEXT = "IGNORE_CIPHERTEXT"
NO_KEY_NAMED = "With IGNORE_CIPHERTEXT and no CiphertextBlob, name the KMS key."


def ignores_ciphertext(request: Mapping[str, Any]) -> bool:
    """A DryRun with the IGNORE_CIPHERTEXT modifier (Decrypt, ReEncrypt): only the keys and
    the permissions are checked, the ciphertext is not read."""
    return request.get("DryRun") is True and IGNORE_CIPHERTEXT in (
        request.get("DryRunModifiers") or ()
    )
