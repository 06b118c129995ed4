"""The SQL text both stores run, written once: `:name` parameters (SQLite's named style),
rewritten to psycopg's `%(name)s` for PostgreSQL, and each engine's way to lock what a
read-modify-write reads (lock_*)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from hsmkms.store import rows
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
    principal_access_keys: str = (
        "SELECT * FROM access_keys WHERE principal_arn = :principal_arn "
        "ORDER BY created_at, access_key_id"
    )
    policy_principals: str = (
        "SELECT DISTINCT principal_arn FROM identity_policies ORDER BY principal_arn"
    )
    list_grants: str = (
        "SELECT * FROM grants WHERE (CAST(:key_id AS TEXT) IS NULL OR key_id = :key_id) "
        "AND (CAST(:region AS TEXT) IS NULL OR region = :region) "
        "ORDER BY creation_date, seq, grant_id"
    )
    list_grants_for: str = (
        "SELECT * FROM grants WHERE key_id = :key_id AND grantee_principal = :grantee_principal "
        "AND (CAST(:region AS TEXT) IS NULL OR region = :region) "
        "ORDER BY creation_date, seq, grant_id"
    )
    count_grants: str = (
        "SELECT COUNT(*) AS n FROM grants WHERE key_id = :key_id AND region = :region"
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
    put_access_key: str = _upsert("access_keys", rows.ACCESS_KEY_COLUMNS, ["access_key_id"])
    delete_access_key: str = "DELETE FROM access_keys WHERE access_key_id = :access_key_id"
    record_access_key_use: str = (
        "UPDATE access_keys SET last_used_at = :when, last_used_region = :region "
        "WHERE access_key_id = :access_key_id"
    )
    put_identity_policy: str = _upsert(
        "identity_policies", ["principal_arn", "name", "document"], ["principal_arn", "name"]
    )
    delete_identity_policy: str = (
        "DELETE FROM identity_policies WHERE principal_arn = :principal_arn AND name = :name"
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
