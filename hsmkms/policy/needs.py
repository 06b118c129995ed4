"""What authorization needs to know about an operation: which key(s) it acts on.

The operation table (hsmkms/operations/table.py) gives each KMS operation one of
these; the authorizer reads it instead of knowing operations by name.
"""

from __future__ import annotations

from enum import Enum


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
