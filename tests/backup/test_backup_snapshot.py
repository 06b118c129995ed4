"""The backup's metadata snapshot: one consistent view while writers keep committing,
on SQLite (WAL) and on a real PostgreSQL; rows round-trip into an empty database."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsmkms.backup.snapshot import (
    Snapshot,
    _connect,
    _select,
    check_target,
    read_snapshot,
    write_snapshot,
)
from hsmkms.errors import KMSInvalidStateException, ValidationException
from hsmkms.store import open_store


@pytest.fixture(params=["sqlite", "postgres"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if request.param == "sqlite":
        return [f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"]
    server = request.getfixturevalue("pg_server")
    made = [server.create_database() for _ in range(2)]
    request.addfinalizer(lambda: [server.drop_database(name) for name, _ in made])
    return [url for _, url in made]


def _count(conn: object) -> int:
    _, found = _select(conn, "SELECT COUNT(*) FROM documents")
    return int(found[0][0])


def test_a_snapshot_does_not_see_commits_made_while_it_reads(urls: list[str]) -> None:
    store = open_store(urls[0])
    try:
        with store.transaction() as tx:
            tx.put_document("test", "first", '{"n": 1}')
            tx.put_document("blob", "x", '{"b": 2}')
        with _connect(urls[0], write=False) as conn:
            assert _count(conn) == 2
            with store.transaction() as tx:  # a server writing meanwhile is not blocked
                tx.put_document("test", "second", '{"n": 2}')
            assert _count(conn) == 2  # ... and not seen
        snapshot = read_snapshot(urls[0])
        assert snapshot.rows("documents")[-1] == {
            "kind": "test",
            "doc_id": "second",
            "body": '{"n": 2}',
        }
    finally:
        store.close()

    again = Snapshot.from_json(snapshot.to_json())
    check_target(urls[1], again)
    write_snapshot(urls[1], again)
    assert read_snapshot(urls[1]).tables == snapshot.tables
    with pytest.raises(KMSInvalidStateException, match="not empty"):
        check_target(urls[1], again)
    bad = snapshot.to_json()
    bad["tables"]["documents"]["columns"][0] = "kind; DROP TABLE keys"
    with pytest.raises(ValidationException, match="unknown columns"):
        check_target(urls[1], Snapshot.from_json(bad))
