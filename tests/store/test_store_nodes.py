"""Many writers, many nodes: two store instances on one database stand for two hsmkms
processes (on one host for SQLite, anywhere for PostgreSQL). Real databases only."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hsmkms.errors import DependencyTimeoutException, KMSInternalException
from hsmkms.store import open_store
from hsmkms.store.base import MetadataStore
from hsmkms.store.model import Alias
from hsmkms.store.postgres import PostgresStore
from hsmkms.store.schema import HISTORY
from hsmkms.store.sqlite import SqliteStore
from tests.store.test_store import NOW, key_ids, record

THREADS, ROUNDS = 8, 25


@pytest.fixture(params=["sqlite", "postgres"])
def two_nodes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[MetadataStore, MetadataStore]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    first, second = open_store(url), open_store(url)
    yield first, second
    first.close()
    second.close()


def in_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run work(0..count-1) in threads started together; the exceptions they raised."""
    start, failures = threading.Barrier(count), []

    def run(n: int) -> None:
        start.wait()
        try:
            work(n)
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    return failures


def test_read_modify_write_loses_no_update_across_nodes(
    two_nodes: tuple[MetadataStore, MetadataStore],
) -> None:
    key = replace(record(key_ids(1)[0]), tags={"count": "0"})
    with two_nodes[0].transaction() as tx:
        tx.put_key(key)
    before = two_nodes[1].generation()

    def increment(n: int) -> None:
        node = two_nodes[n % 2]
        for _ in range(ROUNDS):
            with node.transaction() as tx:
                current = tx.get_key(key.key_id)
                assert current is not None
                count = int(current.tags["count"]) + 1
                tx.put_key(replace(current, tags={**current.tags, "count": str(count)}))

    assert in_threads(THREADS, increment) == []
    final = two_nodes[1].get_key(key.key_id)
    assert final is not None and final.tags["count"] == str(THREADS * ROUNDS)
    # One bump per committed write transaction, whichever node made it.
    assert two_nodes[0].generation() == before + THREADS * ROUNDS


def test_create_if_absent_alias_is_created_once_across_nodes(
    two_nodes: tuple[MetadataStore, MetadataStore],
) -> None:
    ids = key_ids(THREADS)
    with two_nodes[0].transaction() as tx:
        for key_id in ids:
            tx.put_key(record(key_id))
    created: list[str] = []

    def create_alias(n: int) -> None:
        with two_nodes[n % 2].transaction() as tx:
            if tx.get_alias("us-east-1", "alias/race") is None:
                tx.put_alias(Alias("alias/race", ids[n], "us-east-1", "111122223333", NOW, NOW))
                created.append(ids[n])

    assert in_threads(THREADS, create_alias) == []
    assert len(created) == 1
    alias = two_nodes[1].get_alias("us-east-1", "alias/race")
    assert alias is not None and alias.key_id == created[0]


def test_a_write_on_one_node_moves_the_generation_another_node_reads(
    two_nodes: tuple[MetadataStore, MetadataStore],
) -> None:
    writer, reader = two_nodes
    key = record(key_ids(1)[0])
    seen = reader.generation()
    cached = reader.get_key(key.key_id)  # a cache filled at generation `seen`
    assert cached is None
    with writer.transaction() as tx:
        tx.put_key(key)
    assert reader.generation() != seen  # so the cache knows to refill
    assert reader.get_key(key.key_id) == key
    seen = reader.generation()
    with reader.transaction() as tx:
        tx.delete_alias("us-east-1", "alias/none")
    assert writer.generation() > seen


def test_postgres_lock_wait_is_bounded(pg_url: str) -> None:
    holder, waiter = PostgresStore(pg_url), PostgresStore(pg_url, lock_timeout_ms=200)
    key = record(key_ids(1)[0])
    with holder.transaction() as tx:
        tx.put_key(key)
    with holder.transaction() as tx:
        assert tx.get_key(key.key_id) is not None  # holds the row lock
        with pytest.raises(DependencyTimeoutException, match="retry"), waiter.transaction() as w:
            w.get_key(key.key_id)
        assert waiter.get_key(key.key_id) == key  # plain reads never wait for writers
    holder.close()
    waiter.close()


def test_postgres_deadlock_fails_one_transaction_and_commits_the_other(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    first, second = key_ids(2)
    with store.transaction() as tx:
        tx.put_key(record(first))
        tx.put_key(record(second))
    both_locked = threading.Barrier(2)

    def cross(n: int) -> None:
        mine, theirs = (first, second) if n == 0 else (second, first)
        with store.transaction() as tx:
            current = tx.get_key(mine)
            assert current is not None
            both_locked.wait()
            tx.get_key(theirs)  # each now waits for the other: PostgreSQL picks one to fail
            tx.put_key(replace(current, description=f"by {n}"))

    failures = in_threads(2, cross)
    assert [type(f) for f in failures] == [DependencyTimeoutException]
    descriptions = {k.description for k in store.list_keys(None, None, 10)}
    assert len(descriptions - {""}) == 1
    store.close()


def test_postgres_nodes_starting_together_migrate_once(pg_url: str) -> None:
    stores: list[PostgresStore] = []
    assert in_threads(4, lambda n: stores.append(PostgresStore(pg_url))) == []
    assert [s.schema_version for s in stores] == [len(HISTORY)] * 4
    for store in stores:
        store.close()


def test_open_store_picks_the_engine_by_url(tmp_path: Path, pg_url: str) -> None:
    sqlite = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(sqlite, SqliteStore) and (tmp_path / "x.db").exists()
    sqlite.close()
    postgres = open_store(pg_url, pool_size=2)
    assert isinstance(postgres, PostgresStore)
    postgres.ping()
    postgres.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://admin:hunter2@db/kms", "unsupported database URL scheme 'mysql'"),
        ("hsmkms.db", "unsupported database URL scheme 'hsmkms.db'"),
        ("sqlite:///", "names no file"),
    ],
)
def test_open_store_rejects_other_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        open_store(url)
    assert "hunter2" not in str(refused.value)


def test_unreachable_postgres_is_an_internal_error_without_the_password() -> None:
    from tests.support.pg import _free_port

    url = f"postgresql://u:hunter2@127.0.0.1:{_free_port()}/kms"
    with pytest.raises(KMSInternalException, match="cannot connect") as refused:
        PostgresStore(url, timeout=1.0)
    assert "hunter2" not in str(refused.value)
