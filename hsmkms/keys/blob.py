"""The symmetric ciphertext blob: versioned, names its key, opaque to clients.

    format (1) | key UUID (16) | key-material version (u32 be) | IV (12) | ciphertext | tag (16)

The header (format, key, version) and the canonical encryption context are
bound as GCM additional data, so any change to either fails authentication.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from hsmkms.errors import InvalidCiphertextException

FORMAT_AES_GCM_V1 = 0xA1
_HEADER = struct.Struct(">B16sI")
IV_BYTES = 12
TAG_BYTES = 16
MIN_LENGTH = _HEADER.size + IV_BYTES + TAG_BYTES


class Blob(NamedTuple):
    header: bytes  # format | key UUID | version: the bytes bound as AAD
    key_uuid: bytes
    version: int
    iv: bytes
    body: bytes  # ciphertext || tag


def header(key_uuid: bytes, version: int) -> bytes:
    return _HEADER.pack(FORMAT_AES_GCM_V1, key_uuid, version)


def decode(data: bytes) -> Blob:
    if len(data) < MIN_LENGTH or data[0] != FORMAT_AES_GCM_V1:
        raise InvalidCiphertextException()
    _, key_uuid, version = _HEADER.unpack_from(data)
    iv_end = _HEADER.size + IV_BYTES
    return Blob(data[: _HEADER.size], key_uuid, version, data[_HEADER.size : iv_end], data[iv_end:])
