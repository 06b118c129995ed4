"""Grants per key (trust review, finding 13): AWS's quota of 50,000 grants per KMS key,
and authorization that finds the caller's grants by index instead of listing them all.
https://docs.aws.amazon.com/kms/latest/developerguide/resource-limits.html#grants-per-key"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError

from hsmkms.errors import LimitExceededException
from hsmkms.library import KeyManager
from hsmkms.operations import grants as grant_operations
from hsmkms.policy.caller import CallerInfo
from hsmkms.store.base import MetadataStore
from hsmkms.store.model import Grant
from tests.conftest import ACCOUNT, Server
from tests.store.test_store import NOW, any_store, key_ids, record

__all__ = ["any_store"]  # the fixture, run against SQLite, PostgreSQL and the in-memory store

USER = f"arn:aws:iam::{ACCOUNT}:user/"


def grant(
    grant_id: str, key_id: str, grantee: str, region: str = "us-east-1", **extra: Any
) -> Grant:
    return Grant(grant_id=grant_id, key_id=key_id, grantee_principal=grantee,
                 operations=("Decrypt",), creation_date=NOW, issuing_account=ACCOUNT,
                 token=f"token-{grant_id}", region=region, **extra)  # fmt: skip


def test_a_grantees_grants_on_one_key(any_store: MetadataStore) -> None:
    first, second = key_ids(2)
    with any_store.transaction() as tx:
        tx.put_key(record(first))
        tx.put_key(record(first, "eu-west-1"))
        tx.put_key(record(second))
        tx.put_grant(grant("g1", first, USER + "app"))
        tx.put_grant(replace(grant("g2", first, USER + "app"), creation_date=NOW + timedelta(1)))
        tx.put_grant(grant("g3", first, USER + "other"))
        tx.put_grant(grant("g4", second, USER + "app"))
        tx.put_grant(grant("g5", first, USER + "app", "eu-west-1"))
        assert [g.grant_id for g in tx.list_grants_for(first, USER + "app", "us-east-1")] == [
            "g1",
            "g2",
        ]
    assert [g.grant_id for g in any_store.list_grants_for(first, USER + "app", "us-east-1")] == [
        "g1",
        "g2",
    ]
    # every region, oldest first (g5 was made with g1, g2 a day later)
    assert [g.grant_id for g in any_store.list_grants_for(first, USER + "app")] == [
        "g1",
        "g5",
        "g2",
    ]
    assert any_store.list_grants_for(first, USER + "nobody", "us-east-1") == []
    assert any_store.count_grants(first, "us-east-1") == 3
    assert any_store.count_grants(first, "eu-west-1") == 1
    assert any_store.count_grants(second, "eu-west-1") == 0


def test_sqlite_finds_a_grantees_grants_by_index(tmp_path: Path) -> None:
    from hsmkms.store.sql import Statements
    from hsmkms.store.sqlite import SqliteStore

    SqliteStore(tmp_path / "db.sqlite").close()
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        sql = Statements().list_grants_for
        params = {"key_id": "k", "grantee_principal": "p", "region": "us-east-1"}
        plan = " ".join(str(row) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "USING INDEX grants_by_grantee" in plan, plan


def test_postgres_finds_a_grantees_grants_by_index(pg_url: str) -> None:
    from hsmkms.store.postgres import PostgresStore
    from hsmkms.store.schema import Dialect
    from hsmkms.store.sql import Statements

    PostgresStore(pg_url).close()
    sql = Statements.for_dialect(Dialect.POSTGRES).list_grants_for
    params = {"key_id": "k", "grantee_principal": "p", "region": "us-east-1"}
    with psycopg.connect(pg_url) as db:
        db.execute("SET enable_seqscan = off")  # an empty table: ask whether the index serves
        plan = " ".join(row[0] for row in db.execute(f"EXPLAIN {sql}", params))
    assert "grants_by_grantee" in plan, plan


def test_authorization_reads_only_the_callers_grants(
    km: KeyManager, key_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        km.create_grant(key_id=key_id, grantee_principal=USER + f"other{n}", operations=["Decrypt"])
    km.create_grant(key_id=key_id, grantee_principal=USER + "app", operations=["Decrypt"])
    store = km.store

    def every_grant(*args: Any, **kwargs: Any) -> list[Grant]:
        raise AssertionError("authorization listed every grant of the key")

    read: list[Grant] = []
    by_grantee = store.list_grants_for

    def spy(*args: Any, **kwargs: Any) -> list[Grant]:
        found = by_grantee(*args, **kwargs)
        read.extend(found)
        return found

    monkeypatch.setattr(store, "list_grants", every_grant)
    monkeypatch.setattr(store, "list_grants_for", spy)
    record_ = km.context.keys.cached(key_id).record
    _, allowed = km.authorizer.decide(
        CallerInfo(USER + "app"), "kms:Decrypt", record_, {"KeyId": key_id}
    )
    assert allowed.allowed and allowed.reason.startswith("grant ")
    _, denied = km.authorizer.decide(
        CallerInfo(USER + "stranger"), "kms:Decrypt", record_, {"KeyId": key_id}
    )
    assert not denied.allowed
    assert {g.grantee_principal for g in read} == {USER + "app"}


def test_the_grants_per_key_quota(
    km: KeyManager, key_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grant_operations, "MAX_GRANTS_PER_KEY", 3)
    made = [
        km.create_grant(key_id=key_id, grantee_principal=USER + f"g{n}", operations=["Decrypt"])
        for n in range(3)
    ]
    with pytest.raises(LimitExceededException) as caught:
        km.create_grant(key_id=key_id, grantee_principal=USER + "g3", operations=["Decrypt"])
    assert "Grants per KMS key quota of 3 grants" in str(caught.value)
    assert len(km.list_grants(key_id=key_id)["Grants"]) == 3
    # The same named grant again is not a new grant: CreateGrant stays idempotent.
    named = {"key_id": key_id, "grantee_principal": USER + "g0", "operations": ["Decrypt"]}
    km.revoke_grant(key_id=key_id, grant_id=made[0]["GrantId"])
    first = km.create_grant(**named, name="again")
    assert km.create_grant(**named, name="again") == first
    # Another key has a quota of its own.
    other = km.create_key()["KeyMetadata"]["KeyId"]
    km.create_grant(key_id=other, grantee_principal=USER + "g0", operations=["Decrypt"])


def test_the_quota_over_http(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grant_operations, "MAX_GRANTS_PER_KEY", 1)
    kms = server.client()
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_grant(KeyId=key, GranteePrincipal=USER + "first", Operations=["Decrypt"])
    for dry_run in (True, False):
        with pytest.raises(ClientError) as caught:
            kms.create_grant(
                KeyId=key, GranteePrincipal=USER + "second", Operations=["Decrypt"], DryRun=dry_run
            )
        error = caught.value.response
        assert error["Error"]["Code"] == "LimitExceededException"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert "Grants per KMS key" in error["Error"]["Message"]


def test_a_schema_8_data_dir_gains_the_grantee_index(tmp_path: Path) -> None:
    from hsmkms.store.schema import HISTORY, Dialect, statements
    from hsmkms.store.sqlite import SqliteStore

    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as conn:
        for migration in HISTORY[:8]:  # a data dir from before the index
            for statement in statements(migration, Dialect.SQLITE):
                conn.execute(statement)
        conn.execute(
            "INSERT INTO grants (grant_id, key_id, region, grantee_principal, operations, "
            "creation_date, issuing_account, token) VALUES ('g1', 'k', 'us-east-1', ?, "
            "'[\"Decrypt\"]', ?, ?, 't')",
            (USER + "app", NOW.isoformat(), ACCOUNT),
        )
        conn.execute("PRAGMA user_version = 8")
    store = SqliteStore(path)
    assert store.schema_version == len(HISTORY)
    assert [g.grant_id for g in store.list_grants_for("k", USER + "app", "us-east-1")] == ["g1"]
    store.close()
    with sqlite3.connect(path) as conn:
        names = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
    assert "grants_by_grantee" in names
