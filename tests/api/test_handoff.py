"""The supervisor's hand-off of new connections to its workers (hsmkms.api.handoff),
with real sockets: a Dispatcher on a loopback listener, and workers that are event
loops in threads of this process serving a HandoffServer each (in `serve --workers N`
they are processes; tests/api/test_serve_workers.py runs those)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest

from hsmkms.api.handoff import Dispatcher, HandoffServer

T = TypeVar("T")


class Named(asyncio.Protocol):
    """Answers every connection with its worker's name, then keeps it open."""

    def __init__(self, name: bytes) -> None:
        self.name = name

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.name)


class Worker:
    """An event loop in a thread, serving the connections handed to it."""

    def __init__(self, name: str, registry: socket.socket) -> None:
        self.name = name.encode()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.call(
            lambda: HandoffServer(self.loop, lambda: Named(self.name), registry, None)
        )

    def call(self, work: Callable[[], T]) -> T:
        """`work()` on the worker's loop; its result."""

        async def run() -> T:
            return work()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stall(self, seconds: float, then: Callable[[], None] = lambda: None) -> None:
        """Hold the worker's loop, as a stuck request would; `then()` in the same step."""

        def step() -> None:
            time.sleep(seconds)
            then()

        self.loop.call_soon_threadsafe(step)

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


@contextmanager
def dispatching(
    listener: socket.socket, on_failure: Callable[[], None] = lambda: None
) -> Iterator[Dispatcher]:
    with Dispatcher(listener) as dispatcher:
        dispatcher.start(on_failure)
        yield dispatcher


@contextmanager
def workers(dispatcher: Dispatcher, *names: str) -> Iterator[list[Worker]]:
    started = [Worker(name, dispatcher.for_workers) for name in names]
    try:
        yield started
    finally:
        for worker in started:
            worker.end()


def connect(listener: socket.socket, timeout: float = 5) -> tuple[socket.socket, bytes]:
    """A new connection, and the name of the worker that answered it (b"" if none
    did within `timeout`)."""
    client = socket.create_connection(listener.getsockname(), timeout=timeout)
    try:
        return client, client.recv(16)
    except TimeoutError:
        return client, b""


def answered(listener: socket.socket, count: int) -> tuple[list[socket.socket], Counter[bytes]]:
    clients, names = [], Counter[bytes]()
    for _ in range(count):
        client, name = connect(listener)
        clients.append(client)
        names[name] += 1
    return clients, names


def wait_ready(dispatcher: Dispatcher, listener: socket.socket, count: int) -> None:
    """Until `count` workers answer: a worker joins when its hello is read."""
    deadline = time.monotonic() + 10
    while True:
        clients, names = answered(listener, 2 * count)
        for client in clients:
            client.close()
        if len(names) == count and b"" not in names:
            return
        assert time.monotonic() < deadline, names
        time.sleep(0.05)


def test_connections_go_to_the_workers_in_turn(listener: socket.socket) -> None:
    with dispatching(listener) as dispatcher, workers(dispatcher, "a", "b", "c"):
        wait_ready(dispatcher, listener, 3)
        clients, names = answered(listener, 30)
        assert names == {b"a": 10, b"b": 10, b"c": 10}
        for client in clients:
            client.close()


def test_a_worker_that_lags_is_passed_over(listener: socket.socket) -> None:
    with dispatching(listener) as dispatcher, workers(dispatcher, "a", "b") as (a, _b):
        wait_ready(dispatcher, listener, 2)
        a.stall(3)
        names: Counter[bytes] = Counter()
        waiting = []
        for _ in range(20):  # one after another, as a client's pool opens them
            client, name = connect(listener, timeout=1)
            if name:
                names[name] += 1
                client.close()
            else:
                waiting.append(client)
        # One connection went to the stalled worker when its turn came (it had taken
        # all it was handed); from then on it had more left to take than the other.
        assert names == {b"b": 19} and len(waiting) == 1, names
        waiting[0].settimeout(5)
        assert waiting[0].recv(16) == b"a"  # served once its loop runs again
        waiting[0].close()


def test_a_stopping_worker_gives_back_what_it_had_not_taken(listener: socket.socket) -> None:
    with dispatching(listener) as dispatcher, workers(dispatcher, "a", "b") as (a, _b):
        wait_ready(dispatcher, listener, 2)
        # "a" stops right after a stall, before it reads what was handed to it meanwhile:
        # at least one connection (its turn came while it had nothing left to take).
        a.stall(1, then=a.server.close)
        pending = [socket.create_connection(listener.getsockname()) for _ in range(6)]
        asyncio.run_coroutine_threadsafe(a.server.wait_closed(), a.loop).result(10)
        for client in pending:
            client.settimeout(5)
            assert client.recv(16) == b"b"  # given back, and served by the other
            client.close()
        clients, names = answered(listener, 6)
        assert names == {b"b": 6}  # a stopped worker is handed nothing more
        for client in clients:
            client.close()


def test_a_worker_that_is_gone_is_handed_nothing(listener: socket.socket) -> None:
    with dispatching(listener) as dispatcher, workers(dispatcher, "a", "b") as (a, _b):
        wait_ready(dispatcher, listener, 2)
        a.call(a.server._finish)  # its end closed, as when its process dies
        clients, names = answered(listener, 8)
        assert names == {b"b": 8}
        for client in clients:
            client.close()


def test_connections_wait_for_a_worker(listener: socket.socket) -> None:
    with dispatching(listener) as dispatcher:
        early = socket.create_connection(listener.getsockname())
        time.sleep(0.2)  # accepted by no one meanwhile: still in the listener's backlog
        with workers(dispatcher, "late"):
            early.settimeout(5)
            assert early.recv(16) == b"late"
        early.close()


def test_the_channels_are_not_on_the_filesystem_or_the_network(
    listener: socket.socket,
) -> None:
    """Only the supervisor's children can join: the pairs have no address to connect to."""
    with dispatching(listener) as dispatcher:
        assert dispatcher.for_workers.getsockname() in ("", b"")
        assert dispatcher.for_workers.getpeername() in ("", b"")


def test_a_failed_hand_off_stops_the_server(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepting nothing more while the workers look healthy would be an outage no
    health check sees: the supervisor is told to stop instead (and is restarted)."""
    failed = threading.Event()

    def broken(self: Dispatcher) -> None:
        raise RuntimeError("broken")

    monkeypatch.setattr(Dispatcher, "_register", broken)
    with dispatching(listener, failed.set) as dispatcher, workers(dispatcher, "a"):
        assert failed.wait(5)
