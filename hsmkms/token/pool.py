"""A pool of logged-in sessions: one thread uses one session at a time.

PKCS#11 login state belongs to the application, so the pool keeps one
"anchor" session logged in for its lifetime and opens worker sessions without
a PIN; the process's login is shared by its pools (hsmkms.token.logins). After a
transient fault (session or device gone) `recover()` re-opens the anchor and every
older worker is closed instead of being reused.

A session leased for longer than `call_timeout` is retired: its slot is given
to a new session so a call that never returns cannot starve the pool, and the
session is closed if its call ever comes back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pkcs11.exceptions import PKCS11Error

from hsmkms.errors import DependencyTimeoutException
from hsmkms.token.logins import close_anchor, open_anchor
from hsmkms.token.templates import ObjectName

IV_BATCH = 12 * 256  # IV bytes drawn from the token's RNG per C_GenerateRandom


class PooledSession:
    """A session plus what is cached per session: object handles and RNG bytes."""

    __slots__ = (
        "_random", "_random_pos", "generation", "leased_at", "objects", "retired", "session"
    )  # fmt: skip

    def __init__(self, session: Any, generation: int) -> None:
        self.session = session
        self.generation = generation
        self.leased_at = 0.0
        self.retired = False  # leased past the deadline: never reused
        # ObjectName, or (ObjectName, object class) for key pairs -> object handle
        self.objects: dict[object, Any] = {}
        self._random = b""
        self._random_pos = 0

    def random_bytes(self, count: int) -> bytes:
        """Bytes from the token's RNG, drawn in batches to save a call per IV."""
        if self._random_pos + count > len(self._random):
            self._random = self.session.generate_random(max(IV_BATCH, count) * 8)
            self._random_pos = 0
        start = self._random_pos
        self._random_pos = start + count
        return self._random[start : start + count]

    def close(self) -> None:
        self.objects.clear()
        with contextlib.suppress(PKCS11Error):  # already gone: nothing left to release
            self.session.close()


class SessionPool:
    def __init__(
        self,
        module_path: str,
        token: Any,
        pin: str | None,
        size: int,
        call_timeout: float | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("session pool size must be at least 1")
        self._module_path = module_path
        self._token = token
        self.call_timeout = call_timeout
        self.stuck = 0  # retired sessions whose call has not come back
        self._pin = pin
        self.size = size
        self._free: deque[PooledSession] = deque()
        self._cond = threading.Condition()
        self._open_count = 0
        self._waiters = 0
        self._generation = 0
        self._all: set[PooledSession] = set()
        self._recover_lock = threading.Lock()
        self._anchor: Any = open_anchor(module_path, token, pin, joining=True)
        self._left = False  # closed: counted out of the process's login

    @property
    def in_use(self) -> int:
        return self._open_count - len(self._free)

    def acquire(self) -> PooledSession:
        try:
            pooled = self._free.pop()
            pooled.leased_at = time.monotonic()
            return pooled
        except IndexError:
            pass
        started = time.monotonic()
        with self._cond:
            self._waiters += 1
            try:
                while not self._free and self._open_count >= self.size:
                    self._retire_overdue()
                    if self._free or self._open_count < self.size:
                        break
                    if self.call_timeout is None:
                        self._cond.wait()
                        continue
                    left = started + self.call_timeout - time.monotonic()
                    if left <= 0:
                        raise DependencyTimeoutException(
                            "No token session became free in time: the token is not answering."
                        )
                    self._cond.wait(min(left, 0.1))
                if self._free:
                    pooled = self._free.pop()
                    pooled.leased_at = time.monotonic()
                    return pooled
                self._open_count += 1
            finally:
                self._waiters -= 1
        try:
            pooled = PooledSession(self._token.open(rw=True), self._generation)
        except BaseException:
            self._forget_one()
            raise
        pooled.leased_at = time.monotonic()
        self._all.add(pooled)
        return pooled

    def _retire_overdue(self) -> None:
        """Give the slots of sessions leased past the deadline to new sessions.
        Called with the condition held."""
        if self.call_timeout is None:
            return
        limit = time.monotonic() - self.call_timeout
        for pooled in list(self._all):
            if pooled.leased_at and pooled.leased_at < limit and pooled not in self._free:
                pooled.retired = True
                self._all.discard(pooled)
                self._open_count -= 1
                self.stuck += 1

    def overdue(self) -> int:
        """Calls past their deadline right now (retired or about to be)."""
        with self._cond:
            self._retire_overdue()
            return self.stuck

    def release(self, pooled: PooledSession) -> None:
        pooled.leased_at = 0.0
        if pooled.retired:
            self._came_back(pooled)
            return
        if pooled.generation != self._generation:
            self.discard(pooled)
            return
        self._free.append(pooled)
        if self._waiters:
            with self._cond:
                self._cond.notify()

    def discard(self, pooled: PooledSession) -> None:
        pooled.leased_at = 0.0
        if pooled.retired:
            self._came_back(pooled)
            return
        pooled.close()
        self._all.discard(pooled)
        self._forget_one()

    def _came_back(self, pooled: PooledSession) -> None:
        """A retired session's call returned at last: close it; its slot is long reused."""
        with self._cond:
            self.stuck -= 1
        pooled.close()

    def _forget_one(self) -> None:
        with self._cond:
            self._open_count -= 1
            self._cond.notify()

    def recover(self, failed_generation: int | None = None) -> None:
        """After a transient fault: log in again; older sessions are retired. Threads
        that saw the same fault recover once: a session of an older generation than
        the pool's means someone already did."""
        with self._recover_lock:
            if failed_generation is not None and failed_generation != self._generation:
                return
            anchor, self._anchor = self._anchor, None  # never closed twice, if the login fails
            if anchor is not None:
                close_anchor(self._module_path, self._token, anchor, leaving=False)
            self._anchor = open_anchor(self._module_path, self._token, self._pin, joining=False)
            # Only now a new generation: a session opened before the login above may
            # not see private objects, and its generation says so.
            with self._cond:
                self._generation += 1
                stale = list(self._free)
                self._free.clear()
                self._open_count -= len(stale)
            for pooled in stale:
                pooled.close()
                self._all.discard(pooled)

    @property
    def generation(self) -> int:
        return self._generation

    def forget_object(self, ref: ObjectName) -> None:
        """Drop a destroyed object's cached handles from every session."""
        for pooled in list(self._all):
            for key in [k for k in pooled.objects if k == ref or (
                isinstance(k, tuple) and k[0] == ref
            )]:  # fmt: skip
                pooled.objects.pop(key, None)

    def run(self, work: Callable[[PooledSession], Any]) -> Any:
        pooled = self.acquire()
        try:
            return work(pooled)
        finally:
            self.release(pooled)

    def close(self) -> None:
        """Close every session not in a call (closing one under a running call could
        block behind it; the module's finalisation ends those)."""
        with self._cond:
            sessions = [pooled for pooled in self._all if not pooled.leased_at]
            self._all.clear()
            self._free.clear()
            self._open_count = 0
        for pooled in sessions:
            pooled.close()
        anchor, self._anchor = self._anchor, None
        if not self._left:  # a second close leaves nothing: the process's count is kept
            self._left = True
            close_anchor(self._module_path, self._token, anchor, leaving=True)
