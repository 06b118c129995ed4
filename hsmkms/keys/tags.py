"""Resource tags: KMS's rules and limits, refused with AWS's (short) texts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hsmkms.errors import KMSError

MAX_TAGS = 50
RESERVED_PREFIX = "aws:"


class TagException(KMSError):
    code = "TagException"
    status = 400


def parse(tags: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    """Request `Tags` ([{TagKey, TagValue}]) -> a dict, rejecting what KMS rejects."""
    result: dict[str, str] = {}
    for tag in tags or ():
        key, value = tag.get("TagKey"), tag.get("TagValue")
        if not isinstance(key, str) or not isinstance(value, str):
            raise TagException("Each tag needs a TagKey and a TagValue.")
        if key.lower().startswith(RESERVED_PREFIX):
            raise TagException(f"Tags beginning with {RESERVED_PREFIX} are reserved")
        if key in result:
            raise TagException("Duplicate tag keys")
        result[key] = value
    return result


def merged(current: Mapping[str, str], added: Mapping[str, str]) -> dict[str, str]:
    tags = {**current, **added}
    if len(tags) > MAX_TAGS:
        raise TagException("Too many tags")  # AWS's text; the limit is MAX_TAGS
    return tags


def as_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"TagKey": k, "TagValue": v} for k, v in sorted(tags.items())]
