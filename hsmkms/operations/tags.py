"""Tags: TagResource, UntagResource, ListResourceTags."""

from __future__ import annotations

from hsmkms.errors import (
    NotFoundException,
)
from hsmkms.keys import ids, lifecycle
from hsmkms.keys import tags as keytags
from hsmkms.keys.lifecycle import Use
from hsmkms.operations.checks import (
    check_limit,
    offset_page,
)
from hsmkms.operations.context import OperationContext, Response
from hsmkms.store.model import (
    KeyRecord,
)


def _tagged_key(ctx: OperationContext, key_id: str) -> KeyRecord:
    """Tag operations name a key by its ID or ARN only, never an alias."""
    if ids.parse_key_ref(key_id).alias is not None:
        raise NotFoundException(f"Invalid keyId '{key_id}': use the key's ID or ARN.")
    return ctx.resolve(key_id)


def _taggable(ctx: OperationContext, key_id: str) -> KeyRecord:
    record = _tagged_key(ctx, key_id)
    lifecycle.require(record, Use.MANAGE)
    return record


def tag_resource(ctx: OperationContext, *, key_id: str, tags: list[dict[str, str]]) -> Response:
    added = keytags.parse(tags)
    record = _taggable(ctx, key_id)
    ctx.update(record, tags=lambda current: keytags.merged(current.tags, added))
    return {}


def untag_resource(ctx: OperationContext, *, key_id: str, tag_keys: list[str]) -> Response:
    record = _taggable(ctx, key_id)
    ctx.update(record, tags=lambda now: {k: v for k, v in now.tags.items() if k not in tag_keys})
    return {}


def list_resource_tags(
    ctx: OperationContext, *, key_id: str, limit: int | None = None, marker: str | None = None
) -> Response:
    size = check_limit(limit, 50, 50)
    tags = keytags.as_list(_tagged_key(ctx, key_id).tags)
    return offset_page("Tags", tags, size, marker)
