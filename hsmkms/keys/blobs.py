"""THE ciphertext blob decoder: every format hsmkms writes, by its first byte.

Authorization (which key does this ciphertext name?), decryption and DryRun all read
blobs through `decode`, so a format is known to all of them or to none: a blob the
registry does not know, or one too short for its format, is InvalidCiphertextException
for everyone, before anything else looks at it. A new format is one more entry in
FORMATS, registered with `register` (its tests enumerate FORMATS): 0xA1 here, 0xA2
(external key stores' double encryption) by hsmkms/keystores/external_blob.py, which
the keystores package imports, so every deployment (its context holds the custom key
stores' token registry) knows it.

RSA ciphertexts are not blobs: they are the token's raw RSAES-OAEP output, and the
request names their key (KeyId is required for an asymmetric key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from hsmkms.errors import InvalidCiphertextException
from hsmkms.keys import blob


class ParsedBlob(Protocol):
    """What every format's decoded blob names: its key, the key-material version and
    the header bytes bound as additional data."""

    @property
    def header(self) -> bytes: ...
    @property
    def key_uuid(self) -> bytes: ...
    @property
    def version(self) -> int: ...


@dataclass(frozen=True)
class BlobFormat:
    marker: int  # the first byte
    name: str
    decode: Callable[[bytes], ParsedBlob]  # InvalidCiphertextException when malformed


_FORMATS: dict[int, BlobFormat] = {}
FORMATS: Mapping[int, BlobFormat] = _FORMATS  # read-only view; `register` adds


def register(format_: BlobFormat) -> None:
    """Add a format; a marker is one format's for good (a second registration of it is
    a programming error, not an override)."""
    known = _FORMATS.get(format_.marker)
    if known is not None and known != format_:
        raise ValueError(f"blob format 0x{format_.marker:02X} is already {known.name!r}")
    _FORMATS[format_.marker] = format_


register(BlobFormat(blob.FORMAT_AES_GCM_V1, "AES-GCM in the key's token", blob.decode))


def decode(data: bytes) -> ParsedBlob:
    """The blob's format and the key it names; InvalidCiphertextException for a format
    not in FORMATS or a blob its format cannot read."""
    found = _FORMATS.get(data[0]) if data else None
    if found is None:
        raise InvalidCiphertextException()
    return found.decode(data)
