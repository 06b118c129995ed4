"""The metadata records: what a KMS key, its versions, aliases, grants and access keys are,
as the store keeps them (hsmkms/keys holds what is done with them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class KeyState(StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING_DELETION = "PendingDeletion"
    # A multi-Region primary scheduled for deletion while it still has replicas: its
    # waiting period starts when the last replica is gone.
    PENDING_REPLICA_DELETION = "PendingReplicaDeletion"
    PENDING_IMPORT = "PendingImport"
    UNAVAILABLE = "Unavailable"


class KeySpec(StrEnum):
    SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
    RSA_2048 = "RSA_2048"
    RSA_3072 = "RSA_3072"
    RSA_4096 = "RSA_4096"
    ECC_NIST_P256 = "ECC_NIST_P256"
    ECC_NIST_P384 = "ECC_NIST_P384"
    ECC_NIST_P521 = "ECC_NIST_P521"
    ECC_SECG_P256K1 = "ECC_SECG_P256K1"
    ECC_NIST_EDWARDS25519 = "ECC_NIST_EDWARDS25519"
    HMAC_224 = "HMAC_224"
    HMAC_256 = "HMAC_256"
    HMAC_384 = "HMAC_384"
    HMAC_512 = "HMAC_512"


class KeyUsage(StrEnum):
    ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
    SIGN_VERIFY = "SIGN_VERIFY"
    GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC"
    KEY_AGREEMENT = "KEY_AGREEMENT"


class Origin(StrEnum):
    AWS_KMS = "AWS_KMS"
    EXTERNAL = "EXTERNAL"
    AWS_CLOUDHSM = "AWS_CLOUDHSM"
    EXTERNAL_KEY_STORE = "EXTERNAL_KEY_STORE"


class RotationType(StrEnum):
    AUTOMATIC = "AUTOMATIC"
    ON_DEMAND = "ON_DEMAND"


class VersionState(StrEnum):
    ACTIVE = "Active"
    # The metadata names it but the token no longer holds it (found by reconcile).
    MISSING = "Missing"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One KMS key's metadata. Immutable: changes go through dataclasses.replace."""

    key_id: str
    region: str
    account_id: str
    creation_date: datetime
    key_spec: KeySpec
    key_usage: KeyUsage
    origin: Origin
    state: KeyState
    current_version: int
    description: str = ""
    deletion_date: datetime | None = None
    pending_window_days: int | None = None
    multi_region: bool = False
    multi_region_config: dict[str, Any] | None = None
    custom_key_store_id: str | None = None
    rotation_enabled: bool = False
    rotation_period_days: int | None = None
    next_rotation_date: datetime | None = None
    on_demand_rotations: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    policy: str = ""  # the key policy document ("" for keys made before policies: default)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def arn(self) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{self.key_id}"

    @property
    def enabled(self) -> bool:
        return self.state is KeyState.ENABLED

    @property
    def is_replica(self) -> bool:
        """A multi-Region replica key (the same key id as its primary, another region)."""
        config = self.multi_region_config or {}
        return config.get("MultiRegionKeyType") == "REPLICA"


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One version of a key's material (a token object); rotation adds one."""

    key_id: str
    version: int
    created_at: datetime
    rotation_type: RotationType | None  # None for the material the key was created with
    state: VersionState = VersionState.ACTIVE


@dataclass(frozen=True, slots=True)
class Alias:
    name: str
    key_id: str
    region: str
    account_id: str
    creation_date: datetime
    last_updated_date: datetime

    @property
    def arn(self) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:{self.name}"


@dataclass(frozen=True, slots=True)
class PendingMaterial:
    """An intent, written before token material is created: reconcile may remove it."""

    key_id: str
    version: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission for a grantee to use one key for some operations, within constraints."""

    grant_id: str
    key_id: str
    grantee_principal: str
    operations: tuple[str, ...]
    creation_date: datetime
    issuing_account: str
    token: str
    name: str = ""
    retiring_principal: str | None = None
    context_subset: dict[str, str] | None = None  # EncryptionContextSubset
    context_equals: dict[str, str] | None = None  # EncryptionContextEquals
    region: str = ""  # the key's region: a multi-Region key's replicas have their own grants


@dataclass(frozen=True, slots=True)
class AccessKey:
    """A SigV4 access key of a principal; the secret is stored wrapped by a token key."""

    access_key_id: str
    principal_arn: str
    wrapped_secret: bytes
    created_at: datetime
    status: str = "Active"  # IAM's Active | Inactive: an inactive key authenticates nothing
    last_used_at: datetime | None = None  # the last verified request it signed (coarse)
    last_used_region: str | None = None

    def __repr__(self) -> str:
        return (
            f"AccessKey({self.access_key_id!r}, principal={self.principal_arn!r}, "
            f"status={self.status!r})"
        )


@dataclass(frozen=True)
class TokenBinding:
    """The token a database belongs to: named by label and serial, and proven by a
    marker key (its CKA_ID, hex) that only that token holds."""

    label: str
    serial: str
    marker: str
    bound_at: datetime

    def describe(self) -> str:
        return f"token {self.label!r} (serial {self.serial or '?'}, marker {self.marker[:12]})"
