"""The store's side of principals: access keys with their status and last use, identity
policies listed by principal and detached, run against SQLite, PostgreSQL and the fake."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hsmkms.store.base import MetadataStore
from hsmkms.store.model import AccessKey
from hsmkms.store.schema import HISTORY, Dialect, statements
from hsmkms.store.sqlite import SqliteStore
from tests.store.test_store import NOW, open_backend


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    store = open_backend(request.param, request, tmp_path)
    yield store
    store.close()


ALICE = "arn:aws:iam::111122223333:user/alice"


def test_access_keys_change_status_record_use_and_go(any_store: MetadataStore) -> None:
    first = AccessKey("AKIAFIRST", ALICE, b"wrapped-1", NOW)
    second = AccessKey("AKIASECOND", ALICE, b"wrapped-2", NOW.replace(hour=1))
    with any_store.transaction() as tx:
        tx.put_access_key(second)
        tx.put_access_key(first)
        tx.put_access_key(AccessKey("AKIABOB", "arn:aws:iam::111122223333:user/bob", b"w", NOW))
    assert any_store.principal_access_keys(ALICE) == [first, second]  # oldest first
    assert first.status == "Active" and first.last_used_at is None
    before = any_store.generation()
    with any_store.transaction() as tx:
        tx.put_access_key(replace(first, status="Inactive"))
    assert any_store.get_access_key("AKIAFIRST") == replace(first, status="Inactive")
    assert any_store.generation() > before  # every node's credential cache must see it
    before = any_store.generation()
    with any_store.transaction() as tx:
        tx.record_access_key_use("AKIASECOND", NOW.replace(hour=2), "eu-west-1")
    used = any_store.get_access_key("AKIASECOND")
    assert used == replace(second, last_used_at=NOW.replace(hour=2), last_used_region="eu-west-1")
    assert any_store.generation() == before  # a use stamp changes nobody's permissions
    with any_store.transaction() as tx:
        tx.delete_access_key("AKIAFIRST")
    assert any_store.get_access_key("AKIAFIRST") is None
    assert [k.access_key_id for k in any_store.principal_access_keys(ALICE)] == ["AKIASECOND"]
    assert any_store.generation() > before


def test_identity_policies_list_their_principals_and_detach(any_store: MetadataStore) -> None:
    with any_store.transaction() as tx:
        tx.put_identity_policy(ALICE, "b", "{}")
        tx.put_identity_policy(ALICE, "a", "{}")
        tx.put_identity_policy("arn:aws:iam::111122223333:role/r", "a", "{}")
    assert any_store.policy_principals() == ["arn:aws:iam::111122223333:role/r", ALICE]
    before = any_store.generation()
    with any_store.transaction() as tx:
        tx.delete_identity_policy(ALICE, "a")
    assert any_store.identity_policies(ALICE) == {"b": "{}"}
    assert any_store.generation() > before
    with any_store.transaction() as tx:
        tx.delete_identity_policy(ALICE, "b")
    assert any_store.policy_principals() == ["arn:aws:iam::111122223333:role/r"]


def test_document_writes_move_the_generation(any_store: MetadataStore) -> None:
    """Principal tags are documents: caches checked against the generation must see them."""
    before = any_store.generation()
    with any_store.transaction() as tx:
        tx.put_document("principal-tags", ALICE, "{}")
    after_put = any_store.generation()
    assert after_put > before
    with any_store.transaction() as tx:
        tx.delete_document("principal-tags", ALICE)
    assert any_store.generation() > after_put


def test_sqlite_keeps_access_keys_of_an_older_schema_active(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path)
    for migration in HISTORY[:8]:  # before access keys had a status
        for statement in statements(migration, Dialect.SQLITE):
            conn.execute(statement)
    conn.execute(
        "INSERT INTO access_keys VALUES ('AKIAOLD', ?, ?, ?)", (ALICE, b"w", NOW.isoformat())
    )
    conn.execute("PRAGMA user_version = 8")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    assert store.get_access_key("AKIAOLD") == AccessKey("AKIAOLD", ALICE, b"w", NOW)
    store.close()
