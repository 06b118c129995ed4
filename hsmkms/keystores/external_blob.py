"""The ciphertext blob of a KMS key in an external key store (double encryption).

    format 0xA2 (1) | key UUID (16) | key-material version (u32 be)
    | outer IV (12) | outer tag (16) | metadata length (1) | ciphertextMetadata (0-20)
    | outer ciphertext

The inner layer is AES-GCM under the key's own material in the main token, with
header || canonical encryption context as additional data; its IV || ciphertext ||
tag is the plaintext the XKS proxy encrypts (the outer layer) with
header || SHA-256(canonical encryption context) as additionalAuthenticatedData.
The outer fields are what the proxy returned and needs back to decrypt. Format
0xA1 (hsmkms/keys/blob.py) stays the single-layer blob of every other key; both are read
through the one decoder, hsmkms/keys/blobs.py, where this format registers itself at
import (the keystores package imports this module, so every deployment knows it).
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

from hsmkms.errors import InvalidCiphertextException
from hsmkms.keys import blobs
from hsmkms.xks_spec import IV_BYTES, MAX_METADATA_BYTES, TAG_BYTES, XksCiphertext

FORMAT_XKS_DOUBLE_V1 = 0xA2
_HEADER = struct.Struct(">B16sI")
INNER_OVERHEAD = IV_BYTES + TAG_BYTES  # the inner layer's IV and tag
MIN_LENGTH = _HEADER.size + IV_BYTES + TAG_BYTES + 1 + INNER_OVERHEAD


class XksBlob(NamedTuple):
    header: bytes
    key_uuid: bytes
    version: int
    outer: XksCiphertext


def header(key_uuid: bytes, version: int) -> bytes:
    return _HEADER.pack(FORMAT_XKS_DOUBLE_V1, key_uuid, version)


def outer_aad(header_bytes: bytes, canonical_context: bytes) -> bytes:
    """What the proxy authenticates: the header and a digest of the context (the
    context itself may exceed the proxy's 8 KiB AAD limit)."""
    return header_bytes + hashlib.sha256(canonical_context).digest()


def encode(header_bytes: bytes, outer: XksCiphertext) -> bytes:
    return (
        header_bytes
        + outer.iv
        + outer.tag
        + bytes([len(outer.metadata)])
        + outer.metadata
        + outer.ciphertext
    )


def decode(data: bytes) -> XksBlob:
    if len(data) < MIN_LENGTH or data[0] != FORMAT_XKS_DOUBLE_V1:
        raise InvalidCiphertextException()
    _, key_uuid, version = _HEADER.unpack_from(data)
    at = _HEADER.size
    iv, tag = data[at : at + IV_BYTES], data[at + IV_BYTES : at + IV_BYTES + TAG_BYTES]
    at += IV_BYTES + TAG_BYTES
    size = data[at]
    at += 1
    if size > MAX_METADATA_BYTES or len(data) - at - size < INNER_OVERHEAD:
        raise InvalidCiphertextException()
    metadata, ciphertext = data[at : at + size], data[at + size :]
    return XksBlob(
        data[: _HEADER.size], key_uuid, version, XksCiphertext(ciphertext, iv, tag, metadata)
    )


blobs.register(
    blobs.BlobFormat(
        FORMAT_XKS_DOUBLE_V1,
        "double encryption, the outer layer by an external key store's proxy",
        decode,
    )
)
