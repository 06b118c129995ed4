"""Principals' access keys over the real HTTP server, a real token and SQLite: IAM's
limits and statuses, revocation seen by the next request, a row removed behind hsmkms's
back refused within the cache's time bound, and `remove` taking what names a principal."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from hsmkms.api.app import create_app
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.errors import LimitExceededException, NotFoundException, ValidationException
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.policy.principals import ADMIN_POLICY, CredentialStore
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm
from tests.conftest import ACCOUNT, REGION, running

ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:user/bob"
INVALID_TOKEN = "The security token included in the request is invalid."


@dataclass
class Served:
    url: str
    km: KeyManager
    credentials: CredentialStore
    path: Path

    def client(self, access_key_id: str, secret: str) -> Any:
        return boto3.client(
            "kms",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"total_max_attempts": 1}),
        )


@pytest.fixture
def served(hsm: Hsm, tmp_path: Path) -> Iterator[Served]:
    path = tmp_path / "hsmkms.db"
    store = SqliteStore(path)
    km = KeyManager(Deployment(store, hsm, account_id=ACCOUNT), REGION)
    # The server's own credential store, as bootstrap wires it; the test changes keys
    # through a second one, as the CLI (another process) would.
    server_side = CredentialStore(store, hsm, cache_seconds=1.0)
    verifier = SigV4Verifier(server_side.lookup, on_verified=server_side.record_use)
    app = create_app(km.context, verifier, maintenance_seconds=0)
    with running(app) as url:
        yield Served(url, km, CredentialStore(store, hsm), path)
    store.close()


def admin_client(served: Served, arn: str = ALICE) -> tuple[Any, str]:
    credential = served.credentials.add(arn)
    served.credentials.attach_policy(arn, "admin", ADMIN_POLICY)
    return served.client(credential.access_key_id, credential.secret_access_key), (
        credential.access_key_id
    )


def refused(kms: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        kms.generate_random(NumberOfBytes=8)
    return caught.value


def test_a_disabled_key_is_refused_by_the_next_request_and_works_again_when_enabled(
    served: Served,
) -> None:
    kms, key_id = admin_client(served)
    assert len(kms.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    served.credentials.set_status(key_id, "Inactive")
    error = refused(kms).response  # no waiting: the store's generation moved
    assert error["Error"] == {"Code": "UnrecognizedClientException", "Message": INVALID_TOKEN}
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    (listed,) = served.credentials.access_keys(ALICE)
    assert listed.status == "Inactive"
    served.credentials.set_status(key_id, "Active")
    assert len(kms.generate_random(NumberOfBytes=8)["Plaintext"]) == 8


def test_a_deleted_key_is_refused_and_the_principals_other_key_still_works(
    served: Served,
) -> None:
    kms, key_id = admin_client(served)
    second = served.credentials.add(ALICE)
    other = served.client(second.access_key_id, second.secret_access_key)
    kms.generate_random(NumberOfBytes=8)  # cached by the server
    served.credentials.delete_access_key(key_id)
    assert refused(kms).response["Error"]["Message"] == INVALID_TOKEN
    assert len(other.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    with pytest.raises(NotFoundException, match=f"The Access Key with id {key_id} cannot"):
        served.credentials.delete_access_key(key_id)


def test_a_key_removed_behind_hsmkms_back_is_refused_within_the_cache_bound(
    served: Served,
) -> None:
    """A row deleted with plain SQL moves no generation: the time bound alone must do."""
    kms, key_id = admin_client(served)
    kms.generate_random(NumberOfBytes=8)
    with sqlite3.connect(served.path) as conn:
        conn.execute("DELETE FROM access_keys WHERE access_key_id = ?", (key_id,))
    deadline = time.monotonic() + 5.0
    while True:
        try:
            kms.generate_random(NumberOfBytes=8)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "UnrecognizedClientException"
            break
        assert time.monotonic() < deadline, "a deleted access key still authenticates"
        time.sleep(0.2)


def test_a_key_id_made_again_with_a_new_secret_refuses_the_old_secret(served: Served) -> None:
    served.credentials.add(ALICE, "REUSEDKEYID", "first-secret-0123456789")
    served.credentials.attach_policy(ALICE, "admin", ADMIN_POLICY)
    old = served.client("REUSEDKEYID", "first-secret-0123456789")
    old.generate_random(NumberOfBytes=8)
    served.credentials.delete_access_key("REUSEDKEYID")
    served.credentials.add(ALICE, "REUSEDKEYID", "second-secret-0123456789")
    assert refused(old).response["Error"]["Code"] == "InvalidSignatureException"
    new = served.client("REUSEDKEYID", "second-secret-0123456789")
    assert len(new.generate_random(NumberOfBytes=8)["Plaintext"]) == 8


def test_at_most_two_access_keys_per_principal_inactive_ones_included(served: Served) -> None:
    first = served.credentials.add(ALICE)
    served.credentials.add(ALICE)
    served.credentials.set_status(first.access_key_id, "Inactive")
    with pytest.raises(LimitExceededException) as caught:
        served.credentials.add(ALICE)
    assert caught.value.code == "LimitExceeded"  # IAM's code, not KMS's
    assert caught.value.message == "Cannot exceed quota for AccessKeysPerUser: 2"
    served.credentials.add(BOB)  # the quota is per principal
    served.credentials.delete_access_key(first.access_key_id)
    served.credentials.add(ALICE)
    assert len(served.credentials.access_keys(ALICE)) == 2


def test_last_used_is_stamped_only_by_a_verified_request(served: Served) -> None:
    kms, key_id = admin_client(served)
    forged = served.client(key_id, "not-the-secret")
    assert refused(forged).response["Error"]["Code"] == "InvalidSignatureException"
    (unused,) = served.credentials.access_keys(ALICE)
    assert unused.last_used_at is None and unused.last_used_region is None
    kms.generate_random(NumberOfBytes=8)
    (used,) = served.credentials.access_keys(ALICE)
    assert used.last_used_at is not None and used.last_used_region == REGION


def test_status_takes_only_active_or_inactive(served: Served) -> None:
    credential = served.credentials.add(ALICE)
    with pytest.raises(ValidationException, match=r"enum value set: \[Active, Inactive\]"):
        served.credentials.set_status(credential.access_key_id, "Disabled")
    with pytest.raises(NotFoundException, match="The Access Key with id NOPE cannot be found"):
        served.credentials.set_status("NOPE", "Inactive")


def test_remove_takes_keys_policies_tags_and_the_grants_it_holds(served: Served) -> None:
    kms, key_id = admin_client(served)
    served.credentials.tag_principal(ALICE, {"team": "blue"})
    served.credentials.add(BOB)
    km = served.km
    key = km.create_key(description="named")["KeyMetadata"]["KeyId"]
    held = km.create_grant(key_id=key, grantee_principal=ALICE, operations=["Encrypt"])
    retiring = km.create_grant(
        key_id=key, grantee_principal=BOB, operations=["Encrypt"], retiring_principal=ALICE
    )
    policy = json.loads(km.get_key_policy(key_id=key)["Policy"])
    policy["Statement"].append(
        {"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": "kms:Encrypt", "Resource": "*"}
    )
    km.put_key_policy(key_id=key, policy=json.dumps(policy))

    removed = served.credentials.remove(ALICE)

    assert removed.access_key_ids == [key_id]
    assert removed.policy_names == ["admin"] and removed.tags == {"team": "blue"}
    assert removed.revoked_grant_ids == [held["GrantId"]]
    assert removed.key_policies_naming_it == [km.describe_key(key_id=key)["KeyMetadata"]["Arn"]]
    assert refused(kms).response["Error"]["Code"] == "UnrecognizedClientException"
    assert [g.grant_id for g in km.store.list_grants(key)] == [retiring["GrantId"]]
    assert served.credentials.principals() == [BOB]
    with pytest.raises(NotFoundException, match="The user with name alice cannot be found"):
        served.credentials.describe(ALICE)
    with pytest.raises(NotFoundException, match="The user with name alice cannot be found"):
        served.credentials.remove(ALICE)
    served.credentials.add(ALICE)  # the ARN may be used again: it inherits nothing
    assert served.credentials.describe(ALICE).policies == {}


def test_show_and_list_never_carry_a_secret(served: Served) -> None:
    credential = served.credentials.add(ALICE)
    served.credentials.attach_policy(ALICE, "admin", ADMIN_POLICY)
    shown = served.credentials.describe(ALICE)
    assert [k.access_key_id for k in shown.access_keys] == [credential.access_key_id]
    assert shown.policies == {"admin": ADMIN_POLICY}
    assert credential.secret_access_key not in repr(shown)
    assert credential.secret_access_key not in repr(served.credentials.access_keys())


def test_detach_policy(served: Served) -> None:
    served.credentials.attach_policy(ALICE, "one", ADMIN_POLICY)
    served.credentials.attach_policy(ALICE, "two", ADMIN_POLICY)
    served.credentials.detach_policy(ALICE, "one")
    assert list(served.credentials.describe(ALICE).policies) == ["two"]
    with pytest.raises(NotFoundException, match="The user policy with name one cannot be found"):
        served.credentials.detach_policy(ALICE, "one")
    served.credentials.detach_policy(ALICE, "two")  # nothing names alice any more
    assert served.credentials.principals() == []


def test_a_detached_policy_stops_allowing_from_the_next_request(served: Served) -> None:
    kms, _ = admin_client(served)
    kms.generate_random(NumberOfBytes=8)  # the identity policy is cached now
    served.credentials.detach_policy(ALICE, "admin")
    with pytest.raises(ClientError) as caught:
        kms.generate_random(NumberOfBytes=8)
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
