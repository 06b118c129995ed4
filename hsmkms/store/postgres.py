"""PostgreSQL metadata store for many nodes sharing one database (psycopg 3 + a pool).

Concurrency: READ COMMITTED with row locks, not SERIALIZABLE. Callers write
`with store.transaction() as tx: ...`, and a context manager cannot run its block again,
so a serialization failure could only be surfaced, never retried here. Instead a write
transaction locks what it reads for a read-modify-write (see sql.SqlWriter):
`tx.get_key` is `SELECT ... FOR UPDATE`, listing a key's versions or grants locks the key
row, and an alias or access key, which may not exist yet, is guarded by a
transaction-scoped advisory lock on its name. A second writer on any node then waits and
reads the committed result, so no update is lost. The generation counter is bumped as the
last statement before COMMIT, so its row lock is held for one round trip and is never
waited for while holding it (no lock-order cycle through it). Deadlocks between two
transactions locking the same keys in opposite order are detected by PostgreSQL and
surface as DependencyTimeoutException, which clients retry.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from hsmkms.errors import DependencyTimeoutException, KMSInternalException
from hsmkms.store.rows import Params, Row
from hsmkms.store.schema import HISTORY, Dialect, newer_schema_message, statements
from hsmkms.store.sql import ReadThrough, SqlReader, SqlWriter
from hsmkms.store.statements import Statements

SQL = Statements.for_dialect(Dialect.POSTGRES)

# Any constant works; it only has to be the same for every node migrating this schema.
_MIGRATION_LOCK = 0x68736D6B6D73  # "hsmkms"

_CONTENDED = (pg_errors.DeadlockDetected, pg_errors.LockNotAvailable)

Connection = psycopg.Connection[DictRow]


class _Connection:
    """The Executor over one pooled connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Params) -> Sequence[Row]:
        return self._conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: Params) -> None:
        self._conn.execute(sql, params)


def describe(conninfo: str) -> str:
    """Where a connection string points, without its password, for messages."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "PostgreSQL (unparseable connection string)"
    host, port, db = parts.get("host", ""), parts.get("port", ""), parts.get("dbname", "")
    return f"PostgreSQL {host or 'localhost'}:{port or 5432}/{db}"


class PostgresStore(ReadThrough):
    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 30.0,
        lock_timeout_ms: int = 10_000,
    ) -> None:
        """`conninfo`: a libpq URI (postgresql://user@host:port/db) or key=value string.
        `timeout`: seconds to wait for a pooled connection; `lock_timeout_ms`: how long a
        statement waits for a row lock before it fails (DependencyTimeoutException)."""
        self._where = describe(conninfo)

        def configure(conn: Connection) -> None:
            conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")

        self._pool: ConnectionPool[Connection] = ConnectionPool(
            conninfo,
            connection_class=psycopg.Connection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            configure=configure,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            name="hsmkms-store",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            self._pool.close()
            raise KMSInternalException(f"cannot connect to {self._where}") from None
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except PoolTimeout:
            raise DependencyTimeoutException(f"no free connection to {self._where}") from None
        except _CONTENDED as e:
            raise DependencyTimeoutException(
                f"lock contention in {self._where}; retry ({e.sqlstate})"
            ) from None
        except psycopg.OperationalError:
            raise KMSInternalException(f"{self._where} is unavailable") from None

    @property
    def schema_version(self) -> int:
        with self._errors(), self._pool.connection() as conn:
            row = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            found = row.fetchone()
            return 0 if found is None else int(found["v"])

    def _migrate(self) -> None:
        with self._errors(), self._pool.connection() as conn, conn.transaction():
            # Nodes starting together take turns; the later ones find nothing to do.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            found = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            row = found.fetchone()
            current = 0 if row is None else int(row["v"])
            if current > len(HISTORY):
                raise KMSInternalException(newer_schema_message(current))
            for number in range(current, len(HISTORY)):
                for statement in statements(HISTORY[number], Dialect.POSTGRES):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number + 1,))

    @contextmanager
    def transaction(self) -> Iterator[SqlWriter]:
        with self._errors(), self._pool.connection() as conn, conn.transaction():
            writer = SqlWriter(_Connection(conn), SQL)
            yield writer
            if writer.wrote:
                conn.execute(SQL.bump_generation)

    @contextmanager
    def _reading(self) -> Iterator[SqlReader]:
        with self._errors(), self._pool.connection() as conn:
            yield SqlReader(_Connection(conn), SQL)

    def ping(self) -> None:
        with self._errors(), self._pool.connection() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        self._pool.close()
