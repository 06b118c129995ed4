"""The envelope file format: any size, and every kind of damage detected."""

from __future__ import annotations

import io
import os
import struct

import pytest

from hsmkms.errors import InvalidCiphertextException
from hsmkms.files import envelope
from hsmkms.library import KeyManager

CTX = {"file": "f"}


def seal(km: KeyManager, key_id: str, data: bytes) -> bytes:
    out = io.BytesIO()
    envelope.encrypt_stream(km, key_id, CTX, io.BytesIO(data), out)
    return out.getvalue()


def unseal(km: KeyManager, data: bytes, ctx: dict[str, str] = CTX) -> bytes:
    out = io.BytesIO()
    envelope.decrypt_stream(km, ctx, io.BytesIO(data), out)
    return out.getvalue()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(envelope, "CHUNK_SIZE", 64)
    return 64


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 1000])
def test_round_trip_at_chunk_edges(
    km: KeyManager, key_id: str, small_chunks: int, size: int
) -> None:
    data = os.urandom(size)
    assert unseal(km, seal(km, key_id, data)) == data


def chunks(sealed: bytes) -> tuple[bytes, list[bytes]]:
    """Split a sealed file into its header and its raw chunks."""
    (wrapped_len,) = struct.unpack_from(">H", sealed, 8)
    position = 8 + 2 + wrapped_len + 4
    header, parts = sealed[:position], []
    while position < len(sealed):
        (length,) = struct.unpack_from(">I", sealed, position + 1)
        parts.append(sealed[position : position + 5 + length])
        position += 5 + length
    return header, parts


def test_reordered_dropped_or_cut_chunks_fail(
    km: KeyManager, key_id: str, small_chunks: int
) -> None:
    sealed = seal(km, key_id, os.urandom(64 * 3 + 10))
    header, parts = chunks(sealed)
    assert len(parts) == 4
    damaged = [
        header + parts[1] + parts[0] + parts[2] + parts[3],  # reordered
        header + parts[0] + parts[2] + parts[3],  # one dropped
        header + b"".join(parts[:3]),  # final chunk cut off
        sealed + parts[3],  # a chunk appended after the final one
        sealed[:-1],  # truncated mid-chunk
        b"NOTMAGIC" + sealed[8:],
    ]
    for bad in damaged:
        with pytest.raises(InvalidCiphertextException):
            unseal(km, bad)


def test_final_flag_cannot_be_forged(km: KeyManager, key_id: str, small_chunks: int) -> None:
    sealed = seal(km, key_id, os.urandom(64 * 2 + 1))
    header, parts = chunks(sealed)
    forged_final = bytes([1]) + parts[0][1:]
    with pytest.raises(InvalidCiphertextException):
        unseal(km, header + forged_final)


def test_chunks_cannot_move_between_files(km: KeyManager, key_id: str, small_chunks: int) -> None:
    first = chunks(seal(km, key_id, os.urandom(100)))
    second = chunks(seal(km, key_id, os.urandom(100)))
    with pytest.raises(InvalidCiphertextException):
        unseal(km, first[0] + second[1][0] + first[1][1])


def test_wrong_context_fails(km: KeyManager, key_id: str) -> None:
    with pytest.raises(InvalidCiphertextException):
        unseal(km, seal(km, key_id, b"data"), {"file": "g"})
