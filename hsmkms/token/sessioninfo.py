"""C_GetSessionInfo, which python-pkcs11 does not offer: whether a session sees the
user's private objects.

After the token logged the application out (C_CloseAllSessions, a token reset),
a session opened before the next login searches only public objects, so every
key looks absent. A NoSuchKey is believed only from a session in a user state.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

CKR_OK = 0
CKS_RO_USER_FUNCTIONS = 1
CKS_RW_USER_FUNCTIONS = 3

_FUNCTIONS_BEFORE = (
    "C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList", "C_GetSlotList",
    "C_GetSlotInfo", "C_GetTokenInfo", "C_GetMechanismList", "C_GetMechanismInfo",
    "C_InitToken", "C_InitPIN", "C_SetPIN", "C_OpenSession", "C_CloseSession",
    "C_CloseAllSessions",
)  # fmt: skip


class _SessionInfo(ctypes.Structure):
    _fields_ = (
        ("slot_id", ctypes.c_ulong),
        ("state", ctypes.c_ulong),
        ("flags", ctypes.c_ulong),
        ("device_error", ctypes.c_ulong),
    )


class _FunctionList(ctypes.Structure):
    # CK_FUNCTION_LIST (PKCS#11 v2.40) up to C_GetSessionInfo.
    _fields_ = (
        ("version", ctypes.c_ubyte * 2),
        *((name, ctypes.c_void_p) for name in _FUNCTIONS_BEFORE),
        ("C_GetSessionInfo", ctypes.c_void_p),
    )


_GetSessionInfo = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.POINTER(_SessionInfo))


@functools.cache
def _get_session_info(module_path: str) -> Any:
    library = ctypes.CDLL(module_path)  # the mapping python-pkcs11 already holds
    functions = ctypes.POINTER(_FunctionList)()
    if library.C_GetFunctionList(ctypes.byref(functions)) != CKR_OK:
        return None
    return _GetSessionInfo(functions.contents.C_GetSessionInfo)


def user_session(module_path: str, session: Any) -> bool:
    """Whether the session is valid and logged in as the user."""
    call = _get_session_info(module_path)
    if call is None:
        return True  # cannot tell: believe the token
    info = _SessionInfo()
    if call(session.handle, ctypes.byref(info)) != CKR_OK:
        return False
    return info.state in (CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS)
