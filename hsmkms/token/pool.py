"""A pool of logged-in sessions: one thread uses one session at a time.

PKCS#11 login state belongs to the application, so the pool keeps one
"anchor" session logged in for its lifetime and opens worker sessions without
a PIN. After a transient fault (session or device gone) `recover()` re-opens
the anchor and every older worker is closed instead of being reused.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from pkcs11.exceptions import PKCS11Error, UserAlreadyLoggedIn

from hsmkms.token.templates import ObjectName

IV_BATCH = 12 * 256  # IV bytes drawn from the token's RNG per C_GenerateRandom


class PooledSession:
    """A session plus what is cached per session: object handles and RNG bytes."""

    __slots__ = ("_random", "_random_pos", "generation", "objects", "session")

    def __init__(self, session: Any, generation: int) -> None:
        self.session = session
        self.generation = generation
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
    def __init__(self, token: Any, pin: str | None, size: int) -> None:
        if size < 1:
            raise ValueError("session pool size must be at least 1")
        self._token = token
        self._pin = pin
        self.size = size
        self._free: deque[PooledSession] = deque()
        self._cond = threading.Condition()
        self._open_count = 0
        self._waiters = 0
        self._generation = 0
        self._all: set[PooledSession] = set()
        self._anchor = self._login()

    def _login(self) -> Any:
        try:
            return self._token.open(rw=True, user_pin=self._pin)
        except UserAlreadyLoggedIn:
            # Another pool of this process already logged in to the token.
            return self._token.open(rw=True)

    @property
    def in_use(self) -> int:
        return self._open_count - len(self._free)

    def acquire(self) -> PooledSession:
        try:
            return self._free.pop()
        except IndexError:
            pass
        with self._cond:
            self._waiters += 1
            try:
                while not self._free and self._open_count >= self.size:
                    self._cond.wait()
                if self._free:
                    return self._free.pop()
                self._open_count += 1
            finally:
                self._waiters -= 1
        try:
            pooled = PooledSession(self._token.open(rw=True), self._generation)
        except BaseException:
            self._forget_one()
            raise
        self._all.add(pooled)
        return pooled

    def release(self, pooled: PooledSession) -> None:
        if pooled.generation != self._generation:
            self.discard(pooled)
            return
        self._free.append(pooled)
        if self._waiters:
            with self._cond:
                self._cond.notify()

    def discard(self, pooled: PooledSession) -> None:
        pooled.close()
        self._all.discard(pooled)
        self._forget_one()

    def _forget_one(self) -> None:
        with self._cond:
            self._open_count -= 1
            self._cond.notify()

    def recover(self) -> None:
        """After a transient fault: log in again; older sessions are retired."""
        with self._cond:
            self._generation += 1
            stale = list(self._free)
            self._free.clear()
            self._open_count -= len(stale)
            old_anchor, self._anchor = self._anchor, None
        for pooled in stale:
            pooled.close()
            self._all.discard(pooled)
        with contextlib.suppress(PKCS11Error):
            old_anchor.close()
        self._anchor = self._login()

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
        with self._cond:
            sessions = list(self._all)
            self._all.clear()
            self._free.clear()
            self._open_count = 0
        for pooled in sessions:
            pooled.close()
        if self._anchor is not None:
            with contextlib.suppress(PKCS11Error):
                self._anchor.close()
            self._anchor = None
