"""One read of the store's generation per API request: the credential check (SigV4)
and the key cache both ask for it at the request's start; a SQLite read costs
10-15 µs of CPU, most of a small request's store work. A write committed before
the request is still seen by it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from hsmkms.policy.principals import CredentialStore
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm
from tests.conftest import ACCOUNT
from tests.support.edge_support import edge_server

ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}
)  # fmt: skip
DENY_ENCRYPT = json.dumps(
    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Deny", "Action": "kms:Encrypt", "Resource": "*"}]}
)  # fmt: skip


def _generation_reads(store: SqliteStore, call: Any) -> int:
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        call()
    finally:
        store._conn.set_trace_callback(None)
    return sum("FROM store_generation" in s and s.startswith("SELECT") for s in statements)


def test_a_request_reads_the_generation_once(hsm: Hsm, tmp_path: Path) -> None:
    with edge_server(hsm, tmp_path) as server:
        kms = server.client()
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        store = server.km.store
        assert isinstance(store, SqliteStore)
        reads = _generation_reads(store, lambda: kms.encrypt(KeyId=key_id, Plaintext=b"x"))
        assert reads == 1


def test_a_write_by_another_node_is_seen_by_the_next_request(hsm: Hsm, tmp_path: Path) -> None:
    with edge_server(hsm, tmp_path) as server:
        kms = server.client()
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.describe_key(KeyId=key_id)  # cached now
        other = SqliteStore(tmp_path / "hsmkms.db")  # another node on the same database
        try:
            with other.transaction() as tx:
                record = tx.get_key(key_id)
                assert record is not None
                tx.put_key(replace(record, description="changed elsewhere"))
        finally:
            other.close()
        described = kms.describe_key(KeyId=key_id)["KeyMetadata"]
        assert described["Description"] == "changed elsewhere"


def test_a_deny_attached_on_another_node_refuses_the_next_request(hsm: Hsm, tmp_path: Path) -> None:
    with edge_server(hsm, tmp_path) as server:
        kms = server.principal("reader", ALLOW_ALL)
        key_id = server.client().create_key()["KeyMetadata"]["KeyId"]
        kms.encrypt(KeyId=key_id, Plaintext=b"x")  # credential and key cached now
        other = SqliteStore(tmp_path / "hsmkms.db")  # another node on the same database
        try:
            arn = f"arn:aws:iam::{ACCOUNT}:user/reader"
            CredentialStore(other, hsm).attach_policy(arn, "deny", DENY_ENCRYPT)
        finally:
            other.close()
        with pytest.raises(ClientError) as refused:
            kms.encrypt(KeyId=key_id, Plaintext=b"x")
        assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
