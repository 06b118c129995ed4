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
from pathlib import Path
from typing import TypeVar

import pytest

from hsmkms.api import handoff_worker
from hsmkms.api.handoff import HANDED_AHEAD, Dispatcher
from hsmkms.api.handoff_worker import HandoffServer

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
        self.stopped = threading.Event()  # what would stop its process
        self.server = self.call(
            lambda: HandoffServer(
                self.loop, lambda: Named(self.name), registry, None, stop=self.stopped.set
            )
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
    sock = socket.create_server(("127.0.0.1", 0), backlog=2048)  # as hsmkms.api.listener
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


def wait_ready(listener: socket.socket, count: int) -> None:
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
        wait_ready(listener, 3)
        clients, names = answered(listener, 30)
        assert names == {b"a": 10, b"b": 10, b"c": 10}
        for client in clients:
            client.close()


def burst_answers(
    listener: socket.socket, count: int, within: float
) -> tuple[Counter[bytes], list[socket.socket]]:
    """`count` connections opened at once; the names of the workers that answered
    within `within` seconds, and the connections still unanswered then."""
    clients = [socket.create_connection(listener.getsockname()) for _ in range(count)]
    names: Counter[bytes] = Counter()
    deadline = time.monotonic() + within
    waiting = []
    for client in clients:
        client.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            names[client.recv(16)] += 1
            client.close()
        except TimeoutError:
            waiting.append(client)
    return names, waiting


def test_a_worker_that_lags_is_passed_over(listener: socket.socket) -> None:
    """A stuck worker holds HANDED_AHEAD connections of a burst at most (handed to it in
    its turns before it had that many waiting); the rest go to the workers that take
    them."""
    with dispatching(listener) as dispatcher, workers(dispatcher, "a", "b") as (a, _b):
        wait_ready(listener, 2)
        a.stall(4)
        names, waiting = burst_answers(listener, 40, within=2)
        assert len(waiting) <= HANDED_AHEAD and b"a" not in names, names
        assert names[b"b"] == 40 - len(waiting)
        for client in waiting:
            client.settimeout(5)
            assert client.recv(16) == b"a"  # served once its loop runs again
            client.close()


def test_a_burst_waits_in_the_backlog_while_no_worker_takes(listener: socket.socket) -> None:
    """Connections are accepted only as workers take them: with every worker stuck, a
    burst stays in the listener's backlog (not in this process's descriptors, where a
    flood could exhaust them), and is served whole once the workers run again."""
    descriptors = Path("/proc/self/fd")
    with dispatching(listener) as dispatcher, workers(dispatcher, "a", "b") as (a, b):
        wait_ready(listener, 2)
        before = len(list(descriptors.iterdir()))
        a.stall(3)
        b.stall(3)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(200)]
        time.sleep(0.2)
        held = len(list(descriptors.iterdir())) - before - len(clients)
        assert held <= 2 * HANDED_AHEAD + 1, held  # handed ahead, and one to hand next
        names: Counter[bytes] = Counter()
        for client in clients:
            client.settimeout(10)
            names[client.recv(16)] += 1
            client.close()
        assert sum(names.values()) == 200 and b"" not in names, names


def test_a_stopping_worker_gives_back_what_it_had_not_taken(listener: socket.socket) -> None:
    with dispatching(listener) as dispatcher, workers(dispatcher, "a", "b") as (a, _b):
        wait_ready(listener, 2)
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
        wait_ready(listener, 2)
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


def test_a_worker_not_welcomed_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its hello lost (the supervisor out of descriptors, say), a worker would serve
    nothing while its health checks pass: it stops instead, and is replaced."""
    monkeypatch.setattr(handoff_worker, "WELCOME_SECONDS", 0.2)
    deaf, registry = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stopped = threading.Event()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(
            asyncio.sleep(0)  # the server is made on the running loop, as uvicorn does
        )
        server = HandoffServer(loop, asyncio.Protocol, registry, None, stop=stopped.set)
        loop.run_until_complete(asyncio.sleep(0.5))
        assert stopped.is_set()
        server.close()
    finally:
        loop.close()
        deaf.close()
        registry.close()


def test_a_worker_stops_when_the_supervisor_stops_handing(listener: socket.socket) -> None:
    """Its supervisor's hand-off closed (the supervisor failing, say), a worker could
    serve nothing more: it stops rather than outlive it."""
    with dispatching(listener) as dispatcher:
        worker = Worker("a", dispatcher.for_workers)
        wait_ready(listener, 1)
        assert not worker.stopped.is_set()
    try:
        assert worker.stopped.wait(5)
    finally:
        worker.end()
