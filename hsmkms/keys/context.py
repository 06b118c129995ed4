"""Encryption context: validation and the canonical bytes bound as AAD."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from functools import lru_cache

from hsmkms.errors import ValidationException

EncryptionContext = Mapping[str, str]

# The most one encryption context may hold: its keys and values, UTF-8. AWS's KMS pages
# give no figure; 8 KiB is the bound the XKS proxy API sets on the additional data AWS KMS
# sends, and it caps what a caller can make policy evaluation read (see README).
MAX_CONTEXT_BYTES = 8192
SIZE_CONSTRAINT = (
    f"Member must have keys and values of at most {MAX_CONTEXT_BYTES} bytes in total (UTF-8)"
)
# Grant constraints, as CreateGrant's Constraints member documents them: "Each constraint
# value can include up to 8 encryption context pairs. The encryption context value in
# each constraint cannot exceed 384 characters."
MAX_CONSTRAINT_PAIRS = 8
MAX_CONSTRAINT_VALUE = 384


def size(context: Mapping[str, str]) -> int:
    """The bytes of an encryption context's keys and values, as MAX_CONTEXT_BYTES counts."""
    return sum(len(key.encode()) + len(value.encode()) for key, value in context.items())


def _invalid() -> ValidationException:
    return ValidationException("EncryptionContext must map strings to strings.")


# Contexts come from requests: only small ones are cached, so the cache stays small.
CACHED_CONTEXT_CHARS = 1024


def _encode(items: tuple[tuple[str, str], ...]) -> bytes:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in items):
        raise _invalid()
    if size(dict(items)) > MAX_CONTEXT_BYTES:
        raise ValidationException(f"EncryptionContext: {SIZE_CONSTRAINT}.")
    parts = [struct.pack(">H", len(items))]
    for key, value in sorted((k.encode(), v.encode()) for k, v in items):
        parts.append(struct.pack(">I", len(key)) + key + struct.pack(">I", len(value)) + value)
    return b"".join(parts)


_canonical = lru_cache(maxsize=4096)(_encode)


def _chars(items: tuple[tuple[object, object], ...]) -> int:
    return sum(len(part) for item in items for part in item if isinstance(part, str))


def canonical(context: object) -> bytes:
    """Validate a context and encode it order-independently and unambiguously:
    sorted pairs, each part length-prefixed. Cached: services reuse few contexts."""
    if not context:
        if context is None or isinstance(context, Mapping):
            return b""
        raise _invalid()
    if not isinstance(context, Mapping):
        raise _invalid()
    items = tuple(context.items())
    if _chars(items) > CACHED_CONTEXT_CHARS:
        return _encode(items)
    try:
        return _canonical(items)
    except TypeError:  # an unhashable value: certainly not a string
        raise _invalid() from None
