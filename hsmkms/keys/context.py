"""Encryption context: validation and the canonical bytes bound as AAD."""

from __future__ import annotations

import struct
from collections.abc import Mapping

from hsmkms.errors import ValidationException

EncryptionContext = Mapping[str, str]


def validate(context: object) -> dict[str, str]:
    if context is None:
        return {}
    if not isinstance(context, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in context.items()
    ):
        raise ValidationException("EncryptionContext must map strings to strings.")
    return dict(context)


def canonical(context: EncryptionContext) -> bytes:
    """Order-independent, unambiguous: sorted pairs, each part length-prefixed."""
    if not context:
        return b""
    parts = [struct.pack(">H", len(context))]
    for key, value in sorted((k.encode(), v.encode()) for k, v in context.items()):
        parts.append(struct.pack(">I", len(key)) + key + struct.pack(">I", len(value)) + value)
    return b"".join(parts)
