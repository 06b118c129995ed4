"""Loading a PKCS#11 module and finding a token.

python-pkcs11 calls C_Initialize(NULL), which tells a module the application is
single-threaded (SoftHSM2 then turns its mutexes off). We call C_Initialize with
CKF_OS_LOCKING_OK ourselves first, through the module's function list, and let
python-pkcs11 attach to the already initialised module.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Any

from pkcs11 import _pkcs11
from pkcs11.exceptions import NoSuchToken, PKCS11Error

from hsmkms.config.sources import ConfigError
from hsmkms.errors import KMSInternalException
from hsmkms.token.faults import TokenNotFound

CKF_OS_LOCKING_OK = 0x00000002
CKR_OK = 0x0
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191

_CInitialize = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p)


class _InitializeArgs(ctypes.Structure):
    _fields_ = (
        ("create_mutex", ctypes.c_void_p),
        ("destroy_mutex", ctypes.c_void_p),
        ("lock_mutex", ctypes.c_void_p),
        ("unlock_mutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("reserved", ctypes.c_char_p),  # NSS: LibraryParameters
        ("nss_reserved", ctypes.c_void_p),  # NSS's own pReserved; ignored by others
    )


class _FunctionListHead(ctypes.Structure):
    # Only the head of CK_FUNCTION_LIST: the version, C_Initialize, C_Finalize.
    _fields_ = (
        ("version", ctypes.c_ubyte * 2),
        ("C_Initialize", _CInitialize),
        ("C_Finalize", _CInitialize),
    )


class _AttachedLib(_pkcs11.lib):
    """python-pkcs11's lib, minus its own C_Initialize(NULL) (done by us already)."""

    def initialize(self) -> None:
        return None


_modules: dict[str, Any] = {}
_init_params: dict[str, str | None] = {}
_opened: dict[str, int] = {}
_keep_loaded: list[ctypes.CDLL] = []
_lock = threading.Lock()


class NotAPkcs11Module(ConfigError):
    """A file that the dynamic loader refuses, or that has no C_GetFunctionList: a set-up
    mistake, named with its path (a missing file may come back: TokenNotFound)."""


def _function_list(path: str) -> Any:
    try:
        dll = ctypes.CDLL(path)
        get_function_list = dll.C_GetFunctionList
    except AttributeError:
        raise NotAPkcs11Module(f"{path} is not a PKCS#11 module (no C_GetFunctionList)") from None
    except OSError as exc:
        if not os.path.exists(path):
            raise
        raise NotAPkcs11Module(f"{path} is not a PKCS#11 module ({exc})") from None
    _keep_loaded.append(dll)  # never unload: python-pkcs11 shares this mapping
    head = ctypes.POINTER(_FunctionListHead)()
    rv = get_function_list(ctypes.byref(head))
    if rv != CKR_OK:
        raise KMSInternalException(
            f"C_GetFunctionList failed for PKCS#11 module {path} (rv={rv:#x})"
        )
    return head


def function_list_entry(path: str, index: int, prototype: Any) -> Any:
    """The `index`-th function of the module's CK_FUNCTION_LIST (C_Initialize is 1: the
    version before it takes one pointer's room), as a ctypes `prototype`."""
    base = ctypes.cast(_function_list(path), ctypes.c_void_p).value
    assert base is not None
    address = ctypes.c_void_p.from_address(base + index * ctypes.sizeof(ctypes.c_void_p))
    return prototype(address.value)


def _initialize_with_os_locking(path: str, init_params: str | None) -> None:
    head = _function_list(path)
    params = init_params.encode() if init_params else None
    args = _InitializeArgs(None, None, None, None, CKF_OS_LOCKING_OK, params, None)
    rv = head.contents.C_Initialize(ctypes.cast(ctypes.byref(args), ctypes.c_void_p))
    if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
        raise KMSInternalException(f"C_Initialize failed for PKCS#11 module {path} (rv={rv:#x})")


def load_module(path: str, init_params: str | None = None) -> Any:
    """The python-pkcs11 `lib` for a module path, initialised once per process;
    init_params is the module's initialisation string (NSS softokn's configdir)."""
    with _lock:
        if path not in _modules:
            try:
                _initialize_with_os_locking(path, init_params)
                _init_params[path] = init_params
                _modules[path] = _AttachedLib(path)
            except OSError as exc:
                raise TokenNotFound(f"cannot load PKCS#11 module {path}: {exc}") from exc
        return _modules[path]


def rescan_tokens(path: str) -> None:
    """Finalize and initialise the module again, so it sees tokens created since it
    was loaded (SoftHSM2 reads its token directory at C_Initialize). Every session
    and object of this module becomes invalid: call only with none in use."""
    with _lock:
        if path in _modules:
            _function_list(path).contents.C_Finalize(None)
            _initialize_with_os_locking(path, _init_params.get(path))


def first_find(path: str, label: str, init_params: str | None = None) -> Any | None:
    """The token for a process's first link to the module. SoftHSM2 reads its token
    files once, at C_Initialize, and can miss a token whose files another process is
    rewriting at that moment; with no session of this process open yet, the module
    can safely be initialised again to look once more."""
    module = load_module(path, init_params)
    for attempt in range(3):
        token = find_token(module, label)
        if token is not None or _opened.get(path):
            return token
        time.sleep(0.05 * (attempt + 1))
        rescan_tokens(path)
    return find_token(module, label)


def opened(path: str, change: int) -> None:
    """Count this process's open links to a module (see first_find)."""
    with _lock:
        _opened[path] = _opened.get(path, 0) + change


def find_token(module: Any, label: str, tries: int = 4) -> Any | None:
    """The token by label. SoftHSM2 fails C_GetTokenInfo for a moment while another
    process rewrites the token's files, so a failure is tried again a few times."""
    for attempt in range(tries):
        try:
            return module.get_token(token_label=label)
        except NoSuchToken:
            return None
        except PKCS11Error as exc:
            if attempt == tries - 1:
                raise KMSInternalException(f"cannot list tokens: {type(exc).__name__}") from exc
            time.sleep(0.02 * (attempt + 1))
    return None
