"""Differences between PKCS#11 implementations, found by probing and handled here.

Each quirk is detected on the token itself, never keyed on a module's name:
  * AES-GCM single-part encrypt: some modules (NSS softokn 3.87) answer the
    C_Encrypt size query without the 16-byte tag. python-pkcs11 trusts that size
    and fails with CKR_BUFFER_TOO_SMALL, so the first encryption asks the size
    itself through the module's function list, and if the answer is short every
    encryption calls C_EncryptInit/C_Encrypt directly with a buffer of the right
    size. The cipher still runs inside the token. The same first call notices a
    module that replaces the caller's IV with its own in CK_GCM_PARAMS.pIv (AWS
    CloudHSM documents this; not tested here): then every encryption is direct and
    returns the IV the token used.
  * HMAC verify: some modules (NSS) report a mismatch with a stale, unrelated CKR.
    Such a code is confirmed by computing the MAC in the token and comparing. The same
    holds for RSA PKCS#1 v1.5 verify (NSS answers CKR_DEVICE_ERROR for a mismatch when
    its thread's last error is another): that signature is deterministic, so the token
    signs the same input and the code stands only if the signatures are equal.
  * CKA_LOCAL: NSS softokn never sets it, not even on keys it generated, so the
    flag proves nothing there; `reports_local` says whether the token sets it.
  * Curves: a module may offer CKM_EC_KEY_PAIR_GEN without every curve (NSS has no
    secp256k1); each curve is probed once with a throw-away session key pair.
"""

from __future__ import annotations

import ctypes
import hmac
import threading
from collections.abc import Callable
from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11 import exceptions as p11
from pkcs11.exceptions import PKCS11Error

from hsmkms.errors import KMSInternalException, UnsupportedOperationException
from hsmkms.token import asymmetric
from hsmkms.token.faults import TRANSIENT
from hsmkms.token.kinds import EcPair
from hsmkms.token.pool import PooledSession
from hsmkms.token.templates import MaterialRef

GCM_TAG_BYTES = 16
MAC_BYTES = {"SHA224": 28, "SHA256": 32, "SHA384": 48, "SHA512": 64}
CURVE_NAMES = {
    "1.2.840.10045.3.1.7": "P-256",
    "1.3.132.0.34": "P-384",
    "1.3.132.0.35": "P-521",
    "1.3.132.0.10": "secp256k1",
}
# CKR codes a direct call can return, as the exceptions python-pkcs11 would raise,
# so faults.py maps them the same way (transient faults are retried there).
_CKR: dict[int, type[PKCS11Error]] = {
    0x30: p11.DeviceError,
    0x32: p11.DeviceRemoved,
    0x21: p11.DataLenRange,
    0x20: p11.DataInvalid,
    0x60: p11.KeyHandleInvalid,
    0x70: p11.MechanismInvalid,
    0x71: p11.MechanismParamInvalid,
    0x82: p11.ObjectHandleInvalid,
    0xB0: p11.SessionClosed,
    0xB3: p11.SessionHandleInvalid,
    0xE0: p11.TokenNotPresent,
    0x101: p11.UserNotLoggedIn,
}

_CFunc = ctypes.CFUNCTYPE
_ULONG = ctypes.c_ulong
_C_EncryptInit = _CFunc(_ULONG, _ULONG, ctypes.c_void_p, _ULONG)
_C_Encrypt = _CFunc(_ULONG, _ULONG, ctypes.c_char_p, _ULONG, ctypes.c_void_p, ctypes.c_void_p)


class _FunctionList(ctypes.Structure):
    # CK_FUNCTION_LIST up to C_Encrypt (entries 0-30); only the last two are called.
    _fields_ = (
        ("version", ctypes.c_ubyte * 2),
        ("_before", ctypes.c_void_p * 29),  # C_Initialize ... C_FindObjectsFinal
        ("C_EncryptInit", _C_EncryptInit),
        ("C_Encrypt", _C_Encrypt),
    )


class _Mechanism(ctypes.Structure):
    _fields_ = (("mechanism", _ULONG), ("parameter", ctypes.c_void_p), ("length", _ULONG))


class _GcmParams(ctypes.Structure):
    # CK_GCM_PARAMS as PKCS#11 2.40/3.0 define it (with ulIvBits).
    _fields_ = (
        ("iv", ctypes.c_char_p),
        ("iv_len", _ULONG),
        ("iv_bits", _ULONG),
        ("aad", ctypes.c_char_p),
        ("aad_len", _ULONG),
        ("tag_bits", _ULONG),
    )


def _check(rv: int) -> None:
    if rv:
        raise _CKR.get(rv, PKCS11Error)(f"CKR {rv:#x}")


class Quirks:
    """What this token does differently, learnt as it is used."""

    def __init__(self, module_path: str) -> None:
        dll = ctypes.CDLL(module_path)  # the mapping python-pkcs11 already uses
        functions = ctypes.POINTER(_FunctionList)()
        rv = dll.C_GetFunctionList(ctypes.byref(functions))
        if rv:
            raise KMSInternalException(f"C_GetFunctionList failed (rv={rv:#x})")
        self._dll = dll
        self._functions = functions.contents
        # None: not known yet. True: the size query omits the tag / the token sets the IV.
        self.gcm_short_size_query: bool | None = None
        self.gcm_token_iv: bool | None = None
        self._curves: dict[str, bool] = {}
        self._reports_local: bool | None = None
        self._lock = threading.Lock()

    # -- AES-GCM encrypt ------------------------------------------------------------

    def gcm_encrypt(
        self, pooled: PooledSession, key: Any, iv: bytes, aad: bytes, plaintext: bytes
    ) -> tuple[bytes, bytes] | None:
        """(iv, ct||tag) through a direct call, or None when python-pkcs11 can do it."""
        if self.gcm_short_size_query is False and self.gcm_token_iv is False:
            return None
        iv_buffer = ctypes.create_string_buffer(iv, len(iv))  # writable: the token may set it
        params = _GcmParams(
            ctypes.cast(iv_buffer, ctypes.c_char_p), len(iv), len(iv) * 8, aad or None, len(aad),
            GCM_TAG_BYTES * 8,
        )  # fmt: skip
        mechanism = _Mechanism(
            Mechanism.AES_GCM, ctypes.cast(ctypes.byref(params), ctypes.c_void_p),
            ctypes.sizeof(params),
        )  # fmt: skip
        session = pooled.session.handle
        _check(self._functions.C_EncryptInit(session, ctypes.byref(mechanism), key.handle))
        needed = len(plaintext) + GCM_TAG_BYTES
        size = _ULONG(0)
        if self.gcm_short_size_query is None:
            # A size query leaves the operation active; the real call below ends it.
            _check(self._functions.C_Encrypt(session, plaintext, len(plaintext), None,
                                             ctypes.byref(size)))  # fmt: skip
            self.gcm_short_size_query = size.value < needed
        out = ctypes.create_string_buffer(needed)
        size.value = needed
        _check(self._functions.C_Encrypt(session, plaintext, len(plaintext), out,
                                         ctypes.byref(size)))  # fmt: skip
        used_iv = iv_buffer.raw
        if self.gcm_token_iv is None:
            self.gcm_token_iv = used_iv != iv
        return used_iv, out.raw[: size.value]

    # -- verify: HMAC and signatures ------------------------------------------------

    @staticmethod
    def hmac_verify(
        pooled: PooledSession, ref: MaterialRef, hash_name: str, message: bytes, mac: bytes
    ) -> bool:
        # A MAC of the wrong length never matches; NSS would accept extra bytes.
        if len(mac) != MAC_BYTES[hash_name]:
            return False
        return _verified(
            lambda: asymmetric.hmac_verify(pooled, ref, hash_name, message, mac),
            lambda: asymmetric.hmac(pooled, ref, hash_name, message),
            mac,
        )

    @staticmethod
    def signature_verify(
        pooled: PooledSession, ref: MaterialRef, scheme: str, hash_name: str, data: bytes,
        signature: bytes,
    ) -> bool:  # fmt: skip
        # PKCS#1 v1.5 is deterministic; randomised signatures leave nothing to compare with.
        def sign() -> bytes:
            return asymmetric.sign(pooled, ref, scheme, hash_name, data)

        return _verified(
            lambda: asymmetric.verify(pooled, ref, scheme, hash_name, data, signature),
            sign if scheme == "pkcs1" else None,
            signature,
        )

    # -- curves ---------------------------------------------------------------------

    def require_curve(self, pooled: PooledSession, kind: EcPair) -> None:
        oid = kind.curve_oid
        with self._lock:
            known = self._curves.get(oid)
        if known is None:
            known = self._probe_curve(pooled, oid)
            with self._lock:
                self._curves[oid] = known
        if not known:
            raise UnsupportedOperationException(
                f"The token does not support the mechanism EC_KEY_PAIR_GEN on the curve "
                f"{CURVE_NAMES.get(oid, oid)}."
            )

    @staticmethod
    def _probe_curve(pooled: PooledSession, oid: str) -> bool:
        try:
            public, private = asymmetric.generate(pooled, None, EcPair(oid, sign=True,
                                                                       derive=False))  # fmt: skip
        except TRANSIENT:
            raise
        except PKCS11Error:  # CKR_DOMAIN_PARAMS_INVALID, CKR_CURVE_NOT_SUPPORTED, ...
            return False
        public.destroy()
        private.destroy()
        return True

    # -- CKA_LOCAL ------------------------------------------------------------------

    def reports_local(self, pooled: PooledSession) -> bool:
        """Whether a key the token generates carries CKA_LOCAL=TRUE (probed once)."""
        if self._reports_local is None:
            key = pooled.session.generate_key(KeyType.AES, 128, store=False)
            try:
                self._reports_local = bool(key[Attribute.LOCAL])
            finally:
                key.destroy()
        return self._reports_local


def _verified(
    verify: Callable[[], bool], recompute: Callable[[], bytes] | None, presented: bytes
) -> bool:
    """The token's verdict on a MAC or signature. A mismatch code is False; any other
    (non-transient) code stands only if the token's own output for the same input
    (`recompute`; None where it is not deterministic) equals what was presented: else it
    was a stale, unrelated code reported for a mismatch (NSS), and the answer is False."""
    try:
        return verify()
    except (p11.SignatureInvalid, p11.SignatureLenRange):
        return False
    except TRANSIENT:
        raise
    except PKCS11Error:
        if recompute is None or hmac.compare_digest(recompute(), presented):
            raise
        return False
