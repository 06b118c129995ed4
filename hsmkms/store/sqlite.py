"""SQLite metadata store: WAL, synchronous=FULL, schema versioned by PRAGMA user_version.

One connection guarded by a lock serves every thread of a process; writers take
`BEGIN IMMEDIATE`, which holds the whole database, so two processes (a server and
`hsmkms maintain`) serialise and a read-modify-write cannot lose an update.
A database locked longer than `busy_timeout` gives DependencyTimeoutException, any
other SQLite failure KMSInternalException; a transaction that cannot commit is rolled
back, so nothing is ever half written.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hsmkms.errors import DependencyTimeoutException, KMSError, KMSInternalException
from hsmkms.store.rows import Params, Row
from hsmkms.store.schema import HISTORY, Dialect, newer_schema_message, statements
from hsmkms.store.sql import ReadThrough, SqlReader, SqlWriter
from hsmkms.store.statements import Statements

SQL = Statements.for_dialect(Dialect.SQLITE)

# The history as SQLite runs it, one script per schema version.
MIGRATIONS: tuple[str, ...] = tuple(";\n".join(statements(m, Dialect.SQLITE)) for m in HISTORY)


class _Connection:
    """The Executor over the one sqlite3 connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Params) -> Sequence[Row]:
        found: list[Row] = self._conn.execute(sql, params).fetchall()
        return found

    def run(self, sql: str, params: Params) -> None:
        self._conn.execute(sql, params)


def _kms_error(exc: sqlite3.Error) -> KMSError:
    """One meaning per failure: locked/busy is a timeout, anything else a fault.
    Only the SQLite error name goes out, never a path or statement."""
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
        return DependencyTimeoutException("The database did not answer in time.")
    return KMSInternalException(f"Database error: {type(exc).__name__}")


def _make_private(path: Path) -> None:
    """The database readable by its owner only, whatever the umask: SQLite makes its
    -wal and -shm files with the database file's mode. Files of an older release (0644)
    are narrowed too."""
    for name, create in ((path, True), (Path(f"{path}-wal"), False), (Path(f"{path}-shm"), False)):
        if not create and not name.exists():
            continue
        with contextlib.suppress(PermissionError):  # not ours: leave it as its owner set it
            fd = os.open(name, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
            try:
                if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
                    os.fchmod(fd, 0o600)
            finally:
                os.close(fd)


class SqliteStore(ReadThrough):
    def __init__(self, path: Path, busy_timeout: float = 10.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _make_private(path)
        self._conn = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=busy_timeout
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._db = _Connection(self._conn)
        self._reader = SqlReader(self._db, SQL)
        self._migrate()

    @property
    def schema_version(self) -> int:
        with self._lock:
            version: int = self._conn.execute("PRAGMA user_version").fetchone()[0]
            return version

    @contextmanager
    def _immediate(self) -> Iterator[None]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _kms_error(exc) from exc
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    # SQLite may have rolled back already (it does on some I/O errors).
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _kms_error(exc) from exc
                raise

    def _migrate(self) -> None:
        with self._immediate():
            current = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if current > len(HISTORY):
                raise KMSInternalException(newer_schema_message(current))
            for number in range(current, len(HISTORY)):
                for statement in statements(HISTORY[number], Dialect.SQLITE):
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {number + 1}")

    @contextmanager
    def transaction(self) -> Iterator[SqlWriter]:
        with self._immediate():
            writer = SqlWriter(self._db, SQL)
            yield writer
            if writer.wrote:
                self._db.run(SQL.bump_generation, {})

    @contextmanager
    def _reading(self) -> Iterator[SqlReader]:
        with self._lock:
            try:
                yield self._reader
            except sqlite3.Error as exc:
                raise _kms_error(exc) from exc

    def ping(self) -> None:
        """Reads a row from the file (SELECT 1 would not touch it)."""
        self.generation()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
