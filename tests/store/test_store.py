"""The metadata store contract, run against SQLite, PostgreSQL and the in-memory fake."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hsmkms.errors import KMSInternalException
from hsmkms.store.base import MetadataStore
from hsmkms.store.memory import MemoryStore
from hsmkms.store.model import (
    Alias,
    Grant,
    KeyRecord,
    KeySpec,
    KeyState,
    KeyUsage,
    KeyVersion,
    Origin,
    PendingMaterial,
    RotationType,
)
from hsmkms.store.postgres import PostgresStore
from hsmkms.store.schema import HISTORY, Dialect, statements
from hsmkms.store.sqlite import MIGRATIONS, SqliteStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(key_id: str, region: str = "us-east-1") -> KeyRecord:
    return KeyRecord(
        key_id=key_id,
        region=region,
        account_id="111122223333",
        creation_date=NOW,
        key_spec=KeySpec.SYMMETRIC_DEFAULT,
        key_usage=KeyUsage.ENCRYPT_DECRYPT,
        origin=Origin.AWS_KMS,
        state=KeyState.ENABLED,
        current_version=1,
        multi_region_config={"MultiRegionKeyType": "PRIMARY"},
        extra={"note": "kept"},
    )


def key_ids(count: int) -> list[str]:
    return [f"{n:08x}-0000-4000-8000-000000000000" for n in range(count)]


def open_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> MetadataStore:
    if kind == "sqlite":
        return SqliteStore(tmp_path / "db.sqlite")
    if kind == "postgres":  # a fresh database per test, on the session's server
        return PostgresStore(request.getfixturevalue("pg_url"))
    return MemoryStore()


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    store = open_backend(request.param, request, tmp_path)
    yield store
    store.close()


def test_round_trip_keeps_every_field(any_store: MetadataStore) -> None:
    key = replace(record(key_ids(1)[0]), deletion_date=NOW, pending_window_days=7)
    with any_store.transaction() as tx:
        tx.put_key(key)
        tx.put_version(KeyVersion(key.key_id, 2, NOW, RotationType.ON_DEMAND))
    assert any_store.get_key(key.key_id) == key
    assert any_store.list_versions(key.key_id)[0].rotation_type is RotationType.ON_DEMAND


def test_failed_transaction_writes_nothing(any_store: MetadataStore) -> None:
    first, second = key_ids(2)
    with pytest.raises(RuntimeError), any_store.transaction() as tx:
        tx.put_key(record(first))
        tx.put_key(record(second))
        raise RuntimeError("crash mid-transaction")
    assert any_store.get_key(first) is None
    assert any_store.get_key(second) is None


def test_reads_in_a_transaction_see_its_writes(any_store: MetadataStore) -> None:
    key = record(key_ids(1)[0])
    with any_store.transaction() as tx:
        tx.put_key(key)
        assert tx.get_key(key.key_id) == key


def test_delete_key_takes_versions_and_aliases(any_store: MetadataStore) -> None:
    key = record(key_ids(1)[0])
    with any_store.transaction() as tx:
        tx.put_key(key)
        tx.put_version(KeyVersion(key.key_id, 1, NOW, None))
        tx.put_alias(Alias("alias/a", key.key_id, "us-east-1", key.account_id, NOW, NOW))
    with any_store.transaction() as tx:
        tx.delete_key(key.key_id)
    assert any_store.get_key(key.key_id) is None
    assert any_store.list_versions(key.key_id) == []
    assert any_store.get_alias("us-east-1", "alias/a") is None


def test_updating_a_key_keeps_its_versions_and_aliases(any_store: MetadataStore) -> None:
    key = record(key_ids(1)[0])
    with any_store.transaction() as tx:
        tx.put_key(key)
        tx.put_version(KeyVersion(key.key_id, 1, NOW, None))
        tx.put_alias(Alias("alias/a", key.key_id, "us-east-1", key.account_id, NOW, NOW))
    with any_store.transaction() as tx:
        tx.put_key(replace(key, state=KeyState.DISABLED, current_version=2))
    assert any_store.get_key(key.key_id) == replace(key, state=KeyState.DISABLED, current_version=2)
    assert [v.version for v in any_store.list_versions(key.key_id)] == [1]
    assert any_store.get_alias("us-east-1", "alias/a") is not None


def test_listing_is_ordered_paged_and_region_scoped(any_store: MetadataStore) -> None:
    ids = key_ids(5)
    with any_store.transaction() as tx:
        for key_id in ids:
            tx.put_key(record(key_id))
        tx.put_key(record("ffffffff-0000-4000-8000-000000000000", region="eu-west-1"))
    first = any_store.list_keys("us-east-1", None, 2)
    assert [k.key_id for k in first] == ids[:2]
    rest = any_store.list_keys("us-east-1", first[-1].key_id, 10)
    assert [k.key_id for k in rest] == ids[2:]
    assert len(any_store.list_keys(None, None, 100)) == 6


def test_pending_material_round_trip(any_store: MetadataStore) -> None:
    with any_store.transaction() as tx:
        tx.add_pending(PendingMaterial("k", 1, NOW))
    assert any_store.list_pending() == [PendingMaterial("k", 1, NOW)]
    with any_store.transaction() as tx:
        tx.remove_pending("k", 1)
    assert any_store.list_pending() == []


def test_sqlite_schema_is_versioned_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path)
    assert store.schema_version == len(MIGRATIONS)
    key = record(key_ids(1)[0])
    with store.transaction() as tx:
        tx.put_key(key)
    store.close()
    reopened = SqliteStore(path)
    assert reopened.get_key(key.key_id) == key
    reopened.close()


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(KMSInternalException, match="newer"):
        SqliteStore(path)


def test_documents_by_kind(any_store: MetadataStore) -> None:
    with any_store.transaction() as tx:
        tx.put_document("keystore", "b", '{"n": 2}')
        tx.put_document("keystore", "a", '{"n": 1}')
        tx.put_document("xks", "a", "{}")
    assert any_store.get_document("keystore", "a") == '{"n": 1}'
    assert list(any_store.list_documents("keystore")) == ["a", "b"]
    with any_store.transaction() as tx:
        tx.put_document("keystore", "a", '{"n": 3}')
        tx.delete_document("keystore", "b")
    assert any_store.list_documents("keystore") == {"a": '{"n": 3}'}
    assert any_store.get_document("xks", "a") == "{}"
    assert any_store.get_document("xks", "missing") is None
    with pytest.raises(RuntimeError), any_store.transaction() as tx:
        tx.put_document("xks", "rolled-back", "{}")
        raise RuntimeError
    assert any_store.get_document("xks", "rolled-back") is None


def grant(grant_id: str, key_id: str) -> Grant:
    return Grant(grant_id, key_id, "arn:aws:iam::111122223333:user/g", ("Encrypt",), NOW, "1", "t")


def test_generation_moves_on_every_committed_write(any_store: MetadataStore) -> None:
    key = record(key_ids(1)[0])
    start = any_store.generation()
    with any_store.transaction() as tx:
        assert tx.get_key(key.key_id) is None  # a read-only transaction is no change
    assert any_store.generation() == start
    with any_store.transaction() as tx:
        tx.put_key(key)
    after_write = any_store.generation()
    assert after_write > start
    with pytest.raises(RuntimeError), any_store.transaction() as tx:
        tx.put_key(replace(key, description="never committed"))
        raise RuntimeError("rolled back")
    assert any_store.generation() == after_write
    with any_store.transaction() as tx:
        tx.add_pending(PendingMaterial(key.key_id, 2, NOW))
    assert any_store.generation() > after_write


def test_grants_made_in_one_instant_list_in_insertion_order(any_store: MetadataStore) -> None:
    key = record(key_ids(1)[0])
    ids = ["g-c", "g-a", "g-b"]
    with any_store.transaction() as tx:
        tx.put_key(key)
        for grant_id in ids:
            tx.put_grant(grant(grant_id, key.key_id))
    with any_store.transaction() as tx:  # rewriting a grant keeps its place
        tx.put_grant(replace(grant("g-c", key.key_id), name="renamed"))
    assert [g.grant_id for g in any_store.list_grants(key.key_id)] == ids
    assert any_store.list_grants(None)[0].name == "renamed"


def test_sqlite_migrates_a_version_5_database_forward(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path)
    for migration in HISTORY[:5]:  # as the last release left a data dir
        for statement in statements(migration, Dialect.SQLITE):
            conn.execute(statement)
    key = record(key_ids(1)[0])
    conn.execute("INSERT INTO keys (key_id, region, account_id, creation_date, key_spec, "
                 "key_usage, origin, state, current_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                 (key.key_id, key.region, key.account_id, NOW.isoformat(), "SYMMETRIC_DEFAULT",
                  "ENCRYPT_DECRYPT", "AWS_KMS", "Enabled"))  # fmt: skip
    for grant_id in ("g-z", "g-y"):  # same instant: rowid was their order
        conn.execute(
            "INSERT INTO grants VALUES (?, ?, 'p', '[\"Encrypt\"]', ?, '1', 't', '', NULL, "
            "NULL, NULL)",
            (grant_id, key.key_id, NOW.isoformat()),
        )
    conn.execute("PRAGMA user_version = 5")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    assert store.schema_version == len(HISTORY)
    assert [g.grant_id for g in store.list_grants(key.key_id)] == ["g-z", "g-y"]
    assert store.get_key(key.key_id) is not None
    generation = store.generation()
    with store.transaction() as tx:
        tx.put_grant(grant("g-x", key.key_id))
    assert [g.grant_id for g in store.list_grants(key.key_id)] == ["g-z", "g-y", "g-x"]
    assert store.generation() == generation + 1
    store.close()


def test_postgres_schema_is_versioned_survives_reopen_and_refuses_newer(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    assert store.schema_version == len(HISTORY)
    key = record(key_ids(1)[0])
    with store.transaction() as tx:
        tx.put_key(key)
    store.close()
    reopened = PostgresStore(pg_url)
    assert reopened.schema_version == len(HISTORY)
    assert reopened.get_key(key.key_id) == key
    reopened.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (len(HISTORY) + 1,))
    with pytest.raises(KMSInternalException, match="newer"):
        PostgresStore(pg_url)


def test_a_multi_region_key_has_one_row_per_region(any_store: MetadataStore) -> None:
    key_id = "mrk-" + "ab" * 16
    primary = record(key_id)
    replica = replace(
        record(key_id, "eu-west-1"),
        description="replica",
        multi_region_config={"MultiRegionKeyType": "REPLICA"},
    )
    with any_store.transaction() as tx:
        tx.put_key(replica)  # first, so "no region" cannot mean "first written"
        tx.put_key(primary)
        tx.put_version(KeyVersion(key_id, 1, NOW, None))
        for region in ("us-east-1", "eu-west-1"):
            tx.put_alias(Alias("alias/k", key_id, region, "111122223333", NOW, NOW))
            tx.put_grant(replace(grant(f"g-{region}", key_id), region=region))
    assert any_store.get_key(key_id, "eu-west-1") == replica
    assert any_store.get_key(key_id, "us-east-1") == primary
    assert any_store.get_key(key_id) == primary  # no region: the primary row
    assert any_store.get_key(key_id, "ap-south-1") is None
    assert [g.grant_id for g in any_store.list_grants(key_id, "eu-west-1")] == ["g-eu-west-1"]
    assert len(any_store.list_grants(key_id)) == 2
    assert [k.region for k in any_store.list_keys(None, None, 10)] == ["eu-west-1", "us-east-1"]
    assert len(any_store.list_keys(None, None, 1)) == 2  # a page never splits a key
    with any_store.transaction() as tx:  # no region given: the primary row's
        tx.put_grant(grant("g-none", key_id))
    assert [g.grant_id for g in any_store.list_grants(key_id, "us-east-1")] == [
        "g-us-east-1", "g-none",
    ]  # fmt: skip
    with any_store.transaction() as tx:
        tx.delete_grant("g-none")
    assert any_store.list_keys(None, key_id, 1) == []
    with any_store.transaction() as tx:
        tx.delete_key(key_id, "eu-west-1")  # a replica goes: the shared versions stay
    assert any_store.get_key(key_id, "eu-west-1") is None
    assert any_store.get_alias("eu-west-1", "alias/k") is None
    assert any_store.get_alias("us-east-1", "alias/k") is not None
    assert [g.region for g in any_store.list_grants(key_id)] == ["us-east-1"]
    assert [v.version for v in any_store.list_versions(key_id)] == [1]
    with any_store.transaction() as tx:
        tx.delete_key(key_id, "us-east-1")  # the last row takes the versions
    assert any_store.list_versions(key_id) == []
    assert any_store.list_grants(key_id) == []


def _seed_schema_7(execute: Any, dialect: Dialect, key: KeyRecord) -> None:
    """A database as a release at schema 7 left it, with a key, version, alias, grant."""
    for migration in HISTORY[:7]:
        for statement in statements(migration, dialect):
            execute(statement, ())
    now = NOW.isoformat()
    execute("INSERT INTO keys (key_id, region, account_id, creation_date, key_spec, "
            "key_usage, origin, state, current_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (key.key_id, key.region, key.account_id, now, "SYMMETRIC_DEFAULT",
             "ENCRYPT_DECRYPT", "AWS_KMS", "Enabled"))  # fmt: skip
    execute("INSERT INTO key_versions VALUES (?, 1, ?, NULL, 'Active')", (key.key_id, now))
    execute("INSERT INTO aliases VALUES ('eu-west-1', 'alias/a', ?, '1', ?, ?)",
            (key.key_id, now, now))  # fmt: skip
    execute("INSERT INTO grants VALUES ('g-1', ?, 'p', '[\"Encrypt\"]', ?, '1', 't', '', "
            "NULL, NULL, NULL, 4)", (key.key_id, now))  # fmt: skip


def _migrated_8(store: MetadataStore, key: KeyRecord) -> None:
    assert store.get_key(key.key_id, "eu-west-1") is not None
    assert store.get_key(key.key_id) is not None
    assert [v.version for v in store.list_versions(key.key_id)] == [1]
    assert store.get_alias("eu-west-1", "alias/a") is not None
    assert [g.region for g in store.list_grants(key.key_id)] == ["eu-west-1"]
    with store.transaction() as tx:  # the new primary key: a second region's row
        tx.put_key(replace(key, multi_region_config={"MultiRegionKeyType": "REPLICA"},
                           region="us-west-2"))  # fmt: skip
    assert store.get_key(key.key_id, "us-west-2") is not None


def test_sqlite_migration_8_keeps_rows_and_gives_grants_their_region(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path)
    key = record(key_ids(1)[0], "eu-west-1")
    _seed_schema_7(conn.execute, Dialect.SQLITE, key)
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    assert store.schema_version == len(HISTORY)  # 8, then those after it
    _migrated_8(store, key)
    store.close()


def test_postgres_migration_8_keeps_rows_and_gives_grants_their_region(pg_url: str) -> None:
    key = record(key_ids(1)[0], "eu-west-1")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        _seed_schema_7(
            lambda sql, args: conn.execute(sql.replace("?", "%s"), args), Dialect.POSTGRES, key
        )
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version in range(1, 8):
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
    store = PostgresStore(pg_url)
    assert store.schema_version == len(HISTORY)  # 8, then those after it
    _migrated_8(store, key)
    store.close()
