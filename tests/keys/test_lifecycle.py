"""Key states enforced as KMS does, metadata, listing and scheduled deletion."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from hsmkms.errors import (
    DisabledException,
    KMSError,
    KMSInvalidStateException,
    NotFoundException,
    ValidationException,
)
from hsmkms.library import KeyManager
from hsmkms.store.model import KeyState
from hsmkms.token import Hsm, MaterialRef
from tests.conftest import ManualClock

Operation = Callable[[KeyManager, str, bytes], Any]

OPERATIONS: dict[str, Operation] = {
    "Encrypt": lambda km, k, b: km.encrypt(key_id=k, plaintext=b"x"),
    "Decrypt": lambda km, k, b: km.decrypt(ciphertext_blob=b),
    "ReEncrypt": lambda km, k, b: km.re_encrypt(ciphertext_blob=b, destination_key_id=k),
    "GenerateDataKey": lambda km, k, b: km.generate_data_key(key_id=k, key_spec="AES_256"),
    "GenerateDataKeyWithoutPlaintext": lambda km, k, b: km.generate_data_key_without_plaintext(
        key_id=k, number_of_bytes=8
    ),
    "EnableKeyRotation": lambda km, k, b: km.enable_key_rotation(key_id=k),
    "DisableKeyRotation": lambda km, k, b: km.disable_key_rotation(key_id=k),
    "RotateKeyOnDemand": lambda km, k, b: km.rotate_key_on_demand(key_id=k),
    "EnableKey": lambda km, k, b: km.enable_key(key_id=k),
    "DisableKey": lambda km, k, b: km.disable_key(key_id=k),
    "UpdateKeyDescription": lambda km, k, b: km.update_key_description(key_id=k, description="d"),
    "CreateAlias": lambda km, k, b: km.create_alias(alias_name="alias/matrix", target_key_id=k),
    "ScheduleKeyDeletion": lambda km, k, b: km.schedule_key_deletion(key_id=k),
    "CancelKeyDeletion": lambda km, k, b: km.cancel_key_deletion(key_id=k),
    "DescribeKey": lambda km, k, b: km.describe_key(key_id=k),
    "GetKeyRotationStatus": lambda km, k, b: km.get_key_rotation_status(key_id=k),
    "ListKeyRotations": lambda km, k, b: km.list_key_rotations(key_id=k),
}

OK = None
CRYPTO = {"Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext"}
ROTATION = {"EnableKeyRotation", "DisableKeyRotation", "RotateKeyOnDemand"}
READS = {"DescribeKey", "GetKeyRotationStatus", "ListKeyRotations"}


def expected(state: str, op: str) -> type[KMSError] | None:
    """The AWS KMS key-state table for the operations symmetric keys have."""
    if op in READS:
        return OK
    if op == "CancelKeyDeletion":
        return OK if state == "PendingDeletion" else KMSInvalidStateException
    if op in CRYPTO | ROTATION:
        if state == "Enabled":
            return OK
        return DisabledException if state == "Disabled" else KMSInvalidStateException
    return KMSInvalidStateException if state == "PendingDeletion" else OK


def put_in_state(km: KeyManager, key_id: str, state: str) -> None:
    if state == "Disabled":
        km.disable_key(key_id=key_id)
    elif state == "PendingDeletion":
        km.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
    elif state == "Unavailable":
        record = km.store.get_key(key_id)
        assert record is not None
        with km.store.transaction() as tx:
            tx.put_key(replace(record, state=KeyState.UNAVAILABLE))
        km._changed()


@pytest.mark.parametrize("state", ["Enabled", "Disabled", "PendingDeletion", "Unavailable"])
@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_key_state_matrix(km: KeyManager, key_id: str, state: str, op: str) -> None:
    data = km.encrypt(key_id=key_id, plaintext=b"matrix")["CiphertextBlob"]
    put_in_state(km, key_id, state)
    want = expected(state, op)
    if state == "Unavailable" and op in {"EnableKey", "DisableKey"}:
        want = KMSInvalidStateException  # its material is missing: no state change helps
    if want is None:
        OPERATIONS[op](km, key_id, data)
    else:
        with pytest.raises(want) as caught:
            OPERATIONS[op](km, key_id, data)
        assert type(caught.value) is want
        assert f"key/{key_id}" in caught.value.message


def test_error_messages_have_kms_shape(km: KeyManager, key_id: str) -> None:
    arn = f"arn:aws:kms:us-east-1:111122223333:key/{key_id}"
    km.disable_key(key_id=key_id)
    with pytest.raises(DisabledException, match=f"^{arn} is disabled.$"):
        km.encrypt(key_id=key_id, plaintext=b"x")
    km.schedule_key_deletion(key_id=key_id)
    with pytest.raises(KMSInvalidStateException, match=f"^{arn} is pending deletion.$"):
        km.encrypt(key_id=key_id, plaintext=b"x")


def test_describe_key_metadata(km: KeyManager, clock: ManualClock) -> None:
    meta = km.create_key(description="payments")["KeyMetadata"]
    assert meta == km.describe_key(key_id=meta["KeyId"])["KeyMetadata"]
    assert meta["Arn"] == f"arn:aws:kms:us-east-1:111122223333:key/{meta['KeyId']}"
    assert meta["AWSAccountId"] == "111122223333"
    assert meta["CreationDate"] == clock.now
    assert meta["Enabled"] is True and meta["KeyState"] == "Enabled"
    assert meta["KeyManager"] == "CUSTOMER" and meta["Origin"] == "AWS_KMS"
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT" and meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert meta["MultiRegion"] is False and meta["Description"] == "payments"
    assert "DeletionDate" not in meta


def test_multi_region_key(km: KeyManager) -> None:
    meta = km.create_key(multi_region=True)["KeyMetadata"]
    assert meta["KeyId"].startswith("mrk-") and meta["MultiRegion"] is True
    assert meta["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY"
    data = km.encrypt(key_id=meta["KeyId"], plaintext=b"mrk")["CiphertextBlob"]
    assert km.decrypt(ciphertext_blob=data)["KeyId"] == meta["Arn"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"key_spec": "AES_256"}, ValidationException),
        ({"key_usage": "SIGN_VERIFY"}, ValidationException),
        ({"key_usage": "BOGUS"}, ValidationException),
        ({"origin": "BOGUS"}, ValidationException),
        ({"key_spec": "ECC_NIST_P256"}, ValidationException),  # ENCRYPT_DECRYPT by default
        ({"key_spec": "HMAC_256", "key_usage": "ENCRYPT_DECRYPT"}, ValidationException),
        ({"key_spec": "ECC_NIST_EDWARDS25519", "key_usage": "KEY_AGREEMENT"}, ValidationException),
        ({"origin": "EXTERNAL_KEY_STORE"}, ValidationException),  # needs a store and XksKeyId
        ({"description": "d" * 8193}, ValidationException),
        (
            {"key_spec": "SYMMETRIC_DEFAULT", "customer_master_key_spec": "SYMMETRIC_DEFAULT"},
            ValidationException,
        ),
    ],
)
def test_create_key_bad_input(
    km: KeyManager, kwargs: dict[str, Any], error: type[KMSError]
) -> None:
    with pytest.raises(error):
        km.create_key(**kwargs)
    assert km.list_keys()["Keys"] == []


def test_list_keys_pages(km: KeyManager) -> None:
    created = sorted(km.create_key()["KeyMetadata"]["KeyId"] for _ in range(5))
    seen: list[str] = []
    marker = None
    while True:
        page = km.list_keys(limit=2, marker=marker)
        seen.extend(k["KeyId"] for k in page["Keys"])
        assert len(page["Keys"]) <= 2
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert seen == created
    for bad in (0, 1001):
        with pytest.raises(ValidationException):
            km.list_keys(limit=bad)


def test_update_description_and_enable_disable(km: KeyManager, key_id: str) -> None:
    km.update_key_description(key_id=key_id, description="new words")
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["Description"] == "new words"
    km.disable_key(key_id=key_id)
    km.disable_key(key_id=key_id)  # idempotent
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["Enabled"] is False
    km.enable_key(key_id=key_id)
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


@pytest.mark.parametrize("days", [6, 31, 0, -1])
def test_deletion_window_limits(km: KeyManager, key_id: str, days: int) -> None:
    with pytest.raises(ValidationException, match="pendingWindowInDays"):
        km.schedule_key_deletion(key_id=key_id, pending_window_in_days=days)


def test_schedule_and_cancel_deletion(km: KeyManager, key_id: str, clock: ManualClock) -> None:
    out = km.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
    assert out["KeyState"] == "PendingDeletion" and out["PendingWindowInDays"] == 7
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert meta["DeletionDate"] == clock.now.replace(day=8)
    assert meta["PendingDeletionWindowInDays"] == 7 and meta["Enabled"] is False
    km.cancel_key_deletion(key_id=key_id)
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Disabled" and "DeletionDate" not in meta


def test_deletion_happens_only_when_due(
    km: KeyManager, hsm: Hsm, key_id: str, clock: ManualClock
) -> None:
    km.create_alias(alias_name="alias/doomed", target_key_id=key_id)
    km.rotate_key_on_demand(key_id=key_id)
    km.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
    clock.advance(days=6, hours=23)
    assert km.maintain().deleted == []
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    clock.advance(hours=1)
    report = km.maintain()
    assert report.deleted == [f"arn:aws:kms:us-east-1:111122223333:key/{key_id}"]
    with pytest.raises(NotFoundException):
        km.describe_key(key_id=key_id)
    assert km.list_aliases()["Aliases"] == []
    assert hsm.facts(MaterialRef(key_id, 1)) == [] and hsm.facts(MaterialRef(key_id, 2)) == []
