"""Every metadata table read in one snapshot, and written back into an empty database.

The backup opens its own connection, so a running server keeps its own:
- SQLite (WAL): one deferred read transaction; its first SELECT fixes the snapshot, and
  writers appending to the WAL meanwhile are not seen (nor blocked).
- PostgreSQL: REPEATABLE READ READ ONLY: every SELECT sees the snapshot taken at the
  first one, whatever commits meanwhile.
Restore writes every row in one transaction, so a failure leaves the database empty.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any

from hsmkms.errors import KMSInvalidStateException, ValidationException
from hsmkms.store import POSTGRES_PREFIXES, SQLITE_PREFIX, open_store
from hsmkms.store.schema import HISTORY

# Parents before children (foreign keys); store_generation and the migration
# bookkeeping are the database's own and are not carried.
TABLES = (
    "keys", "key_versions", "aliases", "grants", "pending_material", "access_keys",
    "identity_policies", "documents",
)  # fmt: skip


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True)
class Snapshot:
    schema_version: int
    tables: dict[str, Table]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "tables": {
                name: {"columns": list(t.columns), "rows": [[_out(v) for v in r] for r in t.rows]}
                for name, t in self.tables.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        tables = {}
        for name, table in data["tables"].items():
            if name not in TABLES:
                raise ValueError(f"unknown table {name!r}")
            columns = tuple(str(c) for c in table["columns"])
            rows = [tuple(_in(v) for v in row) for row in table["rows"]]
            if any(len(row) != len(columns) for row in rows):
                raise ValueError(f"a row of {name} does not match its columns")
            tables[name] = Table(columns, rows)
        return cls(int(data["schema_version"]), tables)

    def rows(self, table: str) -> list[dict[str, Any]]:
        found = self.tables.get(table)
        return (
            [] if found is None else [dict(zip(found.columns, r, strict=True)) for r in found.rows]
        )

    def update(self, table: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        """Change rows in place: `change` gets a row and returns new values for some of its
        columns (others are ignored: an older schema's rows keep their columns), or None."""
        found = self.tables.get(table)
        if found is None:
            return
        for index, row in enumerate(found.rows):
            values = dict(zip(found.columns, row, strict=True))
            new = change(values)
            if new is not None:
                found.rows[index] = tuple(new.get(c, values[c]) for c in found.columns)


def _out(value: Any) -> Any:
    if isinstance(value, bytes | memoryview):
        return {"b64": base64.b64encode(bytes(value)).decode()}
    return value


def _in(value: Any) -> Any:
    if isinstance(value, dict):
        return base64.b64decode(value["b64"], validate=True)
    if value is None or isinstance(value, str | int | float):
        return value
    raise ValueError("a cell is not a scalar")


def _sqlite_path(url: str) -> str:
    return url.removeprefix(SQLITE_PREFIX)


@contextmanager
def _connect(url: str, *, write: bool) -> Iterator[Any]:
    """A DB-API connection inside one transaction (snapshot for reads)."""
    if url.startswith(SQLITE_PREFIX):
        conn = sqlite3.connect(_sqlite_path(url), isolation_level=None, timeout=30.0)
        with closing(conn):
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
    elif url.startswith(POSTGRES_PREFIXES):
        import psycopg

        with psycopg.connect(url) as pg:  # commits on success, rolls back on error
            level = "SERIALIZABLE" if write else "REPEATABLE READ READ ONLY"
            pg.execute(f"SET TRANSACTION ISOLATION LEVEL {level}")
            yield pg
    else:
        raise ValueError("backup supports sqlite:/// and postgresql:// databases")


def _select(conn: Any, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[Any]]:
    if isinstance(conn, sqlite3.Connection):
        cursor = conn.execute(sql, tuple(params))
    else:
        cursor = conn.execute(sql.replace("?", "%s"), tuple(params))
    names = [d[0] for d in cursor.description or ()]
    return names, list(cursor.fetchall())


def _schema_version(conn: Any) -> int:
    if isinstance(conn, sqlite3.Connection):
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    _, found = _select(conn, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    return int(found[0][0])


def read_snapshot(url: str) -> Snapshot:
    """Every table, as one consistent snapshot of a database a server may be writing."""
    with _connect(url, write=False) as conn:
        version = _schema_version(conn)
        tables = {}
        for name in TABLES:
            columns, found = _select(conn, f"SELECT * FROM {name}")
            tables[name] = Table(tuple(columns), [tuple(r) for r in found])
    return Snapshot(version, tables)


def _columns(conn: Any, table: str) -> set[str]:
    if isinstance(conn, sqlite3.Connection):
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    _, found = _select(
        conn,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = ? AND table_schema = current_schema()",
        (table,),
    )
    return {row[0] for row in found}


def check_target(url: str, snapshot: Snapshot) -> None:
    """Refuse a database that is not empty, or whose schema cannot take the rows."""
    open_store(url).close()  # creates or migrates the schema
    with _connect(url, write=False) as conn:
        if snapshot.schema_version > len(HISTORY) or snapshot.schema_version < 1:
            raise ValidationException(
                f"The backup's schema {snapshot.schema_version} is not one this hsmkms knows."
            )
        for name, table in snapshot.tables.items():
            unknown = set(table.columns) - _columns(conn, name)
            if unknown:
                raise ValidationException(f"The backup's {name} has unknown columns {unknown}.")
        _ensure_empty(conn)


def _ensure_empty(conn: Any) -> None:
    for name in TABLES:
        _, found = _select(conn, f"SELECT COUNT(*) FROM {name}")
        if found[0][0]:
            raise KMSInvalidStateException(
                f"The database is not empty ({name} has rows): restore needs an empty data dir."
            )


def write_snapshot(url: str, snapshot: Snapshot) -> None:
    """Insert every row in one transaction (the caller ran check_target)."""
    sqlite = url.startswith(SQLITE_PREFIX)
    with _connect(url, write=True) as conn:
        _ensure_empty(conn)  # again, inside the writing transaction
        for name in TABLES:
            table = snapshot.tables.get(name)
            if table is None or not table.rows:
                continue
            if not set(table.columns) <= _columns(conn, name):  # names go into the SQL
                raise ValidationException(f"The backup's {name} has unknown columns.")
            marks = ", ".join(["?" if sqlite else "%s"] * len(table.columns))
            sql = f"INSERT INTO {name} ({', '.join(table.columns)}) VALUES ({marks})"
            if sqlite:
                conn.executemany(sql, table.rows)
            else:
                with conn.cursor() as cursor:
                    cursor.executemany(sql, table.rows)
        # Caches elsewhere key on the generation: move it past anything they saw.
        conn.execute("UPDATE store_generation SET value = value + 1 WHERE id = 1")
