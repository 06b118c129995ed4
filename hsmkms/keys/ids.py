"""KeyId forms (key id, key ARN, alias name, alias ARN) and alias-name rules."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hsmkms.errors import (
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
    validation_error,
)

KEY_ID = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})\Z"
)
# The ARNs hsmkms gives its keys and aliases (partition `aws`). `\Z`, not `$`, in every
# pattern here: `$` also matches before a final newline, and "alias/x\n" was an alias
# that listed as alias/x.
ARN = re.compile(r"^arn:aws:kms:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<resource>.+)\Z")
ALIAS_NAME = re.compile(r"^alias/[a-zA-Z0-9/_-]+\Z")
ALIAS_WIRE_PATTERN = re.compile(r"^[a-zA-Z0-9:/_-]+\Z")  # botocore's AliasNameType
RESERVED_ALIAS_PREFIX = "alias/aws/"
MAX_KEY_ID_LENGTH = 2048
MAX_ALIAS_LENGTH = 256


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A parsed KeyId: either a key id or an alias name, maybe with ARN parts."""

    key_id: str | None
    alias: str | None
    region: str | None = None
    account: str | None = None


def parse_key_ref(value: str) -> KeyRef:
    if not isinstance(value, str) or not value:
        raise validation_error("keyId", value, "Member must have length greater than or equal to 1")
    if len(value) > MAX_KEY_ID_LENGTH:
        raise validation_error(
            "keyId", value, f"Member must have length less than or equal to {MAX_KEY_ID_LENGTH}"
        )
    if value.startswith("alias/"):
        return KeyRef(None, value)
    if KEY_ID.match(value):
        return KeyRef(value, None)
    arn = ARN.match(value)
    if arn:
        resource = arn["resource"]
        if resource.startswith("key/") and KEY_ID.match(resource[4:]):
            return KeyRef(resource[4:], None, arn["region"], arn["account"])
        if resource.startswith("alias/"):
            return KeyRef(None, resource, arn["region"], arn["account"])
    raise NotFoundException(f"Invalid keyId '{value}'")


ALIAS_GUIDE = "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"


def check_alias_name(name: str, *, creating: bool) -> None:
    """KMS's alias-name rules, worded as KMS words them; `creating` also refuses the
    alias/aws/ prefix, reserved for AWS managed keys."""
    if not isinstance(name, str) or not name:
        raise validation_error(
            "aliasName", name, "Member must have length greater than or equal to 1"
        )
    if len(name) > MAX_ALIAS_LENGTH:
        raise validation_error(
            "aliasName", name, f"Member must have length less than or equal to {MAX_ALIAS_LENGTH}"
        )
    if not ALIAS_WIRE_PATTERN.match(name):
        raise validation_error(
            "aliasName", name, "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
        )
    if not name.startswith("alias/"):
        raise ValidationException(
            f'Alias must start with the prefix "alias/". Please see {ALIAS_GUIDE}'
        )
    if not ALIAS_NAME.match(name):
        raise ValidationException(f"{name} contains invalid characters for an alias")
    if creating and name.startswith(RESERVED_ALIAS_PREFIX):
        raise NotAuthorizedException(
            f"{name}: the alias/aws/ prefix is reserved for AWS managed keys."
        )
