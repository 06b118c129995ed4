"""The metadata schema, one migration history for SQLite and PostgreSQL.

Each migration moves the schema from version i to i + 1; append only, never edit one
that has shipped (SQLite data dirs record the number reached in PRAGMA user_version,
PostgreSQL in the `schema_migrations` table). The DDL is written once in the subset both
engines accept; the few dialect differences are spelled out per migration.
Timestamps are ISO-8601 text and documents JSON text in both engines, so one row
mapping (rows.py) serves both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Dialect(StrEnum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"


@dataclass(frozen=True)
class Migration:
    common: str
    sqlite: str = ""  # run after `common` on SQLite only
    postgres: str = ""  # run after `common` on PostgreSQL only


HISTORY: tuple[Migration, ...] = (
    Migration("""
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
    """),
    Migration("""
    CREATE TABLE access_keys (
        access_key_id TEXT PRIMARY KEY,
        principal_arn TEXT NOT NULL,
        wrapped_secret BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX access_keys_by_principal ON access_keys (principal_arn);
    """),
    Migration("""
    ALTER TABLE keys ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
    """),
    Migration("""
    ALTER TABLE keys ADD COLUMN policy TEXT NOT NULL DEFAULT '';
    CREATE TABLE identity_policies (
        principal_arn TEXT NOT NULL,
        name TEXT NOT NULL,
        document TEXT NOT NULL,
        PRIMARY KEY (principal_arn, name)
    );
    """),
    Migration("""
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
    """),
    # The change counter behind generation(), and an explicit insertion order for
    # grants (SQLite listed them by rowid, which PostgreSQL does not have).
    Migration(
        """
    CREATE TABLE store_generation (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        value BIGINT NOT NULL
    );
    INSERT INTO store_generation (id, value) VALUES (1, 0);
    ALTER TABLE grants ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX grants_by_seq ON grants (seq);
    """,
        sqlite="UPDATE grants SET seq = rowid;",
    ),
    # Small JSON documents of areas that need no table of their own.
    Migration(
        """
    CREATE TABLE documents (
        kind TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, doc_id)
    );
    """
    ),
    # Multi-Region keys: a replica is the same key id in another region, so a key row is
    # (key_id, region). Children no longer reference keys(key_id) (no longer unique):
    # delete_key removes them explicitly, as it always did. Grants get their region
    # (a replica's grants are its own); `replica` lets a lookup without a region prefer
    # the primary row. Rebuilt as new tables because SQLite cannot
    # change a primary key in place; old children go first, so nothing cascades.
    Migration("""
    CREATE TABLE keys_mrk (
        key_id TEXT NOT NULL,
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
        extra TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '{}',
        policy TEXT NOT NULL DEFAULT '',
        replica INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, region)
    );
    INSERT INTO keys_mrk SELECT key_id, region, account_id, creation_date, key_spec,
        key_usage, origin, state, current_version, description, deletion_date,
        pending_window_days, multi_region, multi_region_config, custom_key_store_id,
        rotation_enabled, rotation_period_days, next_rotation_date, on_demand_rotations,
        extra, tags, policy, 0 FROM keys;
    CREATE TABLE key_versions_mrk (
        key_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        rotation_type TEXT,
        state TEXT NOT NULL,
        PRIMARY KEY (key_id, version)
    );
    INSERT INTO key_versions_mrk SELECT key_id, version, created_at, rotation_type, state
        FROM key_versions;
    CREATE TABLE aliases_mrk (
        region TEXT NOT NULL,
        name TEXT NOT NULL,
        key_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        creation_date TEXT NOT NULL,
        last_updated_date TEXT NOT NULL,
        PRIMARY KEY (region, name)
    );
    INSERT INTO aliases_mrk SELECT region, name, key_id, account_id, creation_date,
        last_updated_date FROM aliases;
    CREATE TABLE grants_mrk (
        grant_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        region TEXT NOT NULL,
        grantee_principal TEXT NOT NULL,
        operations TEXT NOT NULL,
        creation_date TEXT NOT NULL,
        issuing_account TEXT NOT NULL,
        token TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        retiring_principal TEXT,
        context_subset TEXT,
        context_equals TEXT,
        seq BIGINT NOT NULL DEFAULT 0
    );
    INSERT INTO grants_mrk SELECT g.grant_id, g.key_id, k.region, g.grantee_principal,
        g.operations, g.creation_date, g.issuing_account, g.token, g.name,
        g.retiring_principal, g.context_subset, g.context_equals, g.seq
        FROM grants g JOIN keys k ON k.key_id = g.key_id;
    DROP TABLE grants;
    DROP TABLE aliases;
    DROP TABLE key_versions;
    DROP TABLE keys;
    ALTER TABLE keys_mrk RENAME TO keys;
    ALTER TABLE key_versions_mrk RENAME TO key_versions;
    ALTER TABLE aliases_mrk RENAME TO aliases;
    ALTER TABLE grants_mrk RENAME TO grants;
    CREATE INDEX keys_by_region ON keys (region, key_id);
    CREATE INDEX aliases_by_key ON aliases (key_id);
    CREATE INDEX grants_by_key ON grants (key_id, region);
    CREATE INDEX grants_by_seq ON grants (seq);
    """),
    # Authorization reads only the caller's grants on a key, by index: a key may hold
    # 50,000 grants (AWS's quota), and listing them all on every request was the cost.
    Migration("""
    CREATE INDEX grants_by_grantee ON grants (key_id, grantee_principal, region);
    """),
    # Access keys get IAM's status (revocable without deleting) and when and where each
    # was last used; existing keys stay Active.
    Migration("""
    ALTER TABLE access_keys ADD COLUMN status TEXT NOT NULL DEFAULT 'Active';
    ALTER TABLE access_keys ADD COLUMN last_used_at TEXT;
    ALTER TABLE access_keys ADD COLUMN last_used_region TEXT;
    """),
    # The token the database belongs to (one row): its label and serial, and the CKA_ID
    # of a marker key only that token holds (hsmkms/binding.py). Not carried by
    # backups: a restored database belongs to the token it was restored next to.
    Migration("""
    CREATE TABLE token_binding (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        label TEXT NOT NULL,
        serial TEXT NOT NULL,
        marker TEXT NOT NULL,
        bound_at TEXT NOT NULL
    );
    """),
)

# PostgreSQL names SQLite's BLOB type BYTEA; nothing else in the DDL differs.
_BLOB = re.compile(r"\bBLOB\b")


def statements(migration: Migration, dialect: Dialect) -> list[str]:
    """The migration's statements, in order, for one engine."""
    extra = migration.sqlite if dialect is Dialect.SQLITE else migration.postgres
    text = migration.common + "\n" + extra
    if dialect is Dialect.POSTGRES:
        text = _BLOB.sub("BYTEA", text)
    # No statement has a ';' inside a literal, so splitting on it is safe here.
    return [s.strip() for s in text.split(";") if s.strip()]


def newer_schema_message(found: int) -> str:
    return f"database schema {found} is newer than this hsmkms ({len(HISTORY)}); upgrade hsmkms"
