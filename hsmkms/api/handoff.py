"""New connections over the worker processes of `hsmkms serve --workers N`, in turn:
the supervisor's side (`Dispatcher`) and the messages between it and its workers (the
worker's side: hsmkms.api.handoff_worker).

With one listening socket shared by the workers, the worker whose event loop wakes
first accepts a whole burst of new connections (libuv accepts until none is left):
one process of N could hold every client of a burst, its core busy and the others
idle. So the supervising process alone accepts, and hands each connection, its file
descriptor, to the next worker in turn, as long as fewer than HANDED_AHEAD connections
handed to it wait to be taken. While every worker has that many waiting, the supervisor
accepts nothing: new connections wait in the listener's backlog, as they did before,
rather than pile up in a worker that is busy or stuck (a stuck worker holds at most
HANDED_AHEAD of them until it is replaced).

The channels are Unix socket pairs made by the supervisor and by its workers and
passed only between them: no other process can join (a port shared with
SO_REUSEPORT, the other way to spread connections, any process of the same user
may bind, and then take a share of the clients).

One SOCK_SEQPACKET message each:
- worker -> supervisor, on the pair every worker inherits: b"hello" with the
  worker's end of a pair of its own, once its app is ready to serve; the supervisor
  answers b"welcome" on it (a worker not welcomed in time stops, and is replaced);
- supervisor -> worker: b"conn" with a client's connection; the worker answers
  b"took N" once it has taken N (the supervisor's count, and its cue to hand more);
- worker -> supervisor: b"bye" when it stops serving; the supervisor hands it
  nothing more and answers b"bye"; what arrived before that goes back, b"back",
  and is handed to another worker (a rolling restart loses no connection).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from hsmkms.api.occasional import OccasionalWarning

log = logging.getLogger("hsmkms.api")

MAX_FDS = 32  # descriptors read in one message
ACCEPTS_PER_WAKE = 64  # then the dispatcher looks at its workers' messages again
ACCEPT_PAUSE_SECONDS = 1.0  # after the process ran out of descriptors (as asyncio does)
HANDED_AHEAD = 8  # connections handed to a worker and not yet taken, at most
RECHECK_SECONDS = 0.05  # while no worker can be handed more: should a cue be lost
# A send to a worker that fails with one of these: the worker is gone.
GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNREFUSED})


def is_channel(sock: object) -> bool:
    """The pair a worker was given instead of a listening socket."""
    return (
        isinstance(sock, socket.socket)
        and sock.family == socket.AF_UNIX
        and sock.type == socket.SOCK_SEQPACKET
    )


def took(data: bytes) -> int:
    """How many connections a b"took N" message says the worker took (0 for another)."""
    word, _, count = data.partition(b" ")
    return int(count) if word == b"took" and count.isdigit() else 0


def receive(channel: socket.socket) -> tuple[bytes, list[socket.socket]] | None:
    """One message and its connections; None when nothing waits. Raises EOFError
    once the other end is closed."""
    try:
        data, fds, flags, _address = socket.recv_fds(channel, 64, MAX_FDS)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise EOFError from exc
    if not data and not fds:
        raise EOFError
    if flags & socket.MSG_CTRUNC:  # this process is out of descriptors: some were lost
        log.error("a %r message lost descriptors: this process has too many open", data)
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
    to each of them in place of the listener. Used as a context manager: `start`
    within it, stopped (and its sockets closed) at its end."""

    def __init__(self, listener: socket.socket) -> None:
        self._listener = listener
        self._registry, self.for_workers = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._wake, self._waker = socket.socketpair()
        for sock in (listener, self._registry, self._wake):
            sock.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._registry, selectors.EVENT_READ)
        self._selector.register(self._wake, selectors.EVENT_READ)
        self._channels: set[socket.socket] = set()  # every worker's, until its end of file
        self._ready: list[socket.socket] = []  # of those, the ones serving, in turn
        self._untaken: dict[socket.socket, int] = {}  # handed, not yet taken, by worker
        self._turn = 0
        self._pending: deque[socket.socket] = deque()  # accepted or given back, not handed
        self._accepting = False
        self._paused_until = 0.0
        self._warn = OccasionalWarning(log)  # once a minute, not per connection
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
        if not self._thread.is_alive():  # else it still uses them; the process ends soon
            owned = (*self._pending, *self._channels, self._registry, self._wake, self._waker)
            for sock in (*owned, self.for_workers):
                sock.close()

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._hand_pending()
                now = time.monotonic()
                self._watch_listener(
                    not self._pending and now >= self._paused_until and self._taker() is not None
                )
                timeout = None  # woken by the listener, a hello, or a worker's message
                if self._ready and not self._accepting:
                    timeout = max(RECHECK_SECONDS, self._paused_until - now)
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

    def _accept(self) -> None:
        """While a worker can take one: a worker busy or stuck leaves the rest of a
        burst in the listener's backlog, not in its own queue."""
        for _ in range(ACCEPTS_PER_WAKE):
            if self._pending or self._taker() is None:
                return
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
                return
            self._pending.append(connection)
            self._hand_pending()

    def _register(self) -> None:
        while True:
            try:
                message = receive(self._registry)
            except EOFError:  # cannot happen while this process holds `for_workers`
                return
            if message is None:
                return
            data, sockets = message
            if data != b"hello" or len(sockets) != 1 or not is_channel(sockets[0]):
                for sock in sockets:
                    sock.close()
                continue
            channel = sockets[0]
            channel.setblocking(False)
            try:
                channel.send(b"welcome")
            except OSError:  # gone already
                channel.close()
                continue
            self._selector.register(channel, selectors.EVENT_READ)
            self._channels.add(channel)
            self._ready.append(channel)
            self._untaken[channel] = 0

    def _from_worker(self, channel: socket.socket) -> None:
        while True:
            try:
                message = receive(channel)
            except EOFError:  # the worker is gone
                self._retire(channel)
                self._selector.unregister(channel)
                self._channels.discard(channel)
                channel.close()
                return
            if message is None:
                return
            data, connections = message
            if channel in self._untaken:
                self._untaken[channel] = max(0, self._untaken[channel] - took(data))
            if data == b"bye":
                self._retire(channel)
                with contextlib.suppress(OSError):
                    channel.send(b"bye")
            self._pending.extend(connections)  # given back

    def _retire(self, channel: socket.socket) -> None:
        if channel in self._ready:
            self._ready.remove(channel)
            del self._untaken[channel]

    def _taker(self) -> int | None:
        """The next worker in turn with fewer than HANDED_AHEAD connections handed to it
        and not yet taken, by its place in `_ready`."""
        count = len(self._ready)
        for offset in range(count):
            index = (self._turn + offset) % count
            if self._untaken[self._ready[index]] < HANDED_AHEAD:
                return index
        return None

    def _hand_pending(self) -> None:
        while self._pending and (index := self._taker()) is not None:
            channel = self._ready[index]
            try:
                socket.send_fds(channel, [b"conn"], [self._pending[0].fileno()])
            except OSError as exc:
                if exc.errno in GONE:  # its end of file is read next
                    self._retire(channel)
                    continue
                # Too many descriptors in flight for this user (ETOOMANYREFS) and the
                # like: the connections wait, and are handed on the next round.
                self._warn("cannot hand a connection to a worker now: %s", exc.strerror)
                return
            self._turn = index + 1
            self._untaken[channel] += 1
            self._pending.popleft().close()
