"""The reader and writer both stores run, written once over their SQL.

The statements are in statements.py; each engine supplies an Executor (run a statement,
fetch rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from hsmkms.store import rows
from hsmkms.store.base import pinned_generation
from hsmkms.store.model import (
    AccessKey,
    Alias,
    Grant,
    KeyRecord,
    KeyVersion,
    PendingMaterial,
    TokenBinding,
)
from hsmkms.store.rows import Params, Row
from hsmkms.store.statements import Statements


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

    def principal_access_keys(self, principal_arn: str) -> list[AccessKey]:
        found = self._db.rows(self._sql.principal_access_keys, {"principal_arn": principal_arn})
        return [rows.access_key(r) for r in found]

    def policy_principals(self) -> list[str]:
        return [r["principal_arn"] for r in self._db.rows(self._sql.policy_principals, {})]

    def list_grants(self, key_id: str | None, region: str | None = None) -> list[Grant]:
        params = {"key_id": key_id, "region": region}
        return [rows.grant(r) for r in self._db.rows(self._sql.list_grants, params)]

    def list_grants_for(self, key_id: str, grantee: str, region: str | None = None) -> list[Grant]:
        params = {"key_id": key_id, "grantee_principal": grantee, "region": region}
        return [rows.grant(r) for r in self._db.rows(self._sql.list_grants_for, params)]

    def count_grants(self, key_id: str, region: str) -> int:
        row = self._one(self._sql.count_grants, {"key_id": key_id, "region": region})
        return 0 if row is None else int(row["n"])

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

    def list_grants_for(self, key_id: str, grantee: str, region: str | None = None) -> list[Grant]:
        self._lock_key(key_id)
        return super().list_grants_for(key_id, grantee, region)

    def count_grants(self, key_id: str, region: str) -> int:
        self._lock_key(key_id)  # a quota check and the grant it lets in, one at a time
        return super().count_grants(key_id, region)

    def get_alias(self, region: str, name: str) -> Alias | None:
        # The alias may not exist yet, so there is no row to lock: lock its name.
        self._lock_name(f"alias:{region}:{name}")  # a region has no colon
        return super().get_alias(region, name)

    def get_access_key(self, access_key_id: str) -> AccessKey | None:
        self._lock_name(f"access-key:{access_key_id}")
        return super().get_access_key(access_key_id)

    def principal_access_keys(self, principal_arn: str) -> list[AccessKey]:
        self._lock_name(f"principal:{principal_arn}")
        return super().principal_access_keys(principal_arn)

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

    def delete_access_key(self, access_key_id: str) -> None:
        self._run(self._sql.delete_access_key, {"access_key_id": access_key_id})

    def record_access_key_use(self, access_key_id: str, when: datetime, region: str) -> None:
        params = {"access_key_id": access_key_id, "when": when.isoformat(), "region": region}
        self._db.run(self._sql.record_access_key_use, params)  # not _run: no generation

    def put_identity_policy(self, principal_arn: str, name: str, document: str) -> None:
        params = {"principal_arn": principal_arn, "name": name, "document": document}
        self._run(self._sql.put_identity_policy, params)

    def delete_identity_policy(self, principal_arn: str, name: str) -> None:
        params = {"principal_arn": principal_arn, "name": name}
        self._run(self._sql.delete_identity_policy, params)

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

    def principal_access_keys(self, principal_arn: str) -> list[AccessKey]:
        with self._reading() as reader:
            return reader.principal_access_keys(principal_arn)

    def identity_policies(self, principal_arn: str) -> dict[str, str]:
        with self._reading() as reader:
            return reader.identity_policies(principal_arn)

    def policy_principals(self) -> list[str]:
        with self._reading() as reader:
            return reader.policy_principals()

    def list_grants(self, key_id: str | None, region: str | None = None) -> list[Grant]:
        with self._reading() as reader:
            return reader.list_grants(key_id, region)

    def list_grants_for(self, key_id: str, grantee: str, region: str | None = None) -> list[Grant]:
        with self._reading() as reader:
            return reader.list_grants_for(key_id, grantee, region)

    def count_grants(self, key_id: str, region: str) -> int:
        with self._reading() as reader:
            return reader.count_grants(key_id, region)

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
        return pinned_generation(self._generation)

    def _generation(self) -> int:
        with self._reading() as reader:
            return reader.generation()
