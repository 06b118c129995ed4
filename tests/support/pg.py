"""A real PostgreSQL server for the tests, from Debian's `postgresql` package.

One server per test session (initdb + pg_ctl in a temporary directory, a free loopback
port, its unix socket in that directory), one fresh database per test. As root the
server runs as the unprivileged `postgres` user, since PostgreSQL refuses to run as root.
Loaded by tests/conftest.py through `pytest_plugins`.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

MISSING = (
    "PostgreSQL server not found (no initdb/pg_ctl under /usr/lib/postgresql/*/bin or on "
    "PATH): install the Debian 'postgresql' package (make deps does)"
)


def server_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PgServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="hsmkms-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._names = itertools.count()

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.bindir / tool), *args], check=True, capture_output=True, text=True
        )

    def start(self) -> None:
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.root} "
            # Throwaway data: durability off makes CREATE DATABASE and commits fast.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        log = str(self.root / "server.log")
        self._pg(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", log, "-o", options
        )

    def stop(self) -> None:
        try:
            self._pg("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.data))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host=str(self.root), port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)  # names are ours (db_<n>), never user input

    def create_database(self) -> tuple[str, str]:
        """A new empty database: (name, its postgresql:// URL over loopback TCP)."""
        name = f"db_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name}")
        return name, f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def drop_database(self, name: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = server_bin()
    if bindir is None:
        pytest.skip(MISSING)
    server = PgServer(bindir)
    try:
        server.start()
    except subprocess.CalledProcessError as failed:
        shutil.rmtree(server.root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {failed.stderr}") from failed
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped after it."""
    name, url = pg_server.create_database()
    yield url
    pg_server.drop_database(name)
