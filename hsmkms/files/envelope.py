"""Envelope encryption of files of any size (`hsmkms encrypt` / `hsmkms decrypt`).

A fresh AES-256 data key comes from GenerateDataKey; the file is encrypted with
it in chunks (AES-GCM, `cryptography`) and the data key's KMS ciphertext blob is
stored in the header. File format, all integers big-endian:

    magic "HSMKMSE1" | u16 n | wrapped data key (n bytes) | u32 chunk size
    then chunks:  u8 final | u32 m | m bytes of ciphertext || 16-byte tag

Chunk i uses nonce = 4 zero bytes || u64 i (each data key encrypts one file) and
additional data = SHA-256(header) || u64 i || final, so chunks cannot be
reordered, dropped, moved between files or cut off after the last one. The
encryption context is bound through the data key's KMS blob.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsmkms.errors import InvalidCiphertextException
from hsmkms.library import KeyManager

MAGIC = b"HSMKMSE1"
CHUNK_SIZE = 1 << 20
TAG_BYTES = 16
_CHUNK_HEAD = struct.Struct(">BI")


def _damaged() -> InvalidCiphertextException:
    return InvalidCiphertextException("The file is damaged or was not encrypted by hsmkms.")


def _nonce(index: int) -> bytes:
    return b"\0\0\0\0" + struct.pack(">Q", index)


def _aad(header_digest: bytes, index: int, final: bool) -> bytes:
    return header_digest + struct.pack(">QB", index, final)


def _read_exact(source: BinaryIO, count: int) -> bytes:
    data = source.read(count)
    if len(data) != count:
        raise _damaged()
    return data


def encrypt_stream(
    km: KeyManager, key_id: str, context: dict[str, str], source: BinaryIO, target: BinaryIO
) -> None:
    data_key = km.generate_data_key(key_id=key_id, key_spec="AES_256", encryption_context=context)
    wrapped: bytes = data_key["CiphertextBlob"]
    header = MAGIC + struct.pack(">H", len(wrapped)) + wrapped + struct.pack(">I", CHUNK_SIZE)
    target.write(header)
    digest = hashlib.sha256(header).digest()
    aead = AESGCM(data_key["Plaintext"])
    index = 0
    chunk = source.read(CHUNK_SIZE)
    while True:
        following = source.read(CHUNK_SIZE) if len(chunk) == CHUNK_SIZE else b""
        final = not following
        sealed = aead.encrypt(_nonce(index), chunk, _aad(digest, index, final))
        target.write(_CHUNK_HEAD.pack(final, len(sealed)) + sealed)
        if final:
            return
        chunk, index = following, index + 1


def decrypt_stream(
    km: KeyManager, context: dict[str, str], source: BinaryIO, target: BinaryIO
) -> None:
    if source.read(len(MAGIC)) != MAGIC:
        raise _damaged()
    (wrapped_len,) = struct.unpack(">H", _read_exact(source, 2))
    wrapped = _read_exact(source, wrapped_len)
    chunk_field = _read_exact(source, 4)
    (chunk_size,) = struct.unpack(">I", chunk_field)
    header = MAGIC + struct.pack(">H", wrapped_len) + wrapped + chunk_field
    digest = hashlib.sha256(header).digest()
    data_key = km.decrypt(ciphertext_blob=wrapped, encryption_context=context)
    aead = AESGCM(data_key["Plaintext"])
    index = 0
    while True:
        final, length = _CHUNK_HEAD.unpack(_read_exact(source, _CHUNK_HEAD.size))
        if final not in (0, 1) or length > chunk_size + TAG_BYTES:
            raise _damaged()
        try:
            plain = aead.decrypt(
                _nonce(index), _read_exact(source, length), _aad(digest, index, bool(final))
            )
        except InvalidTag:
            raise _damaged() from None
        target.write(plain)
        if final:
            if source.read(1):
                raise _damaged()  # bytes after the final chunk
            return
        index += 1


def _atomic_write(target: Path) -> tuple[Path, BinaryIO]:
    """The partial file the output is renamed from: the owner's only (a decrypted file
    is plaintext), whatever the umask."""
    partial = target.with_name(f".{target.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a partial file left by an earlier run keeps its old mode
    return partial, os.fdopen(fd, "wb")


def encrypt_file(
    km: KeyManager, key_id: str, context: dict[str, str], source: Path, target: Path
) -> None:
    _transform(source, target, lambda i, o: encrypt_stream(km, key_id, context, i, o))


def decrypt_file(km: KeyManager, context: dict[str, str], source: Path, target: Path) -> None:
    """The output file appears only once every chunk has authenticated."""
    _transform(source, target, lambda i, o: decrypt_stream(km, context, i, o))


def _transform(source: Path, target: Path, work: Callable[[BinaryIO, BinaryIO], None]) -> None:
    partial, out = _atomic_write(target)
    try:
        with source.open("rb") as src, out:
            work(src, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
