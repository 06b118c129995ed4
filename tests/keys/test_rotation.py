"""Automatic and on-demand rotation with a moved clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hsmkms.errors import LimitExceededException, ValidationException
from hsmkms.keys import blob
from hsmkms.library import KeyManager
from tests.conftest import ManualClock


def version_of(data: bytes) -> int:
    return blob.decode(data).version


def test_rotation_status_and_period_limits(km: KeyManager, key_id: str, clock: ManualClock) -> None:
    assert km.get_key_rotation_status(key_id=key_id)["KeyRotationEnabled"] is False
    km.enable_key_rotation(key_id=key_id)
    status = km.get_key_rotation_status(key_id=key_id)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 365
    assert status["NextRotationDate"] == clock.now + timedelta(days=365)
    for bad in (89, 2561):
        with pytest.raises(ValidationException, match="rotationPeriodInDays"):
            km.enable_key_rotation(key_id=key_id, rotation_period_in_days=bad)
    km.disable_key_rotation(key_id=key_id)
    assert km.get_key_rotation_status(key_id=key_id) == {
        "KeyRotationEnabled": False,
        "KeyId": f"arn:aws:kms:us-east-1:111122223333:key/{key_id}",
    }


def test_automatic_rotation_keeps_old_material(
    km: KeyManager, key_id: str, clock: ManualClock
) -> None:
    km.enable_key_rotation(key_id=key_id, rotation_period_in_days=90)
    old = km.encrypt(key_id=key_id, plaintext=b"before")["CiphertextBlob"]
    clock.advance(days=89)
    assert km.maintain().rotated == []
    clock.advance(days=1)
    assert len(km.maintain().rotated) == 1
    new = km.encrypt(key_id=key_id, plaintext=b"after")["CiphertextBlob"]
    assert (version_of(old), version_of(new)) == (1, 2)
    assert km.decrypt(ciphertext_blob=old)["Plaintext"] == b"before"
    assert km.decrypt(ciphertext_blob=new)["Plaintext"] == b"after"
    status = km.get_key_rotation_status(key_id=key_id)
    assert status["NextRotationDate"] == clock.now + timedelta(days=90)
    clock.advance(days=90)
    km.maintain()
    assert version_of(km.encrypt(key_id=key_id, plaintext=b"x")["CiphertextBlob"]) == 3
    rotations = km.list_key_rotations(key_id=key_id)["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["AUTOMATIC", "AUTOMATIC"]


def test_disabled_key_waits_to_rotate(km: KeyManager, key_id: str, clock: ManualClock) -> None:
    km.enable_key_rotation(key_id=key_id, rotation_period_in_days=90)
    km.disable_key(key_id=key_id)
    clock.advance(days=100)
    assert km.maintain().rotated == []
    km.enable_key(key_id=key_id)
    assert len(km.maintain().rotated) == 1


def test_on_demand_rotation_and_its_limit(km: KeyManager, key_id: str, clock: ManualClock) -> None:
    blobs = []
    for n in range(10):
        blobs.append(km.encrypt(key_id=key_id, plaintext=bytes([n]))["CiphertextBlob"])
        clock.advance(minutes=1)
        arn = km.describe_key(key_id=key_id)["KeyMetadata"]["Arn"]
        assert km.rotate_key_on_demand(key_id=key_id) == {"KeyId": arn}
    with pytest.raises(LimitExceededException):
        km.rotate_key_on_demand(key_id=key_id)
    for n, data in enumerate(blobs):
        assert version_of(data) == n + 1
        assert km.decrypt(ciphertext_blob=data)["Plaintext"] == bytes([n])
    first = km.list_key_rotations(key_id=key_id, limit=4)
    assert len(first["Rotations"]) == 4 and first["Truncated"]
    second = km.list_key_rotations(key_id=key_id, limit=100, marker=first["NextMarker"])
    assert len(second["Rotations"]) == 6 and not second["Truncated"]
    dates = [r["RotationDate"] for r in first["Rotations"] + second["Rotations"]]
    assert dates == sorted(dates) and all(
        r["RotationType"] == "ON_DEMAND" for r in second["Rotations"]
    )


def test_on_demand_rotation_leaves_the_schedule(km: KeyManager, key_id: str) -> None:
    km.enable_key_rotation(key_id=key_id)
    before = km.get_key_rotation_status(key_id=key_id)["NextRotationDate"]
    km.rotate_key_on_demand(key_id=key_id)
    assert km.get_key_rotation_status(key_id=key_id)["NextRotationDate"] == before
