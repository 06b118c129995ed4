"""The worker's side of the hand-off (hsmkms.api.handoff): a worker process of
`hsmkms serve --workers N` serves the connections its supervisor accepted and handed
over, instead of accepting on a listening socket of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable
from typing import Any

import uvloop

from hsmkms.api.handoff import is_channel, receive

log = logging.getLogger("hsmkms.api")

BYE_SECONDS = 5.0  # a stopping worker waits this long for the supervisor's answer
WELCOME_SECONDS = 10.0  # a worker the supervisor has not welcomed by then stops


def _stop_this_worker() -> None:
    """As on SIGTERM: drain, exit (the supervisor, if any, starts another in its place)."""
    os.kill(os.getpid(), signal.SIGTERM)


class HandoffServer(asyncio.AbstractServer):
    """Serves the connections the supervisor hands over, as the server
    `loop.create_server` makes would serve those it accepts (the same protocol factory,
    the same TLS context and handshake)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        registry: socket.socket,
        tls: ssl.SSLContext | None,
        stop: Callable[[], None] = _stop_this_worker,
    ) -> None:
        """`stop()` when this worker can be handed nothing more while it lives: its hello
        not taken, or the supervisor's end of its pair closed."""
        self._loop, self._factory, self._tls = loop, protocol_factory, tls
        self._channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            socket.send_fds(registry, [b"hello"], [theirs.fileno()])
        finally:
            theirs.close()
        self._channel.setblocking(False)
        self._welcomed = False
        self._closing = False
        self._closed: asyncio.Future[None] = loop.create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        loop.add_reader(self._channel.fileno(), self._readable)
        self._stop = stop
        loop.call_later(WELCOME_SECONDS, self._check_welcomed)

    def _check_welcomed(self) -> None:
        if not self._welcomed and self.is_serving():
            log.error("the supervisor did not take this worker's hello: it stops")
            self._stop()

    def _readable(self) -> None:
        took = 0
        while not self._closed.done():
            try:
                message = receive(self._channel)
            except EOFError:  # the supervisor is gone, or stopped handing connections
                if self.is_serving():
                    log.error("the supervisor closed this worker's hand-off: it stops")
                    self._stop()
                self._finish()
                return
            if message is None:
                break
            data, connections = message
            self._welcomed = self._welcomed or data == b"welcome"
            if data == b"bye" or self._closing:
                self._send_back(connections)
            else:
                # Counted by message, as the supervisor counts: a connection lost on the
                # way (this process out of descriptors) must not count as waiting forever.
                took += 1 if data == b"conn" else 0
                for connection in connections:
                    task = self._loop.create_task(self._serve(connection))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            if data == b"bye":
                self._finish()
        if took:  # the supervisor's count, and its cue to hand more
            with contextlib.suppress(OSError):
                self._channel.send(b"took %d" % took)

    async def _serve(self, connection: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, connection, ssl=self._tls)
        except Exception as exc:  # the client gone, a failed TLS handshake: its own end
            connection.close()
            log.debug("a handed-over connection ended before it was served: %s", exc)

    def _send_back(self, connections: list[socket.socket]) -> None:
        if connections:
            try:
                socket.send_fds(self._channel, [b"back"], [c.fileno() for c in connections])
            except OSError as exc:
                log.warning("%d connections not given back: %s", len(connections), exc)
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
        if is_channel(sock):
            assert isinstance(sock, socket.socket)
            return HandoffServer(self, protocol_factory, sock, kwargs.get("ssl"))
        server: asyncio.AbstractServer = await super().create_server(
            protocol_factory, *args, **kwargs
        )
        return server


# uvicorn's `loop` setting for the workers: a custom loop is named by its factory.
LOOP_SETTING = f"{__name__}:{HandoffLoop.__name__}"
