"""Metadata stores: SQLite (embedded default) and PostgreSQL (many nodes), opened by URL."""

from __future__ import annotations

from pathlib import Path

from hsmkms.store.base import MetadataStore

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def open_store(database_url: str, *, pool_size: int = 8) -> MetadataStore:
    """Open (creating or migrating the schema) the store a database URL names.

    `sqlite:///relative/path` or `sqlite:////absolute/path`: a SQLite file.
    `postgresql://user[:password]@host[:port]/db[?param=value]` (or `postgres://`): a
    libpq URI; `pool_size` caps its connection pool. Anything else is a ValueError.
    """
    if database_url.startswith(SQLITE_PREFIX):
        path = database_url.removeprefix(SQLITE_PREFIX)
        if not path:
            raise ValueError("database URL sqlite:/// names no file (sqlite:///path/to/db)")
        from hsmkms.store.sqlite import SqliteStore

        return SqliteStore(Path(path))
    if database_url.startswith(POSTGRES_PREFIXES):
        # Imported here so SQLite deployments never load the PostgreSQL driver.
        from hsmkms.store.postgres import PostgresStore

        return PostgresStore(database_url, max_size=pool_size)
    scheme = database_url.partition(":")[0] if ":" in database_url else database_url
    raise ValueError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///path or "
        "postgresql://user@host:port/db"
    )


__all__ = ["MetadataStore", "open_store"]
