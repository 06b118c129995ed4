"""The server's maintenance loop runs due deletions and rotations by itself."""

from __future__ import annotations

import time
from pathlib import Path

from hsmkms.api.app import create_app
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm
from tests.conftest import ACCOUNT, REGION, ManualClock, running


def test_maintenance_loop_deletes_and_rotates(hsm: Hsm, tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqliteStore(tmp_path / "db.sqlite")
    km = KeyManager(Deployment(store, hsm, account_id=ACCOUNT, clock=clock), REGION)
    doomed = km.create_key()["KeyMetadata"]["KeyId"]
    rotating = km.create_key()["KeyMetadata"]["KeyId"]
    km.schedule_key_deletion(key_id=doomed, pending_window_in_days=7)
    km.enable_key_rotation(key_id=rotating, rotation_period_in_days=90)
    clock.advance(days=91)
    app = create_app(km.context, SigV4Verifier(lambda _: None), maintenance_seconds=0.05)
    with running(app):
        deadline = time.monotonic() + 10
        while (
            store.get_key(doomed) is not None
            or not km.list_key_rotations(key_id=rotating)["Rotations"]
        ):
            assert time.monotonic() < deadline, "maintenance did not run"
            time.sleep(0.05)
    assert km.list_key_rotations(key_id=rotating)["Rotations"][0]["RotationType"] == "AUTOMATIC"
    store.close()
