"""SQLite metadata store: WAL, synchronous=FULL, schema versioned by PRAGMA user_version.

One connection guarded by a lock serves every thread of a process; writers take
`BEGIN IMMEDIATE` so two processes (a server and `hsmkms maintain`) serialise.
A database locked longer than `busy_timeout` gives DependencyTimeoutException,
any other SQLite failure KMSInternalException; a transaction that cannot commit
is rolled back, so nothing is ever half written.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from hsmkms.errors import DependencyTimeoutException, KMSError, KMSInternalException
from hsmkms.keys.model import (
    AccessKey,
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
    VersionState,
)

# Each entry moves the schema from version i to i + 1. Append only; never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE keys (
        key_id TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        account_id TEXT NOT NULL,
        creation_date TEXT NOT NULL,
        key_spec TEXT NOT NULL,
        key_usage TEXT NOT NULL,
        origin TEXT NOT NULL,
        state TEXT NOT NULL,
        current_version INTEGER NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        deletion_date TEXT,
        pending_window_days INTEGER,
        multi_region INTEGER NOT NULL DEFAULT 0,
        multi_region_config TEXT,
        custom_key_store_id TEXT,
        rotation_enabled INTEGER NOT NULL DEFAULT 0,
        rotation_period_days INTEGER,
        next_rotation_date TEXT,
        on_demand_rotations INTEGER NOT NULL DEFAULT 0,
        extra TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX keys_by_region ON keys (region, key_id);
    CREATE TABLE key_versions (
        key_id TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        rotation_type TEXT,
        state TEXT NOT NULL,
        PRIMARY KEY (key_id, version)
    );
    CREATE TABLE aliases (
        region TEXT NOT NULL,
        name TEXT NOT NULL,
        key_id TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
        account_id TEXT NOT NULL,
        creation_date TEXT NOT NULL,
        last_updated_date TEXT NOT NULL,
        PRIMARY KEY (region, name)
    );
    CREATE INDEX aliases_by_key ON aliases (key_id);
    CREATE TABLE pending_material (
        key_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (key_id, version)
    );
    """,
    """
    CREATE TABLE access_keys (
        access_key_id TEXT PRIMARY KEY,
        principal_arn TEXT NOT NULL,
        wrapped_secret BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX access_keys_by_principal ON access_keys (principal_arn);
    """,
    """
    ALTER TABLE keys ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
    """,
    """
    ALTER TABLE keys ADD COLUMN policy TEXT NOT NULL DEFAULT '';
    CREATE TABLE identity_policies (
        principal_arn TEXT NOT NULL,
        name TEXT NOT NULL,
        document TEXT NOT NULL,
        PRIMARY KEY (principal_arn, name)
    );
    """,
    """
    CREATE TABLE grants (
        grant_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
        grantee_principal TEXT NOT NULL,
        operations TEXT NOT NULL,
        creation_date TEXT NOT NULL,
        issuing_account TEXT NOT NULL,
        token TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        retiring_principal TEXT,
        context_subset TEXT,
        context_equals TEXT
    );
    CREATE INDEX grants_by_key ON grants (key_id);
    """,
    """
    CREATE TABLE documents (
        kind TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, doc_id)
    );
    """,
)

KEY_COLUMNS = (
    "key_id", "region", "account_id", "creation_date", "key_spec", "key_usage", "origin",
    "state", "current_version", "description", "deletion_date", "pending_window_days",
    "multi_region", "multi_region_config", "custom_key_store_id", "rotation_enabled",
    "rotation_period_days", "next_rotation_date", "on_demand_rotations", "extra", "tags",
    "policy",
)  # fmt: skip


_UPSERT_KEY = (
    f"INSERT INTO keys ({', '.join(KEY_COLUMNS)}) VALUES ({', '.join('?' * len(KEY_COLUMNS))}) "
    "ON CONFLICT (key_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in KEY_COLUMNS[1:])
)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _key_row(r: KeyRecord) -> tuple[Any, ...]:
    return (
        r.key_id, r.region, r.account_id, _ts(r.creation_date), r.key_spec.value,
        r.key_usage.value, r.origin.value, r.state.value, r.current_version, r.description,
        _ts(r.deletion_date), r.pending_window_days, int(r.multi_region),
        None if r.multi_region_config is None else json.dumps(r.multi_region_config),
        r.custom_key_store_id, int(r.rotation_enabled), r.rotation_period_days,
        _ts(r.next_rotation_date), r.on_demand_rotations, json.dumps(r.extra),
        json.dumps(r.tags), r.policy,
    )  # fmt: skip


def _key_record(row: sqlite3.Row) -> KeyRecord:
    created = _dt(row["creation_date"])
    assert created is not None
    return KeyRecord(
        key_id=row["key_id"],
        region=row["region"],
        account_id=row["account_id"],
        creation_date=created,
        key_spec=KeySpec(row["key_spec"]),
        key_usage=KeyUsage(row["key_usage"]),
        origin=Origin(row["origin"]),
        state=KeyState(row["state"]),
        current_version=row["current_version"],
        description=row["description"],
        deletion_date=_dt(row["deletion_date"]),
        pending_window_days=row["pending_window_days"],
        multi_region=bool(row["multi_region"]),
        multi_region_config=(
            None if row["multi_region_config"] is None else json.loads(row["multi_region_config"])
        ),
        custom_key_store_id=row["custom_key_store_id"],
        rotation_enabled=bool(row["rotation_enabled"]),
        rotation_period_days=row["rotation_period_days"],
        next_rotation_date=_dt(row["next_rotation_date"]),
        on_demand_rotations=row["on_demand_rotations"],
        extra=json.loads(row["extra"]),
        tags=json.loads(row["tags"]),
        policy=row["policy"],
    )


def _alias(row: sqlite3.Row) -> Alias:
    created, updated = _dt(row["creation_date"]), _dt(row["last_updated_date"])
    assert created is not None and updated is not None
    return Alias(row["name"], row["key_id"], row["region"], row["account_id"], created, updated)


class _SqliteReader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _all(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        return self._conn.execute(sql, params).fetchall()

    def get_key(self, key_id: str) -> KeyRecord | None:
        rows = self._all("SELECT * FROM keys WHERE key_id = ?", key_id)
        return _key_record(rows[0]) if rows else None

    def list_keys(self, region: str | None, after: str | None, limit: int) -> list[KeyRecord]:
        rows = self._all(
            "SELECT * FROM keys WHERE (?1 IS NULL OR region = ?1) AND key_id > ?2 "
            "ORDER BY key_id LIMIT ?3",
            region,
            after or "",
            limit,
        )
        return [_key_record(r) for r in rows]

    def get_alias(self, region: str, name: str) -> Alias | None:
        rows = self._all("SELECT * FROM aliases WHERE region = ? AND name = ?", region, name)
        return _alias(rows[0]) if rows else None

    def list_aliases(
        self, region: str, key_id: str | None, after: str | None, limit: int
    ) -> list[Alias]:
        rows = self._all(
            "SELECT * FROM aliases WHERE region = ?1 AND (?2 IS NULL OR key_id = ?2) "
            "AND name > ?3 ORDER BY name LIMIT ?4",
            region,
            key_id,
            after or "",
            limit,
        )
        return [_alias(r) for r in rows]

    def list_versions(self, key_id: str) -> list[KeyVersion]:
        rows = self._all("SELECT * FROM key_versions WHERE key_id = ? ORDER BY version", key_id)
        return [
            KeyVersion(
                r["key_id"],
                r["version"],
                datetime.fromisoformat(r["created_at"]),
                None if r["rotation_type"] is None else RotationType(r["rotation_type"]),
                VersionState(r["state"]),
            )
            for r in rows
        ]

    def list_pending(self) -> list[PendingMaterial]:
        rows = self._all("SELECT * FROM pending_material ORDER BY created_at")
        return [
            PendingMaterial(r["key_id"], r["version"], datetime.fromisoformat(r["created_at"]))
            for r in rows
        ]

    def get_access_key(self, access_key_id: str) -> AccessKey | None:
        rows = self._all("SELECT * FROM access_keys WHERE access_key_id = ?", access_key_id)
        return _access_key(rows[0]) if rows else None

    def list_access_keys(self) -> list[AccessKey]:
        return [_access_key(r) for r in self._all("SELECT * FROM access_keys ORDER BY 1")]

    def list_grants(self, key_id: str | None) -> list[Grant]:
        rows = self._all(
            "SELECT * FROM grants WHERE ?1 IS NULL OR key_id = ?1 ORDER BY creation_date, rowid",
            key_id,
        )
        return [_grant(r) for r in rows]

    def identity_policies(self, principal_arn: str) -> dict[str, str]:
        rows = self._all(
            "SELECT name, document FROM identity_policies WHERE principal_arn = ? ORDER BY name",
            principal_arn,
        )
        return {r["name"]: r["document"] for r in rows}

    def get_document(self, kind: str, doc_id: str) -> str | None:
        rows = self._all("SELECT body FROM documents WHERE kind = ? AND doc_id = ?", kind, doc_id)
        return str(rows[0]["body"]) if rows else None

    def list_documents(self, kind: str) -> dict[str, str]:
        rows = self._all("SELECT doc_id, body FROM documents WHERE kind = ? ORDER BY doc_id", kind)
        return {row["doc_id"]: row["body"] for row in rows}


def _optional_json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _grant(row: sqlite3.Row) -> Grant:
    return Grant(
        grant_id=row["grant_id"],
        key_id=row["key_id"],
        grantee_principal=row["grantee_principal"],
        operations=tuple(json.loads(row["operations"])),
        creation_date=datetime.fromisoformat(row["creation_date"]),
        issuing_account=row["issuing_account"],
        token=row["token"],
        name=row["name"],
        retiring_principal=row["retiring_principal"],
        context_subset=_optional_json(row["context_subset"]),
        context_equals=_optional_json(row["context_equals"]),
    )


def _access_key(row: sqlite3.Row) -> AccessKey:
    return AccessKey(
        row["access_key_id"],
        row["principal_arn"],
        bytes(row["wrapped_secret"]),
        datetime.fromisoformat(row["created_at"]),
    )


class _SqliteWriter(_SqliteReader):
    def _run(self, sql: str, *params: Any) -> None:
        self._conn.execute(sql, params)

    def put_key(self, record: KeyRecord) -> None:
        # An upsert, not INSERT OR REPLACE: a replace deletes the row first, and the
        # ON DELETE CASCADE would take the key's versions and aliases with it.
        self._run(_UPSERT_KEY, *_key_row(record))

    def delete_key(self, key_id: str) -> None:
        self._run("DELETE FROM aliases WHERE key_id = ?", key_id)
        self._run("DELETE FROM grants WHERE key_id = ?", key_id)
        self._run("DELETE FROM key_versions WHERE key_id = ?", key_id)
        self._run("DELETE FROM keys WHERE key_id = ?", key_id)

    def put_version(self, version: KeyVersion) -> None:
        self._run(
            "INSERT OR REPLACE INTO key_versions VALUES (?, ?, ?, ?, ?)",
            version.key_id,
            version.version,
            version.created_at.isoformat(),
            None if version.rotation_type is None else version.rotation_type.value,
            version.state.value,
        )

    def put_alias(self, alias: Alias) -> None:
        self._run(
            "INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?, ?, ?)",
            alias.region,
            alias.name,
            alias.key_id,
            alias.account_id,
            alias.creation_date.isoformat(),
            alias.last_updated_date.isoformat(),
        )

    def delete_alias(self, region: str, name: str) -> None:
        self._run("DELETE FROM aliases WHERE region = ? AND name = ?", region, name)

    def add_pending(self, pending: PendingMaterial) -> None:
        self._run(
            "INSERT OR REPLACE INTO pending_material VALUES (?, ?, ?)",
            pending.key_id,
            pending.version,
            pending.created_at.isoformat(),
        )

    def remove_pending(self, key_id: str, version: int) -> None:
        self._run("DELETE FROM pending_material WHERE key_id = ? AND version = ?", key_id, version)

    def put_grant(self, grant: Grant) -> None:
        self._run(
            "INSERT OR REPLACE INTO grants VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            grant.grant_id, grant.key_id, grant.grantee_principal,
            json.dumps(list(grant.operations)), grant.creation_date.isoformat(),
            grant.issuing_account, grant.token, grant.name, grant.retiring_principal,
            None if grant.context_subset is None else json.dumps(grant.context_subset),
            None if grant.context_equals is None else json.dumps(grant.context_equals),
        )  # fmt: skip

    def delete_grant(self, grant_id: str) -> None:
        self._run("DELETE FROM grants WHERE grant_id = ?", grant_id)

    def put_identity_policy(self, principal_arn: str, name: str, document: str) -> None:
        self._run(
            "INSERT OR REPLACE INTO identity_policies VALUES (?, ?, ?)",
            principal_arn,
            name,
            document,
        )

    def put_access_key(self, access_key: AccessKey) -> None:
        self._run(
            "INSERT INTO access_keys VALUES (?, ?, ?, ?)",
            access_key.access_key_id,
            access_key.principal_arn,
            access_key.wrapped_secret,
            access_key.created_at.isoformat(),
        )

    def put_document(self, kind: str, doc_id: str, body: str) -> None:
        self._run(
            "INSERT INTO documents (kind, doc_id, body) VALUES (?, ?, ?) "
            "ON CONFLICT (kind, doc_id) DO UPDATE SET body = excluded.body",
            kind,
            doc_id,
            body,
        )

    def delete_document(self, kind: str, doc_id: str) -> None:
        self._run("DELETE FROM documents WHERE kind = ? AND doc_id = ?", kind, doc_id)


def _kms_error(exc: sqlite3.Error) -> KMSError:
    """One meaning per failure: locked/busy is a timeout, anything else a fault.
    Only the SQLite error name goes out, never a path or statement."""
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
        return DependencyTimeoutException("The database did not answer in time.")
    return KMSInternalException(f"Database error: {type(exc).__name__}")


class SqliteStore:
    def __init__(self, path: Path, busy_timeout: float = 10.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=busy_timeout
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._reader = _SqliteReader(self._conn)
        self._migrate()

    @property
    def schema_version(self) -> int:
        with self._lock:
            version: int = self._conn.execute("PRAGMA user_version").fetchone()[0]
            return version

    def _migrate(self) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                current = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if current > len(MIGRATIONS):
                    raise KMSInternalException(
                        f"database schema {current} is newer than this hsmkms "
                        f"({len(MIGRATIONS)}); upgrade hsmkms"
                    )
                for number in range(current, len(MIGRATIONS)):
                    for statement in MIGRATIONS[number].split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version = {number + 1}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def transaction(self) -> Iterator[_SqliteWriter]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _kms_error(exc) from exc
            try:
                yield _SqliteWriter(self._conn)
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    # SQLite may have rolled back already (it does on some I/O errors).
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _kms_error(exc) from exc
                raise

    def _read(self, name: str, *args: Any) -> Any:
        with self._lock:
            try:
                return getattr(self._reader, name)(*args)
            except sqlite3.Error as exc:
                raise _kms_error(exc) from exc

    def get_key(self, key_id: str) -> KeyRecord | None:
        result: KeyRecord | None = self._read("get_key", key_id)
        return result

    def list_keys(self, region: str | None, after: str | None, limit: int) -> list[KeyRecord]:
        result: list[KeyRecord] = self._read("list_keys", region, after, limit)
        return result

    def get_alias(self, region: str, name: str) -> Alias | None:
        result: Alias | None = self._read("get_alias", region, name)
        return result

    def list_aliases(
        self, region: str, key_id: str | None, after: str | None, limit: int
    ) -> list[Alias]:
        result: list[Alias] = self._read("list_aliases", region, key_id, after, limit)
        return result

    def list_versions(self, key_id: str) -> list[KeyVersion]:
        result: list[KeyVersion] = self._read("list_versions", key_id)
        return result

    def list_pending(self) -> list[PendingMaterial]:
        result: list[PendingMaterial] = self._read("list_pending")
        return result

    def get_access_key(self, access_key_id: str) -> AccessKey | None:
        result: AccessKey | None = self._read("get_access_key", access_key_id)
        return result

    def list_access_keys(self) -> list[AccessKey]:
        result: list[AccessKey] = self._read("list_access_keys")
        return result

    def identity_policies(self, principal_arn: str) -> dict[str, str]:
        result: dict[str, str] = self._read("identity_policies", principal_arn)
        return result

    def get_document(self, kind: str, doc_id: str) -> str | None:
        result: str | None = self._read("get_document", kind, doc_id)
        return result

    def list_documents(self, kind: str) -> dict[str, str]:
        result: dict[str, str] = self._read("list_documents", kind)
        return result

    def list_grants(self, key_id: str | None) -> list[Grant]:
        result: list[Grant] = self._read("list_grants", key_id)
        return result

    def ping(self) -> None:
        """Reads the schema version from the file (SELECT 1 would not touch it)."""
        self._read("get_document", "", "")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
