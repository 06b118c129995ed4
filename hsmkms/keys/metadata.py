"""KeyMetadata as DescribeKey returns it, from a key record and its spec."""

from __future__ import annotations

from typing import Any

from hsmkms.keys.imported import current_material_id, imported_metadata
from hsmkms.keys.specs import SPECS
from hsmkms.store.model import KeyRecord, KeyUsage

# KeyRecord.extra: the CloudHSM cluster of a key in an AWS_CLOUDHSM key store.
CLUSTER_ID = "cloud_hsm_cluster_id"
# KeyRecord.extra entries written when key-pair material is created.
PUBLIC_KEY = "PublicKey"  # base64 DER SubjectPublicKeyInfo
ENCRYPTION_ALGORITHMS = "EncryptionAlgorithms"  # what the token can do (RSA OAEP hashes)
XKS_KEY_ID = "xks_key_id"  # the external key of a key in an EXTERNAL_KEY_STORE key store


def algorithms(record: KeyRecord) -> dict[str, list[str]]:
    """The algorithm lists KMS shows for a key, by its usage."""
    spec = SPECS[record.key_spec]
    usage = record.key_usage
    if usage is KeyUsage.ENCRYPT_DECRYPT:
        return {
            "EncryptionAlgorithms": list(record.extra.get(ENCRYPTION_ALGORITHMS, spec.encryption))
        }
    if usage is KeyUsage.SIGN_VERIFY:
        return {"SigningAlgorithms": list(spec.signing)}
    if usage is KeyUsage.GENERATE_VERIFY_MAC:
        return {"MacAlgorithms": list(spec.mac)}
    return {"KeyAgreementAlgorithms": list(spec.agreement)}


def key_metadata(record: KeyRecord) -> dict[str, Any]:
    """KeyMetadata with KMS's field names (dates stay datetimes; the edges format them)."""
    meta: dict[str, Any] = {
        "AWSAccountId": record.account_id,
        "KeyId": record.key_id,
        "Arn": record.arn,
        "CreationDate": record.creation_date,
        "Enabled": record.enabled,
        "Description": record.description,
        "KeyUsage": record.key_usage.value,
        "KeyState": record.state.value,
        "Origin": record.origin.value,
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": record.key_spec.value,
        "KeySpec": record.key_spec.value,
        "MultiRegion": record.multi_region,
        **algorithms(record),
    }
    if record.deletion_date is not None:
        meta["DeletionDate"] = record.deletion_date
    if record.pending_window_days is not None:
        meta["PendingDeletionWindowInDays"] = record.pending_window_days
    if record.custom_key_store_id is not None:
        meta["CustomKeyStoreId"] = record.custom_key_store_id
        if record.extra.get(CLUSTER_ID):
            meta["CloudHsmClusterId"] = record.extra[CLUSTER_ID]
        if record.extra.get(XKS_KEY_ID):
            meta["XksKeyConfiguration"] = {"Id": record.extra[XKS_KEY_ID]}
    if record.multi_region_config is not None:
        meta["MultiRegionConfiguration"] = record.multi_region_config
    material_id = current_material_id(record)
    if material_id is not None:
        meta["CurrentKeyMaterialId"] = material_id
    meta.update(imported_metadata(record))  # Origin EXTERNAL: expiry
    return meta
