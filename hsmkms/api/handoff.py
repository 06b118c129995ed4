"""New connections over the worker processes of `hsmkms serve --workers N`, in turn.

With one listening socket shared by the workers, the worker whose event loop wakes
first accepts a whole burst of new connections (libuv accepts until none is left):
one process of N could hold every client of a burst, its core busy and the others
idle. So the supervising process alone accepts (`Dispatcher`), and hands each
connection, its file descriptor, to a worker (`HandoffServer`): to the next in turn
that has taken every connection handed to it so far; a worker that lags behind (its
loop busy or stuck) is passed over while another keeps up.

The channels are Unix socket pairs made by the supervisor and by its workers and
passed only between them: no other process can join (a port shared with
SO_REUSEPORT, the other way to spread connections, any process of the same user
may bind, and then take a share of the clients).

One SOCK_SEQPACKET message each:
- worker -> supervisor, on the pair every worker inherits: b"hello" with the
  worker's end of a pair of its own, once its app is ready to serve;
- supervisor -> worker: b"conn" with a client's connection;
- worker -> supervisor: b"bye" when it stops serving; the supervisor hands it
  nothing more and answers b"bye"; what arrived before that goes back, b"back",
  and is handed to another worker (a rolling restart loses no connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import selectors
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvloop

log = logging.getLogger("hsmkms.api")

MAX_FDS = 32  # descriptors read in one message
ACCEPTS_PER_WAKE = 64  # then the dispatcher looks at its workers' messages again
ACCEPT_PAUSE_SECONDS = 1.0  # after the process ran out of descriptors (as asyncio does)
BYE_SECONDS = 5.0  # a stopping worker waits this long for the supervisor's answer
WARN_EVERY_SECONDS = 60.0


def _is_channel(sock: object) -> bool:
    """The pair a worker was given instead of a listening socket."""
    return (
        isinstance(sock, socket.socket)
        and sock.family == socket.AF_UNIX
        and sock.type == socket.SOCK_SEQPACKET
    )


def _unread_bytes(channel: socket.socket) -> int:
    """What the worker at the other end of `channel` has not taken yet (SIOCOUTQ)."""
    queued = fcntl.ioctl(channel.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return int(struct.unpack("i", queued)[0])


def _receive(channel: socket.socket) -> tuple[bytes, list[socket.socket]] | None:
    """One message and its connections; None when nothing waits. Raises EOFError
    once the other end is closed."""
    try:
        data, fds, _flags, _address = socket.recv_fds(channel, 64, MAX_FDS)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise EOFError from exc
    if not data and not fds:
        raise EOFError
    sockets = []
    for fd in fds:
        try:
            sockets.append(socket.socket(fileno=fd))
        except OSError:  # not a socket: nothing a peer of ours sends
            os.close(fd)
    return data, sockets


class Dispatcher:
    """In the supervising process: a thread that accepts on `listener` and hands each
    connection to a worker. Workers find it through `for_workers`, the socket passed
    to each of them in place of the listener. Connections wait in the listener's
    backlog while no worker is ready. Used as a context manager: `start` within it,
    stopped at its end."""

    def __init__(self, listener: socket.socket) -> None:
        self._listener = listener
        self._registry, self.for_workers = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._wake, self._waker = socket.socketpair()
        for sock in (listener, self._registry, self._wake):
            sock.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._registry, selectors.EVENT_READ)
        self._selector.register(self._wake, selectors.EVENT_READ)
        self._ready: list[socket.socket] = []  # workers' channels, in turn
        self._turn = 0
        self._accepting = False
        self._paused_until = 0.0
        self._warned_at = float("-inf")
        self._stopping = False
        self._on_failure: Callable[[], None] = lambda: None
        self._thread = threading.Thread(target=self._run, name="hsmkms-handoff", daemon=True)

    def __enter__(self) -> Dispatcher:
        return self

    def start(self, on_failure: Callable[[], None]) -> None:
        """Accept from now on; `on_failure()` if the hand-off breaks down (the server
        would accept nothing more: better to stop, and be restarted)."""
        self._on_failure = on_failure
        self._thread.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._waker.send(b"\0")
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._resume_accepting()
                timeout = None if self._accepting or not self._ready else 0.1
                for key, _events in self._selector.select(timeout):
                    self._on_readable(key.fileobj)
        except Exception:
            log.exception("the connection hand-off failed: the server stops")
            self._on_failure()
        finally:
            self._selector.close()

    def _on_readable(self, sock: Any) -> None:
        if sock is self._listener:
            self._accept()
        elif sock is self._registry:
            self._register()
        elif sock is self._wake:
            with contextlib.suppress(OSError):
                self._wake.recv(64)
        else:
            self._from_worker(sock)

    def _watch_listener(self, wanted: bool) -> None:
        if wanted != self._accepting:
            if wanted:
                self._selector.register(self._listener, selectors.EVENT_READ)
            else:
                self._selector.unregister(self._listener)
            self._accepting = wanted

    def _resume_accepting(self) -> None:
        self._watch_listener(bool(self._ready) and time.monotonic() >= self._paused_until)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                connection, _peer = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                # EMFILE and the like: accept again later rather than spin on it.
                self._warn("cannot accept connections for now: %s", exc.strerror or exc)
                self._paused_until = time.monotonic() + ACCEPT_PAUSE_SECONDS
                self._watch_listener(False)
                return
            self._hand(connection)

    def _register(self) -> None:
        while True:
            try:
                message = _receive(self._registry)
            except EOFError:  # cannot happen while this process holds `for_workers`
                return
            if message is None:
                return
            data, sockets = message
            if data != b"hello" or len(sockets) != 1 or not _is_channel(sockets[0]):
                for sock in sockets:
                    sock.close()
                continue
            channel = sockets[0]
            channel.setblocking(False)
            self._selector.register(channel, selectors.EVENT_READ)
            self._ready.append(channel)

    def _from_worker(self, channel: socket.socket) -> None:
        while True:
            try:
                message = _receive(channel)
            except EOFError:  # the worker is gone
                self._retire(channel)
                self._selector.unregister(channel)
                channel.close()
                return
            if message is None:
                return
            data, connections = message
            if data == b"bye":
                self._retire(channel)
                with contextlib.suppress(OSError):
                    channel.send(b"bye")
            for connection in connections:
                self._hand(connection)

    def _retire(self, channel: socket.socket) -> None:
        if channel in self._ready:
            self._ready.remove(channel)
        self._resume_accepting()

    def _hand(self, connection: socket.socket) -> None:
        """To the next worker in turn that has taken all it was handed, else to the one
        with least left to take; the connection is closed if none can take it."""
        tried: set[socket.socket] = set()
        while (channel := self._choose(tried)) is not None:
            try:
                socket.send_fds(channel, [b"conn"], [connection.fileno()])
                break
            except BlockingIOError:  # its queue is full: a worker that does not read
                tried.add(channel)
            except OSError:  # gone; its end of file is read next
                self._retire(channel)
        else:  # none serving (the server stopping), or every one's queue full
            if self._ready:
                self._warn("no worker could take a new connection; it was closed")
        connection.close()

    def _choose(self, tried: set[socket.socket]) -> socket.socket | None:
        count = len(self._ready)
        best: tuple[int, int] | None = None  # (unread bytes, offset from the turn)
        for offset in range(count):
            channel = self._ready[(self._turn + offset) % count]
            if channel in tried:
                continue
            unread = _unread_bytes(channel)
            if best is None or unread < best[0]:
                best = (unread, offset)
            if unread == 0:
                break
        if best is None:
            return None
        index = (self._turn + best[1]) % count
        self._turn = index + 1
        return self._ready[index]

    def _warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning(message, *args)


class HandoffServer(asyncio.AbstractServer):
    """In a worker: serves the connections the supervisor hands over, as the server
    `loop.create_server` makes would serve those it accepts (the same protocol factory,
    the same TLS context and handshake)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        registry: socket.socket,
        tls: ssl.SSLContext | None,
    ) -> None:
        self._loop, self._factory, self._tls = loop, protocol_factory, tls
        self._channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            socket.send_fds(registry, [b"hello"], [theirs.fileno()])
        finally:
            theirs.close()
        self._channel.setblocking(False)
        self._closing = False
        self._closed: asyncio.Future[None] = loop.create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        loop.add_reader(self._channel.fileno(), self._readable)

    def _readable(self) -> None:
        while not self._closed.done():
            try:
                message = _receive(self._channel)
            except EOFError:  # the supervisor is gone (hsmkms.api.server stops us)
                self._finish()
                return
            if message is None:
                return
            data, connections = message
            if data == b"bye" or self._closing:
                self._send_back(connections)
            else:
                for connection in connections:
                    task = self._loop.create_task(self._serve(connection))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            if data == b"bye":
                self._finish()

    async def _serve(self, connection: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, connection, ssl=self._tls)
        except Exception as exc:  # the client gone, a failed TLS handshake: its own end
            connection.close()
            log.debug("a handed-over connection ended before it was served: %s", exc)

    def _send_back(self, connections: list[socket.socket]) -> None:
        if connections:
            with contextlib.suppress(OSError):
                socket.send_fds(self._channel, [b"back"], [c.fileno() for c in connections])
        for connection in connections:
            connection.close()

    def _finish(self) -> None:
        if not self._closed.done():
            self._loop.remove_reader(self._channel.fileno())
            self._channel.close()
            self._closed.set_result(None)

    def close(self) -> None:
        """Stop taking connections: the supervisor hands this worker no more."""
        if self._closing or self._closed.done():
            return
        self._closing = True
        try:
            self._channel.send(b"bye")
        except OSError:
            self._finish()

    async def wait_closed(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(BYE_SECONDS):
                await asyncio.shield(self._closed)
        self._finish()

    async def start_serving(self) -> None:
        """Serving from the start, as created."""

    async def serve_forever(self) -> None:
        await asyncio.shield(self._closed)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return not self._closing and not self._closed.done()


class HandoffLoop(uvloop.Loop):
    """uvloop's loop, which serves a hand-off channel (uvicorn passes it as the socket
    to serve on) with a HandoffServer, and any other socket as uvloop does."""

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
    ) -> asyncio.AbstractServer:
        sock = kwargs.get("sock")
        if _is_channel(sock):
            assert isinstance(sock, socket.socket)
            return HandoffServer(self, protocol_factory, sock, kwargs.get("ssl"))
        server: asyncio.AbstractServer = await super().create_server(
            protocol_factory, *args, **kwargs
        )
        return server


# uvicorn's `loop` setting for the workers: a custom loop is named by its factory.
LOOP_SETTING = f"{__name__}:{HandoffLoop.__name__}"
