"""The process's login to each token. PKCS#11 keeps login state per application, not
per session, so every session pool of this process on one token (the main link, a
key store's, a link replaced after the token came back) shares one login:

- A pool that finds the process logged in already gets in only with the PIN that
  logged it in (SHA-256 digests compared in constant time): a token does not check a
  PIN once the application is logged in, so a wrong one would otherwise pass.
- Pools open and close their logged-in ("anchor") sessions without logging the process
  out, so that no pool logs out another under its calls; the last pool of the process
  on the token to close logs it out.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pkcs11 import exceptions as p11

from hsmkms.token.library import CKR_OK
from hsmkms.token.sessioninfo import close_session, login, user_session

LOGIN_TRIES = 3
CKR_PIN_INCORRECT = 0x0A0
CKR_USER_ALREADY_LOGGED_IN = 0x100
# Codes SoftHSM2 answers now and then while another process rewrites its token's files.
_RETRIED = (p11.GeneralError, p11.DeviceError)
# C_Login's return values that a caller tells apart (hsmkms.token.faults), as
# python-pkcs11 raises them; any other is a plain PKCS11Error.
_LOGIN_ERRORS: dict[int, type[p11.PKCS11Error]] = {
    0x005: p11.GeneralError,
    0x030: p11.DeviceError,
    0x032: p11.DeviceRemoved,
    CKR_PIN_INCORRECT: p11.PinIncorrect,
    0x0A1: p11.PinInvalid,
    0x0A2: p11.PinLenRange,
    0x0A3: p11.PinExpired,
    0x0A4: p11.PinLocked,
    0x0B3: p11.SessionHandleInvalid,
    0x0E0: p11.TokenNotPresent,
    CKR_USER_ALREADY_LOGGED_IN: p11.UserAlreadyLoggedIn,
    0x102: p11.UserPinNotInitialized,
}


@dataclass
class _Login:
    pin_digest: bytes
    pools: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


_lock = threading.Lock()
_logins: dict[tuple[str, int], _Login] = {}  # (module path, slot id)


def _digest(pin: str) -> bytes:
    return hashlib.sha256(pin.encode()).digest()


def _of(module_path: str, token: Any) -> _Login:
    with _lock:
        return _logins.setdefault((module_path, token.slot.slot_id), _Login(b""))


def open_anchor(module_path: str, token: Any, pin: str | None, *, joining: bool) -> Any:
    """A session of a logged-in process (public only without a PIN). `joining`: a new
    pool (counted until `close_anchor(..., leaving=True)`), else one logging in again
    after a fault. PinIncorrect for a PIN other than the one the process is logged
    in with. An open or a login that fails with a code in _RETRIED is tried again; a
    wrong PIN never is (lockout)."""
    state = _of(module_path, token)
    for attempt in range(LOGIN_TRIES):
        try:
            session = token.open(rw=True)
        except _RETRIED as exc:
            failure: p11.PKCS11Error = exc
        else:
            if pin is None:
                return session
            rv = _log_in(state, module_path, session, pin, joining)
            if rv == CKR_OK:
                return session
            close_session(module_path, session, logout=False)
            error = _LOGIN_ERRORS.get(rv, p11.PKCS11Error)
            failure = error(f"C_Login: rv={rv:#x}") if error is p11.PKCS11Error else error()
        if not isinstance(failure, _RETRIED) or attempt == LOGIN_TRIES - 1:
            raise failure
        time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _log_in(state: _Login, module_path: str, session: Any, pin: str, joining: bool) -> int:
    """The process logged in on `session` with `pin`, counting the pool if `joining`:
    CKR_OK, or the code to refuse with."""
    with state.lock:  # one login per token at a time in this process
        logged_in = user_session(module_path, session)
        rv = CKR_USER_ALREADY_LOGGED_IN if logged_in else login(module_path, session, pin)
        if rv == CKR_OK:
            state.pin_digest = _digest(pin)
        elif rv != CKR_USER_ALREADY_LOGGED_IN:
            return rv
        elif not hmac.compare_digest(state.pin_digest, _digest(pin)):
            return CKR_PIN_INCORRECT  # logged in with another PIN (or not by a pool)
        state.pools += joining
        return CKR_OK


def close_anchor(module_path: str, token: Any, session: Any | None, *, leaving: bool) -> None:
    """Close a pool's logged-in session (None: it has none left, a login having failed);
    `leaving`: the pool is closing, and when it is the last of the process on the
    token, the process logs out."""
    state = _of(module_path, token)
    with state.lock:
        last = False
        if leaving and state.pools > 0:
            state.pools -= 1
            last = state.pools == 0
        if session is None and last:
            with contextlib.suppress(p11.PKCS11Error):  # a token gone has no login left
                session = token.open(rw=True)
        if session is not None:
            close_session(module_path, session, logout=last)
