"""Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases."""

from __future__ import annotations

from dataclasses import replace

from hsmkms.errors import (
    AlreadyExistsException,
    InvalidMarkerException,
    NotFoundException,
    ValidationException,
)
from hsmkms.keys import ids, lifecycle
from hsmkms.keys.lifecycle import Use
from hsmkms.operations.checks import (
    check_limit,
)
from hsmkms.operations.context import OperationContext, Response
from hsmkms.store.model import (
    Alias,
    KeyRecord,
)


def _alias_target(ctx: OperationContext, target_key_id: str) -> KeyRecord:
    if ids.parse_key_ref(target_key_id).alias is not None:
        raise ValidationException("TargetKeyId must be a key ID or key ARN, not an alias.")
    record = ctx.resolve(target_key_id)
    lifecycle.require(record, Use.MANAGE)
    return record


def create_alias(ctx: OperationContext, *, alias_name: str, target_key_id: str) -> Response:
    ids.check_alias_name(alias_name, creating=True)
    record = _alias_target(ctx, target_key_id)
    now = ctx.clock()
    with ctx.store.transaction() as tx:
        if tx.get_alias(ctx.region, alias_name) is not None:
            raise AlreadyExistsException(
                f"An alias with the name {ctx.alias_arn(alias_name)} already exists"
            )
        tx.put_alias(Alias(alias_name, record.key_id, ctx.region, ctx.account_id, now, now))
    ctx.changed()
    return {}


def update_alias(ctx: OperationContext, *, alias_name: str, target_key_id: str) -> Response:
    ids.check_alias_name(alias_name, creating=True)
    record = _alias_target(ctx, target_key_id)
    with ctx.store.transaction() as tx:
        alias = tx.get_alias(ctx.region, alias_name)
        if alias is None:
            raise NotFoundException(f"Alias {ctx.alias_arn(alias_name)} is not found.")
        current = tx.get_key(alias.key_id, alias.region)
        if current is not None and (
            current.key_spec is not record.key_spec or current.key_usage is not record.key_usage
        ):
            raise ValidationException(
                "The current and new KMS key must be of the same type and key usage."
            )
        tx.put_alias(replace(alias, key_id=record.key_id, last_updated_date=ctx.clock()))
    ctx.changed()
    return {}


def delete_alias(ctx: OperationContext, *, alias_name: str) -> Response:
    ids.check_alias_name(alias_name, creating=False)
    with ctx.store.transaction() as tx:
        if tx.get_alias(ctx.region, alias_name) is None:
            raise NotFoundException(f"Alias {ctx.alias_arn(alias_name)} is not found.")
        tx.delete_alias(ctx.region, alias_name)
    ctx.changed()
    return {}


def list_aliases(
    ctx: OperationContext,
    *,
    key_id: str | None = None,
    limit: int | None = None,
    marker: str | None = None,
) -> Response:
    size = check_limit(limit, 100, 50)
    if marker is not None and (not isinstance(marker, str) or not marker.startswith("alias/")):
        raise InvalidMarkerException("The marker is not valid.")
    target = None if key_id is None else ctx.resolve(key_id).key_id
    page = ctx.store.list_aliases(ctx.region, target, marker, size + 1)
    response: Response = {
        "Aliases": [
            {
                "AliasName": a.name,
                "AliasArn": a.arn,
                "TargetKeyId": a.key_id,
                "CreationDate": a.creation_date,
                "LastUpdatedDate": a.last_updated_date,
            }
            for a in page[:size]
        ],
        "Truncated": len(page) > size,
    }
    if len(page) > size:
        response["NextMarker"] = page[size - 1].name
    return response
