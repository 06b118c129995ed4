"""On-demand rotation of imported symmetric key material (ImportType NEW_KEY_MATERIAL),
through the library on a real SoftHSM2 token."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from hsmkms.errors import (
    IncorrectKeyMaterialException,
    KMSInvalidStateException,
    UnsupportedOperationException,
)
from hsmkms.library import KeyManager
from hsmkms.token import Hsm, MaterialRef
from tests.conftest import ManualClock
from tests.operations.test_imports import external, import_material


def test_on_demand_rotation_to_new_imported_material(
    km: KeyManager, hsm: Hsm, clock: ManualClock
) -> None:
    key_id, first, second = external(km), os.urandom(32), os.urandom(32)
    id1 = import_material(km, key_id, first)["KeyMaterialId"]
    old = km.encrypt(key_id=key_id, plaintext=b"one")["CiphertextBlob"]
    with pytest.raises(IncorrectKeyMaterialException, match="already associated"):
        import_material(km, key_id, first, import_type="NEW_KEY_MATERIAL")
    id2 = import_material(
        km, key_id, second, "RSA_AES_KEY_WRAP_SHA_1", import_type="NEW_KEY_MATERIAL",
        key_material_description="second", expiration_model=None,
        valid_to=clock() + timedelta(days=10),
    )["KeyMaterialId"]  # fmt: skip
    assert id2 != id1
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == id1
    assert km.list_key_rotations(key_id=key_id)["Rotations"] == []
    listed = km.list_key_rotations(key_id=key_id, include_key_material="ALL_KEY_MATERIAL")
    states = [(r["KeyMaterialId"], r["KeyMaterialState"], r["ImportState"])
              for r in listed["Rotations"]]  # fmt: skip
    assert states == [(id1, "CURRENT", "IMPORTED"), (id2, "PENDING_ROTATION", "IMPORTED")]
    assert listed["Rotations"][1]["KeyMaterialDescription"] == "second"
    with pytest.raises(KMSInvalidStateException, match="pending rotation"):
        import_material(km, key_id, os.urandom(32), import_type="NEW_KEY_MATERIAL")
    km.rotate_key_on_demand(key_id=key_id)
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert meta["CurrentKeyMaterialId"] == id2 and meta["ValidTo"] == clock() + timedelta(days=10)
    new = km.encrypt(key_id=key_id, plaintext=b"two")["CiphertextBlob"]
    assert new[17:21] == b"\x00\x00\x00\x02"  # the blob names material version 2
    (rotation,) = km.list_key_rotations(key_id=key_id)["Rotations"]
    assert rotation["RotationType"] == "ON_DEMAND" and rotation["KeyMaterialId"] == id2
    assert rotation["KeyMaterialState"] == "CURRENT"
    # Deleting the older material makes the key unusable until that one comes back.
    km.delete_imported_key_material(key_id=key_id, key_material_id=id1)
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    with pytest.raises(KMSInvalidStateException):
        km.decrypt(ciphertext_blob=new)
    with pytest.raises(IncorrectKeyMaterialException):
        import_material(km, key_id, os.urandom(32))
    assert import_material(km, key_id, first)["KeyMaterialId"] == id1  # found by the token
    assert km.decrypt(ciphertext_blob=old)["Plaintext"] == b"one"
    assert km.decrypt(ciphertext_blob=new)["Plaintext"] == b"two"
    # The current material expires: the maintenance pass deletes it.
    clock.advance(days=10, seconds=1)
    assert km.maintain().material_expired
    assert hsm.facts(MaterialRef(key_id, 2)) == [] and len(hsm.facts(MaterialRef(key_id, 1))) == 1
    import_material(km, key_id, second, key_material_id=id2)
    assert km.decrypt(ciphertext_blob=new)["Plaintext"] == b"two"


def test_material_pending_rotation_can_be_replaced(km: KeyManager, hsm: Hsm) -> None:
    key_id = external(km)
    import_material(km, key_id, os.urandom(32))
    pending = import_material(km, key_id, os.urandom(32), import_type="NEW_KEY_MATERIAL")
    km.delete_imported_key_material(key_id=key_id, key_material_id=pending["KeyMaterialId"])
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert hsm.facts(MaterialRef(key_id, 2)) == []
    listed = km.list_key_rotations(key_id=key_id, include_key_material="ALL_KEY_MATERIAL")
    assert len(listed["Rotations"]) == 1
    replacement = import_material(km, key_id, os.urandom(32), import_type="NEW_KEY_MATERIAL")
    km.rotate_key_on_demand(key_id=key_id)
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert meta["CurrentKeyMaterialId"] == replacement["KeyMaterialId"]
    hmac_key = external(km, key_spec="HMAC_256", key_usage="GENERATE_VERIFY_MAC")
    import_material(km, hmac_key, os.urandom(32))
    with pytest.raises(UnsupportedOperationException, match="symmetric encryption"):
        import_material(km, hmac_key, os.urandom(32), import_type="NEW_KEY_MATERIAL")
