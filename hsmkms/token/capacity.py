"""How full the token says it is (CK_TOKEN_INFO's memory and session counters), for
`hsmkms status`. python-pkcs11 keeps only the token's names, so C_GetTokenInfo is
called through the module's function list, as library.py calls C_Initialize."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from hsmkms.token.hsm import Hsm
from hsmkms.token.library import CKR_OK, function_list_entry

CK_UNAVAILABLE_INFORMATION = ctypes.c_ulong(-1).value
CK_EFFECTIVELY_INFINITE = 0
C_GET_TOKEN_INFO = 7  # its place in CK_FUNCTION_LIST, after the version (PKCS#11 v2.40)


class _Version(ctypes.Structure):
    _fields_ = (("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte))


class _TokenInfo(ctypes.Structure):
    _fields_ = (
        ("label", ctypes.c_char * 32),
        ("manufacturer", ctypes.c_char * 32),
        ("model", ctypes.c_char * 16),
        ("serial", ctypes.c_char * 16),
        ("flags", ctypes.c_ulong),
        ("max_sessions", ctypes.c_ulong),
        ("sessions", ctypes.c_ulong),
        ("max_rw_sessions", ctypes.c_ulong),
        ("rw_sessions", ctypes.c_ulong),
        ("max_pin", ctypes.c_ulong),
        ("min_pin", ctypes.c_ulong),
        ("total_public", ctypes.c_ulong),
        ("free_public", ctypes.c_ulong),
        ("total_private", ctypes.c_ulong),
        ("free_private", ctypes.c_ulong),
        ("hardware", _Version),
        ("firmware", _Version),
        ("time", ctypes.c_char * 16),
    )


_GetTokenInfo = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.POINTER(_TokenInfo))


@dataclass(frozen=True)
class Capacity:
    """Counters as the token gives them: None where it says it does not know (SoftHSM2
    and NSS softokn for memory), "unlimited" for a maximum it says is infinite."""

    free_public_memory: int | str | None
    free_private_memory: int | str | None
    sessions: int | None
    max_sessions: int | str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "FreePublicMemory": self.free_public_memory,
            "FreePrivateMemory": self.free_private_memory,
            "Sessions": self.sessions,
            "MaxSessions": self.max_sessions,
        }


def _counter(value: int, *, limit: bool = False) -> int | str | None:
    """`limit`: a maximum, where 0 means effectively infinite."""
    if value == CK_UNAVAILABLE_INFORMATION:
        return None
    if limit and value == CK_EFFECTIVELY_INFINITE:
        return "unlimited"
    return value


def token_capacity(hsm: Hsm) -> Capacity:
    """What CK_TOKEN_INFO says of the token's free memory and sessions now."""
    info = _TokenInfo()
    call = function_list_entry(hsm.module_path, C_GET_TOKEN_INFO, _GetTokenInfo)
    rv = call(hsm.link.token.slot.slot_id, ctypes.byref(info))
    if rv != CKR_OK:
        return Capacity(None, None, None, None)
    sessions = _counter(info.sessions)
    return Capacity(
        free_public_memory=_counter(info.free_public),
        free_private_memory=_counter(info.free_private),
        sessions=sessions if isinstance(sessions, int) else None,
        max_sessions=_counter(info.max_sessions, limit=True),
    )
