"""The link to the token: knowing when it went away, and getting it back.

A token that disappears (a removed HSM, a SoftHSM2 token directory moved away)
leaves the module's state broken until it is finalised and initialised again,
which is only safe with no call in flight. Calls pass a gate; a reconnect closes
the gate, waits for the calls inside to leave, re-initialises the module, finds
the token by its label and opens a new session pool. Until that works, calls fail
at once with KeyUnavailableException and a reconnect is tried at most once per
`RECONNECT_INTERVAL` seconds, by whichever call (or health probe) comes first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pkcs11 import exceptions as p11
from pkcs11.exceptions import PKCS11Error

from hsmkms.errors import KeyUnavailableException, KMSError
from hsmkms.token.faults import TRANSIENT, to_kms_error
from hsmkms.token.library import find_token, load_module, rescan_tokens
from hsmkms.token.pool import PooledSession, SessionPool
from hsmkms.token.sessioninfo import user_session

T = TypeVar("T")
RECONNECT_INTERVAL = 1.0
PRESENCE_TRIES = 4
# A cached object handle went stale (the object was destroyed by another process,
# or the token came back): look the object up again.
STALE_HANDLE = (p11.ObjectHandleInvalid, p11.KeyHandleInvalid)
RETRIED: tuple[type[Exception], ...] = (*TRANSIENT, *STALE_HANDLE)
GATE_WAIT = 5.0  # how long a reconnect waits for calls in flight, and calls for a reconnect


def token_gone() -> KeyUnavailableException:
    return KeyUnavailableException("The token is not reachable; retry later.")


class Gate:
    """Calls pass while it is open; `drain()` closes it and waits for the calls inside."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._closed = False

    def enter(self) -> None:
        with self._cond:
            if self._closed and not self._cond.wait_for(lambda: not self._closed, GATE_WAIT):
                raise token_gone()
            self._active += 1

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._closed and not self._active:
                self._cond.notify_all()

    def drain(self) -> bool:
        """Close the gate; True once no call is inside (False: gave up waiting)."""
        with self._cond:
            self._closed = True
            return self._cond.wait_for(lambda: not self._active, GATE_WAIT)

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
            self._cond.notify_all()


class TokenLink:
    """The token and its session pool, replaced as a whole when the token comes back."""

    def __init__(
        self,
        module_path: str,
        token: Any,
        pin: str | None,
        pool_size: int,
        call_timeout: float | None,
    ) -> None:
        self._module_path = module_path
        self._label = token.label
        self._pin = pin
        self._pool_size = pool_size
        self._call_timeout = call_timeout
        self.token = token
        self.pool = SessionPool(module_path, token, pin, pool_size, call_timeout)
        self.gate = Gate()
        self.down_since: float | None = None
        self._last_attempt = 0.0
        self._lock = threading.Lock()

    def user_session(self, pooled: PooledSession) -> bool:
        return user_session(self._module_path, pooled.session)

    def set_call_timeout(self, seconds: float | None) -> None:
        self._call_timeout = seconds
        self.pool.call_timeout = seconds

    def present(self) -> bool:
        """C_GetTokenInfo answers for our slot (SoftHSM2 fails it once the token's
        files are gone; a removed HSM reports CKR_TOKEN_NOT_PRESENT). SoftHSM2 also
        fails it for a moment while another process rewrites the token's files, so
        only repeated failures count."""
        for attempt in range(PRESENCE_TRIES):
            try:
                self.token.slot.get_token()
                return True
            except PKCS11Error:
                time.sleep(0.02 * (attempt + 1))
        return False

    def went_down(self) -> KeyUnavailableException:
        if self.down_since is None:
            self.down_since = time.monotonic()
        return token_gone()

    def reconnect(self) -> None:
        """Try to get the token back (rate-limited); KeyUnavailableException if not yet."""
        with self._lock:
            if self.down_since is None:
                return
            now = time.monotonic()
            if now - self._last_attempt < RECONNECT_INTERVAL:
                raise token_gone()
            self._last_attempt = now
            if not self.gate.drain():
                self.gate.reopen()
                raise token_gone()
            try:
                self.pool.close()
                rescan_tokens(self._module_path)
                token = find_token(load_module(self._module_path), self._label)
                if token is None:
                    raise token_gone()
                pool = SessionPool(
                    self._module_path, token, self._pin, self._pool_size, self._call_timeout
                )
                self.token, self.pool, self.down_since = token, pool, None
            except (PKCS11Error, KMSError) as exc:
                raise token_gone() from exc
            finally:
                self.gate.reopen()

    # -- running calls ------------------------------------------------------------

    def run(self, work: Callable[[PooledSession], T]) -> T:
        """One call on a pooled session: once more after a session fault, KMS errors
        for the rest, KeyUnavailableException while the token is gone."""
        if self.down_since is not None:
            self.reconnect()
        self.gate.enter()
        try:
            for attempt in (1, 2):
                try:
                    pooled = self.pool.acquire()
                except PKCS11Error as exc:
                    raise self._error(exc) from exc
                try:
                    result = work(pooled)
                except PKCS11Error as exc:
                    retry = self._session_lost(pooled, exc)  # the session is settled either way
                    if attempt == 1 and retry:
                        continue
                    raise self._error(exc) from exc
                except BaseException:
                    self.pool.release(pooled)
                    raise
                self.pool.release(pooled)
                return result
            raise AssertionError("unreachable")
        finally:
            self.gate.leave()

    def _session_lost(self, pooled: PooledSession, exc: PKCS11Error) -> bool:
        """Whether the fault was the session's, not the call's: a session gone or
        logged out under the call (a token reset, C_CloseAllSessions: modules report
        anything, SoftHSM2 often CKR_GENERAL_ERROR, and private objects look absent),
        or a stale object handle. The session is then dropped (and the login renewed,
        once for every thread that saw the fault); otherwise it goes back to the pool."""
        lost = isinstance(exc, RETRIED) or not self.user_session(pooled)
        if not lost:
            self.pool.release(pooled)
            # A search made before another thread's fresh login: look once more.
            return isinstance(exc, p11.NoSuchKey) and pooled.generation != self.pool.generation
        self.pool.discard(pooled)
        if not self.present():
            raise self.went_down() from exc
        try:
            self.pool.recover(pooled.generation)
        except PKCS11Error as again:
            raise self._error(again) from again
        return True

    def _error(self, exc: PKCS11Error) -> KMSError:
        return self.went_down() if not self.present() else to_kms_error(exc)
