"""Crash injection: a crash at any point of create, rotate or delete leaves no
usable half key and loses nothing; `maintain` reconciles and reports."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hsmkms.errors import KMSInvalidStateException, NotFoundException
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm, MaterialRef
from tests.conftest import ACCOUNT, REGION, ManualClock


class Crash(Exception):
    pass


def crashing_at(point: str) -> Callable[[str], None]:
    def hook(reached: str) -> None:
        if reached == point:
            raise Crash(point)

    return hook


def manager(
    hsm: Hsm, store: SqliteStore, clock: ManualClock, crash_point: str | None
) -> KeyManager:
    hook = None if crash_point is None else crashing_at(crash_point)
    return KeyManager(Deployment(store, hsm, account_id=ACCOUNT, clock=clock, crash=hook), REGION)


def token_versions(hsm: Hsm, key_id: str) -> set[int]:
    return {ref.version for ref in hsm.material_refs() if ref.key_id == key_id}


@pytest.mark.parametrize("point", ["after-intent", "after-token"])
def test_crash_during_create_leaves_no_key(
    hsm: Hsm, store: SqliteStore, clock: ManualClock, point: str
) -> None:
    crashing = manager(hsm, store, clock, point)
    with pytest.raises(Crash):
        crashing.create_key()
    km = manager(hsm, store, clock, None)
    assert km.list_keys()["Keys"] == []
    (intent,) = store.list_pending()
    had_object = point == "after-token"
    assert token_versions(hsm, intent.key_id) == ({1} if had_object else set())
    with pytest.raises(NotFoundException):
        km.encrypt(key_id=intent.key_id, plaintext=b"x")

    # Within the grace period the intent may belong to a create still running.
    assert km.maintain().reconcile.intents_cleared == []
    assert token_versions(hsm, intent.key_id) == ({1} if had_object else set())

    clock.advance(hours=1)
    report = km.maintain().reconcile
    label = f"hsmkms/{intent.key_id}/v1"
    assert report.intents_cleared == [label]
    assert report.orphans_destroyed == ([label] if had_object else [])
    assert token_versions(hsm, intent.key_id) == set() and store.list_pending() == []
    assert km.create_key()["KeyMetadata"]["KeyState"] == "Enabled"  # and life goes on


@pytest.mark.parametrize("point", ["after-intent", "after-token"])
def test_crash_during_rotation_keeps_the_old_version(
    hsm: Hsm, store: SqliteStore, clock: ManualClock, point: str
) -> None:
    km = manager(hsm, store, clock, None)
    key_id = km.create_key()["KeyMetadata"]["KeyId"]
    before = km.encrypt(key_id=key_id, plaintext=b"kept")["CiphertextBlob"]
    with pytest.raises(Crash):
        manager(hsm, store, clock, point).rotate_key_on_demand(key_id=key_id)

    km = manager(hsm, store, clock, None)
    assert km.list_key_rotations(key_id=key_id)["Rotations"] == []
    after = km.encrypt(key_id=key_id, plaintext=b"still v1")["CiphertextBlob"]
    assert after[17:21] == b"\0\0\0\1"
    assert km.decrypt(ciphertext_blob=before)["Plaintext"] == b"kept"

    clock.advance(hours=1)
    report = km.maintain().reconcile
    assert report.orphans_destroyed == ([f"hsmkms/{key_id}/v2"] if point == "after-token" else [])
    assert token_versions(hsm, key_id) == {1}
    km.rotate_key_on_demand(key_id=key_id)  # the next rotation takes version 2 cleanly
    assert token_versions(hsm, key_id) == {1, 2}
    assert km.decrypt(ciphertext_blob=before)["Plaintext"] == b"kept"


def test_crash_during_deletion_is_finished_by_maintain(
    hsm: Hsm, store: SqliteStore, clock: ManualClock
) -> None:
    km = manager(hsm, store, clock, None)
    key_id = km.create_key()["KeyMetadata"]["KeyId"]
    km.rotate_key_on_demand(key_id=key_id)
    km.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
    clock.advance(days=8)
    with pytest.raises(Crash):
        manager(hsm, store, clock, "after-rows").maintain()
    with pytest.raises(NotFoundException):
        km.describe_key(key_id=key_id)
    assert token_versions(hsm, key_id) == {1, 2}  # rows gone, objects not yet

    clock.advance(hours=1)
    report = km.maintain().reconcile
    assert sorted(report.orphans_destroyed) == [f"hsmkms/{key_id}/v1", f"hsmkms/{key_id}/v2"]
    assert token_versions(hsm, key_id) == set() and store.list_pending() == []


def test_missing_material_makes_the_key_unavailable_until_it_returns(
    hsm: Hsm, store: SqliteStore, clock: ManualClock
) -> None:
    km = manager(hsm, store, clock, None)
    key_id = km.create_key()["KeyMetadata"]["KeyId"]
    km.disable_key(key_id=key_id)
    hsm.destroy(MaterialRef(key_id, 1))  # behind hsmkms's back
    report = km.maintain().reconcile
    assert report.material_missing == [f"hsmkms/{key_id}/v1"]
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "Unavailable"
    with pytest.raises(KMSInvalidStateException, match="is unavailable"):
        km.encrypt(key_id=key_id, plaintext=b"x")

    hsm.generate_aes_key(MaterialRef(key_id, 1))  # e.g. the token restored from backup
    report = km.maintain().reconcile
    assert report.material_restored == [f"hsmkms/{key_id}/v1"]
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


def test_objects_no_row_or_intent_names_are_reported_not_destroyed(
    hsm: Hsm, store: SqliteStore, clock: ManualClock
) -> None:
    stranger = MaterialRef("0badc0de-0000-4000-8000-000000000000", 1)
    hsm.generate_aes_key(stranger)
    try:
        km = manager(hsm, store, clock, None)
        clock.advance(days=365)
        report = km.maintain().reconcile
        assert stranger.label in report.unknown_objects
        assert report.orphans_destroyed == []
        assert len(hsm.facts(stranger)) == 1
    finally:
        hsm.destroy(stranger)
