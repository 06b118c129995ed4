"""THE ciphertext blob decoder: every format hsmkms writes, by its first byte.

Authorization (which key does this ciphertext name?), decryption and DryRun all read
blobs through `decode`, so a format is known to all of them or to none: a blob the
registry does not know, or one too short for its format, is InvalidCiphertextException
for everyone, before anything else looks at it. A new format is one more entry in
FORMATS (and its tests enumerate FORMATS).

RSA ciphertexts are not blobs: they are the token's raw RSAES-OAEP output, and the
request names their key (KeyId is required for an asymmetric key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hsmkms.errors import InvalidCiphertextException
from hsmkms.keys import blob
from hsmkms.keystores import external_blob as xks_blob

ParsedBlob = blob.Blob | xks_blob.XksBlob  # each names its key: key_uuid, version, header


@dataclass(frozen=True)
class BlobFormat:
    marker: int  # the first byte
    name: str
    decode: Callable[[bytes], ParsedBlob]  # InvalidCiphertextException when malformed


FORMATS: Mapping[int, BlobFormat] = {
    f.marker: f
    for f in (
        BlobFormat(blob.FORMAT_AES_GCM_V1, "AES-GCM in the key's token", blob.decode),
        BlobFormat(
            xks_blob.FORMAT_XKS_DOUBLE_V1,
            "double encryption, the outer layer by an external key store's proxy",
            xks_blob.decode,
        ),
    )
}


def decode(data: bytes) -> ParsedBlob:
    """The blob's format and the key it names; InvalidCiphertextException for a format
    not in FORMATS or a blob its format cannot read."""
    found = FORMATS.get(data[0]) if data else None
    if found is None:
        raise InvalidCiphertextException()
    return found.decode(data)
