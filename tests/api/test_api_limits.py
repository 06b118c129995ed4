"""Per-principal request quotas, and a database locked for long, over HTTP with boto3
(retries off) against a real token and SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from hsmkms.api.ratelimit import THROTTLED, RateLimiter
from hsmkms.config import RateLimits
from hsmkms.config.groups import Quota, parse_quotas
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm
from tests.conftest import ACCOUNT, REGION, ManualClock
from tests.support.resilience_helpers import serving


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def outcome(call: object) -> str:
    try:
        call()  # type: ignore[operator]
    except ClientError as exc:
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        return f"{exc.response['Error']['Code']} {status} {exc.response['Error']['Message']}"
    return "ok"


def test_one_principal_over_quota_is_throttled_and_others_are_not(km: KeyManager) -> None:
    ticks = Ticks()
    limiter = RateLimiter(Quota(rate=2, burst=3), {"CreateKey": Quota(1, 1)}, clock=ticks)
    with serving(km, rate_limiter=limiter, principals=("greedy", "patient")) as (_, clients):
        greedy, patient = clients["greedy"], clients["patient"]
        results = [outcome(lambda: greedy.generate_random(NumberOfBytes=8)) for _ in range(5)]
        assert results == ["ok"] * 3 + [f"ThrottlingException 400 {THROTTLED}"] * 2
        # The other principal has its own bucket.
        assert outcome(lambda: patient.generate_random(NumberOfBytes=8)) == "ok"
        ticks.now += 1.0  # two requests' worth refilled
        results = [outcome(lambda: greedy.generate_random(NumberOfBytes=8)) for _ in range(3)]
        assert [r.split()[0] for r in results] == ["ok", "ok", "ThrottlingException"]
        # An operation with a quota of its own is counted apart from the rest.
        assert outcome(lambda: patient.create_key()) == "ok"
        assert outcome(lambda: patient.create_key()).startswith("ThrottlingException 400")
        assert outcome(lambda: patient.generate_random(NumberOfBytes=8)) == "ok"


def test_quota_settings_parse_and_refuse_nonsense() -> None:
    assert parse_quotas("CreateKey=5, Encrypt=100:200") == {
        "CreateKey": Quota(5, 5),
        "Encrypt": Quota(100, 200),
    }
    assert RateLimiter.configured(RateLimits()) is None
    for bad in ("CreateKey", "=5", "CreateKey=0", "CreateKey=x"):
        with pytest.raises(ValueError):
            parse_quotas(bad)


def test_a_locked_database_times_out_cleanly_and_service_resumes(
    hsm: Hsm, tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "hsmkms.db"
    store = SqliteStore(path, busy_timeout=0.5)
    km = KeyManager(Deployment(store, hsm, account_id=ACCOUNT, clock=clock), REGION)
    key_id = km.create_key()["KeyMetadata"]["KeyId"]
    with serving(km, call_timeout=10.0) as (_, clients):
        kms = clients["tester"]
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"before")["CiphertextBlob"]
        before = {ref for ref in hsm.material_refs()}
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        try:
            for call in (lambda: kms.create_key(), lambda: kms.disable_key(KeyId=key_id)):
                assert outcome(call).startswith(
                    "DependencyTimeoutException 503 The database did not answer in time."
                )
            # Reads go on (WAL), so does cryptography.
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before"
        finally:
            other.execute("ROLLBACK")
            other.close()
        # Nothing half-written: no intent row, no new token object, the key unchanged.
        assert store.list_pending() == []
        assert {ref for ref in hsm.material_refs()} == before
        assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
        assert kms.create_key()["KeyMetadata"]["KeyState"] == "Enabled"
        kms.disable_key(KeyId=key_id)
        assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    store.close()
