"""Two nodes (two KeyManagers, each with its own caches) on one database and token:
a change committed on one node is seen by the very next call on the other, with no
waiting for a cache to expire. Runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsmkms.errors import DisabledException, KMSInvalidStateException, NotFoundException
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.policy.caller import CallerInfo
from hsmkms.policy.principals import CredentialStore
from hsmkms.store import open_store
from hsmkms.token import Hsm
from tests.conftest import ACCOUNT, REGION

USER = f"arn:aws:iam::{ACCOUNT}:user/node-user"


@pytest.fixture(params=["sqlite", "postgresql"])
def nodes(request: pytest.FixtureRequest, hsm: Hsm, tmp_path: Path) -> Iterator[list[KeyManager]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    stores = [open_store(url), open_store(url)]
    # A long time-to-live: only the store's generation may end a cache entry here.
    managers = [
        KeyManager(Deployment(s, hsm, account_id=ACCOUNT, cache_seconds=3600), REGION)
        for s in stores
    ]
    yield managers
    for store in stores:
        store.close()


def test_key_state_is_seen_at_once(nodes: list[KeyManager]) -> None:
    a, b = nodes
    key_id = a.create_key()["KeyMetadata"]["KeyId"]
    blob = a.encrypt(key_id=key_id, plaintext=b"x")["CiphertextBlob"]  # cached on a
    b.disable_key(key_id=key_id)
    with pytest.raises(DisabledException):
        a.encrypt(key_id=key_id, plaintext=b"x")
    with pytest.raises(DisabledException):
        a.decrypt(ciphertext_blob=blob)
    b.enable_key(key_id=key_id)
    assert a.decrypt(ciphertext_blob=blob)["Plaintext"] == b"x"
    b.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
    with pytest.raises(KMSInvalidStateException):
        a.encrypt(key_id=key_id, plaintext=b"x")


def test_alias_moves_are_seen_at_once(nodes: list[KeyManager]) -> None:
    a, b = nodes
    first, second = (a.create_key()["KeyMetadata"]["KeyId"] for _ in range(2))
    a.create_alias(alias_name="alias/moving", target_key_id=first)
    assert a.encrypt(key_id="alias/moving", plaintext=b"x")["KeyId"].endswith(first)
    b.update_alias(alias_name="alias/moving", target_key_id=second)
    assert a.encrypt(key_id="alias/moving", plaintext=b"x")["KeyId"].endswith(second)
    b.delete_alias(alias_name="alias/moving")
    with pytest.raises(NotFoundException):
        a.encrypt(key_id="alias/moving", plaintext=b"x")


def test_policies_and_grants_are_seen_at_once(nodes: list[KeyManager]) -> None:
    a, b = nodes
    key_id = a.create_key()["KeyMetadata"]["KeyId"]
    caller = CallerInfo(USER)
    record = a.context.cached(key_id).record

    def allowed() -> bool:
        a.context.keys.refresh()  # what each API request does first
        record = a.context.cached(key_id).record
        _, decision = a.authorizer.decide(caller, "kms:Encrypt", record, {})
        return decision.allowed

    assert not allowed()
    allow = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}]}  # fmt: skip
    CredentialStore(b.store, b.hsm).attach_policy(USER, "p", json.dumps(allow))
    assert allowed()  # an identity policy attached on node b
    deny = {"Version": "2012-10-17", "Statement": [
        {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "no", "Effect": "Deny", "Principal": {"AWS": USER}, "Action": "kms:Encrypt",
         "Resource": "*"}]}  # fmt: skip
    b.put_key_policy(key_id=key_id, policy=json.dumps(deny))
    assert not allowed()  # a key policy changed on node b
    assert record.policy != a.context.cached(key_id).record.policy


def test_concurrent_tag_writes_on_two_nodes_lose_nothing(nodes: list[KeyManager]) -> None:
    a, b = nodes
    key_id = a.create_key()["KeyMetadata"]["KeyId"]

    def tag(node: KeyManager, prefix: str) -> None:
        for n in range(10):
            node.tag_resource(key_id=key_id, tags=[{"TagKey": f"{prefix}{n}", "TagValue": "v"}])

    threads = [
        threading.Thread(target=tag, args=(node, name)) for node, name in ((a, "a"), (b, "b"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tags = a.list_resource_tags(key_id=key_id, limit=50)["Tags"]
    assert len(tags) == 20
