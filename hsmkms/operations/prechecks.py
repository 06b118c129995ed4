"""Checks of a request that need no key, no database and no token. They run before
authorization, on the HTTP API and in the library alike: an invalid request is
refused as invalid (ValidationException) rather than first looked up as a key
(NotFoundException) or authorized (AccessDeniedException).

A check takes the operation's arguments as keywords in snake_case, as the handler does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hsmkms.errors import NotFoundException, ValidationException
from hsmkms.keys import ids

Check = Callable[[Mapping[str, Any]], None]


def key_id_or_arn(member: str = "key_id") -> Check:
    """Operations whose API Reference says "Specify the key ID or key ARN of the KMS
    key" (PutKeyPolicy, EnableKeyRotation, TagResource, ...) refuse aliases, e.g.
    https://docs.aws.amazon.com/kms/latest/APIReference/API_EnableKeyRotation.html"""

    def check(arguments: Mapping[str, Any]) -> None:
        value = arguments.get(member)
        if value is not None and ids.parse_key_ref(value).alias is not None:
            raise NotFoundException(f"Invalid keyId '{value}': use the key's ID or ARN.")

    return check


def _target(arguments: Mapping[str, Any]) -> None:
    value = arguments.get("target_key_id")
    if value is not None and ids.parse_key_ref(value).alias is not None:
        raise ValidationException("TargetKeyId must be a key ID or key ARN, not an alias.")


def alias_name(*, creating: bool) -> Check:
    def check(arguments: Mapping[str, Any]) -> None:
        ids.check_alias_name(arguments.get("alias_name"), creating=creating)  # type: ignore[arg-type]
        if creating:
            _target(arguments)

    return check


KEY_ID_OR_ARN = key_id_or_arn()
