"""Session calls python-pkcs11 does not offer as we need them.

C_GetSessionInfo: whether a session sees the user's private objects. After the
token logged the application out (C_CloseAllSessions, a token reset), a session
opened before the next login searches only public objects, so every key looks
absent. A NoSuchKey is believed only from a session in a user state.

C_Login on a session of ours, C_CloseSession and C_Logout each alone: python-pkcs11
opens a session to log in and leaves it open when the login fails (a wrong PIN), and
closes a session it logged in with C_Logout first; login state belongs to the
application, not to the session, so that would log out every other pool of this
process on the same token under their calls. hsmkms.token.logins decides when the
process logs in and out.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

from hsmkms.token.library import CKR_OK, function_list_entry

CKS_RO_USER_FUNCTIONS = 1
CKS_RW_USER_FUNCTIONS = 3
# Positions in CK_FUNCTION_LIST (PKCS#11 v2.40), C_Initialize being 1.
C_CLOSE_SESSION = 14
C_GET_SESSION_INFO = 16
C_LOGIN = 19
C_LOGOUT = 20
CKU_USER = 1


class _SessionInfo(ctypes.Structure):
    _fields_ = (
        ("slot_id", ctypes.c_ulong),
        ("state", ctypes.c_ulong),
        ("flags", ctypes.c_ulong),
        ("device_error", ctypes.c_ulong),
    )


_GetSessionInfo = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.POINTER(_SessionInfo))
_SessionCall = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong)  # C_CloseSession, C_Logout
_Login = ctypes.CFUNCTYPE(
    ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong
)


@functools.cache
def _entry(module_path: str, index: int, prototype: Any) -> Any:
    return function_list_entry(module_path, index, prototype)


def user_session(module_path: str, session: Any) -> bool:
    """Whether the session is valid and logged in as the user."""
    info = _SessionInfo()
    call = _entry(module_path, C_GET_SESSION_INFO, _GetSessionInfo)
    if call(session.handle, ctypes.byref(info)) != CKR_OK:
        return False
    return info.state in (CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS)


def login(module_path: str, session: Any, pin: str) -> int:
    """C_Login as the user on the session; the return value (CKR_OK is 0)."""
    secret = pin.encode()
    return int(_entry(module_path, C_LOGIN, _Login)(session.handle, CKU_USER, secret, len(secret)))


def close_session(module_path: str, session: Any, *, logout: bool) -> None:
    """Close the session, after logging the process out of its token if `logout`; a
    session already gone is nothing to close."""
    if logout:
        _entry(module_path, C_LOGOUT, _SessionCall)(session.handle)
    _entry(module_path, C_CLOSE_SESSION, _SessionCall)(session.handle)
