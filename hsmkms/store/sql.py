"""The SQL both stores run, and the reader/writer built on it, written once.

Statements use `:name` parameters (SQLite's named style); PostgreSQL gets them rewritten
to psycopg's `%(name)s`. Each engine supplies an Executor (run a statement, fetch rows)
and its own way to lock what a read-modify-write reads (see Statements.lock_*).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields, replace
from typing import Protocol

from hsmkms.keys.model import AccessKey, Alias, Grant, KeyRecord, KeyVersion, PendingMaterial
from hsmkms.store import rows
from hsmkms.store.base import TokenBinding
from hsmkms.store.rows import Params, Row
from hsmkms.store.schema import Dialect


def _upsert(table: str, columns: Sequence[str], conflict: Sequence[str], **insert: str) -> str:
    """INSERT ... ON CONFLICT DO UPDATE (both engines): never a delete + insert, which
    would cascade to the row's children. `insert` gives columns set on insert only."""
    names = [*columns, *insert]
    values = [f":{c}" for c in columns] + list(insert.values())
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in conflict)
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(values)}) "
        f"ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {updates}"
    )


@dataclass(frozen=True)
class Statements:
    # Without a region: the key's primary (or only) row.
    get_key: str = (
        "SELECT * FROM keys WHERE key_id = :key_id "
        "AND (CAST(:region AS TEXT) IS NULL OR region = :region) "
        "ORDER BY replica, region LIMIT 1"
    )
    # `limit` key ids, each with all its rows (regions): a page never splits a key.
    list_keys: str = (
        "SELECT * FROM keys WHERE (CAST(:region AS TEXT) IS NULL OR region = :region) "
        "AND key_id IN (SELECT DISTINCT key_id FROM keys "
        "WHERE (CAST(:region AS TEXT) IS NULL OR region = :region) AND key_id > :after "
        "ORDER BY key_id LIMIT :limit) ORDER BY key_id, region"
    )
    get_alias: str = "SELECT * FROM aliases WHERE region = :region AND name = :name"
    list_aliases: str = (
        "SELECT * FROM aliases WHERE region = :region "
        "AND (CAST(:key_id AS TEXT) IS NULL OR key_id = :key_id) "
        "AND name > :after ORDER BY name LIMIT :limit"
    )
    list_versions: str = "SELECT * FROM key_versions WHERE key_id = :key_id ORDER BY version"
    list_pending: str = "SELECT * FROM pending_material ORDER BY created_at, key_id, version"
    get_access_key: str = "SELECT * FROM access_keys WHERE access_key_id = :access_key_id"
    list_access_keys: str = "SELECT * FROM access_keys ORDER BY access_key_id"
    list_grants: str = (
        "SELECT * FROM grants WHERE (CAST(:key_id AS TEXT) IS NULL OR key_id = :key_id) "
        "AND (CAST(:region AS TEXT) IS NULL OR region = :region) "
        "ORDER BY creation_date, seq, grant_id"
    )
    identity_policies: str = (
        "SELECT name, document FROM identity_policies WHERE principal_arn = :principal_arn "
        "ORDER BY name"
    )
    generation: str = "SELECT value FROM store_generation WHERE id = 1"
    get_document: str = "SELECT body FROM documents WHERE kind = :kind AND doc_id = :doc_id"
    list_documents: str = "SELECT doc_id, body FROM documents WHERE kind = :kind ORDER BY doc_id"
    token_binding: str = "SELECT * FROM token_binding WHERE id = 1"
    bind_token: str = (
        "INSERT INTO token_binding (id, label, serial, marker, bound_at) "
        "VALUES (1, :label, :serial, :marker, :bound_at)"
    )

    put_key: str = _upsert("keys", rows.KEY_COLUMNS, ["key_id", "region"])
    # A region removes one region's row of a key (a replica); None removes every row.
    delete_aliases_of: str = (
        "DELETE FROM aliases WHERE key_id = :key_id "
        "AND (CAST(:region AS TEXT) IS NULL OR region = :region)"
    )
    delete_grants_of: str = (
        "DELETE FROM grants WHERE key_id = :key_id "
        "AND (CAST(:region AS TEXT) IS NULL OR region = :region)"
    )
    delete_key: str = (
        "DELETE FROM keys WHERE key_id = :key_id "
        "AND (CAST(:region AS TEXT) IS NULL OR region = :region)"
    )
    # Versions are shared by a key's rows: they go with the last one.
    delete_versions_of: str = (
        "DELETE FROM key_versions WHERE key_id = :key_id "
        "AND NOT EXISTS (SELECT 1 FROM keys WHERE key_id = :key_id)"
    )
    put_version: str = _upsert("key_versions", rows.VERSION_COLUMNS, ["key_id", "version"])
    put_alias: str = _upsert("aliases", rows.ALIAS_COLUMNS, ["region", "name"])
    delete_alias: str = "DELETE FROM aliases WHERE region = :region AND name = :name"
    add_pending: str = _upsert("pending_material", rows.PENDING_COLUMNS, ["key_id", "version"])
    remove_pending: str = (
        "DELETE FROM pending_material WHERE key_id = :key_id AND version = :version"
    )
    put_access_key: str = (
        f"INSERT INTO access_keys ({', '.join(rows.ACCESS_KEY_COLUMNS)}) "
        f"VALUES ({', '.join(':' + c for c in rows.ACCESS_KEY_COLUMNS)})"
    )
    put_identity_policy: str = _upsert(
        "identity_policies", ["principal_arn", "name", "document"], ["principal_arn", "name"]
    )
    # seq keeps insertion order among grants made in the same instant.
    put_grant: str = _upsert(
        "grants", rows.GRANT_COLUMNS, ["grant_id"],
        seq="(SELECT COALESCE(MAX(seq), 0) + 1 FROM grants)",
    )  # fmt: skip
    delete_grant: str = "DELETE FROM grants WHERE grant_id = :grant_id"
    put_document: str = _upsert("documents", ["kind", "doc_id", "body"], ["kind", "doc_id"])
    delete_document: str = "DELETE FROM documents WHERE kind = :kind AND doc_id = :doc_id"
    bump_generation: str = "UPDATE store_generation SET value = value + 1 WHERE id = 1"

    # Locks a write transaction takes on what it reads. SQLite needs none: its writers
    # hold the whole database (BEGIN IMMEDIATE). "" means no statement.
    get_key_locked: str = get_key  # ... and, on PostgreSQL, lock the row it returns
    lock_key: str = ""  # the key row itself (also guards its versions and grants)
    lock_name: str = ""  # a row that may not exist yet (an alias, an access key)

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> Statements:
        if dialect is Dialect.SQLITE:
            return cls()
        text = {f.name: _pyformat(getattr(cls(), f.name)) for f in fields(cls)}
        return replace(
            cls(**text),
            get_key_locked=text["get_key"] + " FOR UPDATE",
            lock_key="SELECT key_id FROM keys WHERE key_id = %(key_id)s ORDER BY region FOR UPDATE",
            # Transaction-scoped, so it is released by COMMIT/ROLLBACK like a row lock.
            lock_name="SELECT pg_advisory_xact_lock(hashtextextended(%(name)s, 0))",
        )


_NAMED = re.compile(r"(?<![:\w]):(\w+)")


def _pyformat(sql: str) -> str:
    return _NAMED.sub(r"%(\1)s", sql)


class Executor(Protocol):
    def rows(self, sql: str, params: Params) -> Sequence[Row]: ...

    def run(self, sql: str, params: Params) -> None: ...


class SqlReader:
    def __init__(self, db: Executor, sql: Statements) -> None:
        self._db = db
        self._sql = sql

    def _one(self, sql: str, params: Params) -> Row | None:
        found = self._db.rows(sql, params)
        return found[0] if found else None

    def get_key(self, key_id: str, region: str | None = None) -> KeyRecord | None:
        row = self._one(self._sql.get_key, {"key_id": key_id, "region": region})
        return None if row is None else rows.key_record(row)

    def list_keys(self, region: str | None, after: str | None, limit: int) -> list[KeyRecord]:
        params = {"region": region, "after": after or "", "limit": limit}
        return [rows.key_record(r) for r in self._db.rows(self._sql.list_keys, params)]

    def get_alias(self, region: str, name: str) -> Alias | None:
        row = self._one(self._sql.get_alias, {"region": region, "name": name})
        return None if row is None else rows.alias(row)

    def list_aliases(
        self, region: str, key_id: str | None, after: str | None, limit: int
    ) -> list[Alias]:
        params = {"region": region, "key_id": key_id, "after": after or "", "limit": limit}
        return [rows.alias(r) for r in self._db.rows(self._sql.list_aliases, params)]

    def list_versions(self, key_id: str) -> list[KeyVersion]:
        found = self._db.rows(self._sql.list_versions, {"key_id": key_id})
        return [rows.key_version(r) for r in found]

    def list_pending(self) -> list[PendingMaterial]:
        return [rows.pending(r) for r in self._db.rows(self._sql.list_pending, {})]

    def get_access_key(self, access_key_id: str) -> AccessKey | None:
        row = self._one(self._sql.get_access_key, {"access_key_id": access_key_id})
        return None if row is None else rows.access_key(row)

    def list_access_keys(self) -> list[AccessKey]:
        return [rows.access_key(r) for r in self._db.rows(self._sql.list_access_keys, {})]

    def list_grants(self, key_id: str | None, region: str | None = None) -> list[Grant]:
        params = {"key_id": key_id, "region": region}
        return [rows.grant(r) for r in self._db.rows(self._sql.list_grants, params)]

    def identity_policies(self, principal_arn: str) -> dict[str, str]:
        found = self._db.rows(self._sql.identity_policies, {"principal_arn": principal_arn})
        return {r["name"]: r["document"] for r in found}

    def get_document(self, kind: str, doc_id: str) -> str | None:
        row = self._one(self._sql.get_document, {"kind": kind, "doc_id": doc_id})
        return None if row is None else str(row["body"])

    def list_documents(self, kind: str) -> dict[str, str]:
        found = self._db.rows(self._sql.list_documents, {"kind": kind})
        return {r["doc_id"]: r["body"] for r in found}

    def token_binding(self) -> TokenBinding | None:
        row = self._one(self._sql.token_binding, {})
        return None if row is None else rows.token_binding(row)

    def generation(self) -> int:
        row = self._one(self._sql.generation, {})
        assert row is not None, "store_generation has one row from its migration on"
        return int(row["value"])


class SqlWriter(SqlReader):
    """Reads lock what they return until the transaction ends, so a read-modify-write
    on any node sees the latest committed row and no other writer slips in between."""

    def __init__(self, db: Executor, sql: Statements) -> None:
        super().__init__(db, sql)
        self.wrote = False  # the store bumps the generation at commit when set

    def _run(self, sql: str, params: Params) -> None:
        self.wrote = True
        self._db.run(sql, params)

    def _lock_key(self, key_id: str) -> None:
        if self._sql.lock_key:
            self._db.rows(self._sql.lock_key, {"key_id": key_id})

    def _lock_name(self, name: str) -> None:
        if self._sql.lock_name:
            self._db.rows(self._sql.lock_name, {"name": name})

    def get_key(self, key_id: str, region: str | None = None) -> KeyRecord | None:
        row = self._one(self._sql.get_key_locked, {"key_id": key_id, "region": region})
        return None if row is None else rows.key_record(row)

    def list_versions(self, key_id: str) -> list[KeyVersion]:
        self._lock_key(key_id)
        return super().list_versions(key_id)

    def list_grants(self, key_id: str | None, region: str | None = None) -> list[Grant]:
        if key_id is not None:
            self._lock_key(key_id)
        return super().list_grants(key_id, region)

    def get_alias(self, region: str, name: str) -> Alias | None:
        # The alias may not exist yet, so there is no row to lock: lock its name.
        self._lock_name(f"alias:{region}:{name}")  # a region has no colon
        return super().get_alias(region, name)

    def get_access_key(self, access_key_id: str) -> AccessKey | None:
        self._lock_name(f"access-key:{access_key_id}")
        return super().get_access_key(access_key_id)

    def get_document(self, kind: str, doc_id: str) -> str | None:
        self._lock_name(f"document:{kind}:{doc_id}")
        return super().get_document(kind, doc_id)

    def put_document(self, kind: str, doc_id: str, body: str) -> None:
        self._run(self._sql.put_document, {"kind": kind, "doc_id": doc_id, "body": body})

    def delete_document(self, kind: str, doc_id: str) -> None:
        self._run(self._sql.delete_document, {"kind": kind, "doc_id": doc_id})

    def token_binding(self) -> TokenBinding | None:
        self._lock_name("token-binding")  # two nodes binding at once: one waits
        return super().token_binding()

    def bind_token(self, binding: TokenBinding) -> None:
        self._run(self._sql.bind_token, rows.token_binding_params(binding))

    def put_key(self, record: KeyRecord) -> None:
        self._run(self._sql.put_key, rows.key_params(record))

    def delete_key(self, key_id: str, region: str | None = None) -> None:
        params = {"key_id": key_id, "region": region}
        for sql in (
            self._sql.delete_aliases_of,
            self._sql.delete_grants_of,
            self._sql.delete_key,
            self._sql.delete_versions_of,
        ):
            self._run(sql, params)

    def put_version(self, version: KeyVersion) -> None:
        self._run(self._sql.put_version, rows.version_params(version))

    def put_alias(self, alias: Alias) -> None:
        self._run(self._sql.put_alias, rows.alias_params(alias))

    def delete_alias(self, region: str, name: str) -> None:
        self._run(self._sql.delete_alias, {"region": region, "name": name})

    def add_pending(self, pending: PendingMaterial) -> None:
        self._run(self._sql.add_pending, rows.pending_params(pending))

    def remove_pending(self, key_id: str, version: int) -> None:
        self._run(self._sql.remove_pending, {"key_id": key_id, "version": version})

    def put_access_key(self, access_key: AccessKey) -> None:
        self._run(self._sql.put_access_key, rows.access_key_params(access_key))

    def put_identity_policy(self, principal_arn: str, name: str, document: str) -> None:
        params = {"principal_arn": principal_arn, "name": name, "document": document}
        self._run(self._sql.put_identity_policy, params)

    def put_grant(self, grant: Grant) -> None:
        if not grant.region:  # made without one: the grant is on the key's primary row
            record = self.get_key(grant.key_id)
            grant = replace(grant, region=record.region if record else "")
        self._run(self._sql.put_grant, rows.grant_params(grant))

    def delete_grant(self, grant_id: str) -> None:
        self._run(self._sql.delete_grant, {"grant_id": grant_id})


class ReadThrough:
    """MetadataStore's reads outside a transaction, each on a reader the engine lends."""

    def _reading(self) -> AbstractContextManager[SqlReader]:
        raise NotImplementedError

    def get_key(self, key_id: str, region: str | None = None) -> KeyRecord | None:
        with self._reading() as reader:
            return reader.get_key(key_id, region)

    def list_keys(self, region: str | None, after: str | None, limit: int) -> list[KeyRecord]:
        with self._reading() as reader:
            return reader.list_keys(region, after, limit)

    def get_alias(self, region: str, name: str) -> Alias | None:
        with self._reading() as reader:
            return reader.get_alias(region, name)

    def list_aliases(
        self, region: str, key_id: str | None, after: str | None, limit: int
    ) -> list[Alias]:
        with self._reading() as reader:
            return reader.list_aliases(region, key_id, after, limit)

    def list_versions(self, key_id: str) -> list[KeyVersion]:
        with self._reading() as reader:
            return reader.list_versions(key_id)

    def list_pending(self) -> list[PendingMaterial]:
        with self._reading() as reader:
            return reader.list_pending()

    def get_access_key(self, access_key_id: str) -> AccessKey | None:
        with self._reading() as reader:
            return reader.get_access_key(access_key_id)

    def list_access_keys(self) -> list[AccessKey]:
        with self._reading() as reader:
            return reader.list_access_keys()

    def identity_policies(self, principal_arn: str) -> dict[str, str]:
        with self._reading() as reader:
            return reader.identity_policies(principal_arn)

    def list_grants(self, key_id: str | None, region: str | None = None) -> list[Grant]:
        with self._reading() as reader:
            return reader.list_grants(key_id, region)

    def get_document(self, kind: str, doc_id: str) -> str | None:
        with self._reading() as reader:
            return reader.get_document(kind, doc_id)

    def list_documents(self, kind: str) -> dict[str, str]:
        with self._reading() as reader:
            return reader.list_documents(kind)

    def token_binding(self) -> TokenBinding | None:
        with self._reading() as reader:
            return reader.token_binding()

    def generation(self) -> int:
        with self._reading() as reader:
            return reader.generation()
