"""Checks shared by the operations: inputs, worded as AWS words its constraint
failures, and a key's fitness for a use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hsmkms.errors import (
    InvalidKeyUsageException,
    InvalidMarkerException,
    ValidationException,
    validation_error,
)
from hsmkms.keys import lifecycle
from hsmkms.keys.lifecycle import Use
from hsmkms.keys.resolved import Resolved
from hsmkms.operations.enums import check_enum
from hsmkms.store.model import KeyRecord, KeyUsage

if TYPE_CHECKING:
    from hsmkms.operations.context import OperationContext

__all__ = ["check_bytes", "check_enum", "check_limit", "check_range", "offset_page", "usable"]


# Blob members botocore's KMS model marks sensitive: their values never appear in errors.
SENSITIVE = frozenset({"plaintext", "message"})


def check_range(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationException(f"{name} must be an integer.")
    if value < low:
        raise validation_error(
            name, value, f"Member must have value greater than or equal to {low}"
        )
    if value > high:
        raise validation_error(name, value, f"Member must have value less than or equal to {high}")
    return value


def check_bytes(name: str, value: object, high: int) -> bytes:
    if type(value) is bytes and 0 < len(value) <= high:
        return value  # the common case, checked cheaply
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ValidationException(f"{name} must be binary data.")
    data = bytes(value)
    sensitive = name in SENSITIVE
    if not data:
        raise validation_error(
            name, "", "Member must have length greater than or equal to 1", sensitive=sensitive
        )
    if len(data) > high:
        raise validation_error(
            name,
            "java.nio.HeapByteBuffer",
            f"Member must have length less than or equal to {high}",
            sensitive=sensitive,
        )
    return data


def check_limit(value: int | None, high: int, default: int) -> int:
    return default if value is None else check_range("limit", value, 1, high)


def offset_page(field: str, items: Sequence[Any], size: int, marker: object) -> dict[str, Any]:
    """One page of a list held in memory; the marker is the offset of the next page."""
    start = 0
    if marker is not None:
        if not isinstance(marker, str) or not marker.isdigit():
            raise InvalidMarkerException("The marker is not valid.")
        start = int(marker)
    page: dict[str, Any] = {field: list(items[start : start + size])}
    page["Truncated"] = start + size < len(items)
    if page["Truncated"]:
        page["NextMarker"] = str(start + size)
    return page


def usage_error(record: KeyRecord, what: str) -> InvalidKeyUsageException:
    return InvalidKeyUsageException(
        f"{record.arn} key usage is {record.key_usage.value} which is not valid for {what}."
    )


def usable(ctx: OperationContext, key_id: str, usage: KeyUsage, what: str) -> Resolved:
    """An enabled key of the given usage, for a cryptographic operation."""
    key = ctx.cached(key_id)
    lifecycle.require(key.record, Use.CRYPTO)
    if key.record.key_usage is not usage:
        raise usage_error(key.record, what)
    return key
