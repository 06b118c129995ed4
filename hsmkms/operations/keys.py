"""KMS keys: CreateKey, DescribeKey, ListKeys, UpdateKeyDescription, EnableKey,
DisableKey, ScheduleKeyDeletion, CancelKeyDeletion.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from hsmkms.errors import (
    InvalidMarkerException,
    UnsupportedOperationException,
    ValidationException,
    validation_error,
)
from hsmkms.keys import ids, lifecycle
from hsmkms.keys import tags as keytags
from hsmkms.keys.lifecycle import Use
from hsmkms.keys.metadata import CLUSTER_ID, key_metadata
from hsmkms.keys.specs import (
    SPECS,
)
from hsmkms.keystores.external_keys import external_key_extra
from hsmkms.keystores.records import require_connected
from hsmkms.operations.also import require_also
from hsmkms.operations.checks import (
    check_enum,
    check_limit,
    check_range,
)
from hsmkms.operations.context import OperationContext, Response
from hsmkms.operations.imports import create_pending_import
from hsmkms.operations.policies import check_lockout
from hsmkms.operations.replication import has_replicas
from hsmkms.policy.model import (
    default_key_policy,
)
from hsmkms.store.model import (
    KeyRecord,
    KeySpec,
    KeyState,
    KeyUsage,
    Origin,
)

MAX_DESCRIPTION = 8192
DELETION_WINDOW = (7, 30)
DEFAULT_DELETION_DAYS = 30


def _marker_key(marker: str | None) -> str | None:
    if marker is None:
        return None
    if not isinstance(marker, str) or not ids.KEY_ID.match(marker):
        raise InvalidMarkerException("The marker is not valid.")
    return marker


def create_key(
    ctx: OperationContext,
    *,
    description: str = "",
    key_usage: str | None = None,
    key_spec: str | None = None,
    customer_master_key_spec: str | None = None,
    origin: str = Origin.AWS_KMS.value,
    multi_region: bool = False,
    tags: list[dict[str, str]] | None = None,
    policy: str | None = None,
    bypass_policy_lockout_safety_check: bool = False,
    custom_key_store_id: str | None = None,
    xks_key_id: str | None = None,
) -> Response:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise validation_error(
            "description",
            "…",
            f"Member must have length less than or equal to {MAX_DESCRIPTION}",
        )
    if key_usage is not None:
        check_enum("keyUsage", key_usage, "KeyUsageType")
    if key_spec is not None and customer_master_key_spec is not None:
        raise ValidationException(
            "You cannot specify KeySpec and CustomerMasterKeySpec in the same request."
        )
    if customer_master_key_spec is not None:
        check_enum("customerMasterKeySpec", customer_master_key_spec, "CustomerMasterKeySpec")
    spec_name = key_spec or customer_master_key_spec or KeySpec.SYMMETRIC_DEFAULT.value
    spec = KeySpec(check_enum("keySpec", spec_name, "KeySpec"))
    key_origin = Origin(check_enum("origin", origin, "OriginType"))
    allowed = SPECS[spec].usages
    # KeyUsage "is optional when you are creating a symmetric encryption KMS key;
    # otherwise, it is required" (API_CreateKey.html#KMS-CreateKey-request-KeyUsage).
    if key_usage is None and spec is not KeySpec.SYMMETRIC_DEFAULT:
        raise ValidationException(
            "You must specify a KeyUsage value for all KMS keys except for symmetric "
            "encryption keys."
        )
    usage = KeyUsage(key_usage) if key_usage is not None else KeyUsage.ENCRYPT_DECRYPT
    if usage not in allowed:
        raise ValidationException(
            f"KeyUsage {usage.value} is not compatible with KeySpec {spec.value}"
        )
    if key_origin is Origin.EXTERNAL_KEY_STORE or xks_key_id is not None:
        extra = external_key_extra(
            ctx,
            store_id=custom_key_store_id,
            origin=key_origin,
            spec=spec,
            usage=usage,
            multi_region=multi_region,
            xks_key_id=xks_key_id,
        )
    else:
        extra = _custom_key_store(ctx, custom_key_store_id, key_origin, spec, usage, multi_region)
    if key_origin not in (Origin.AWS_KMS, Origin.EXTERNAL) and custom_key_store_id is None:
        raise UnsupportedOperationException(
            f"Origin {key_origin.value} is not supported by this hsmkms release."
        )
    if not isinstance(multi_region, bool):
        raise ValidationException("MultiRegion must be a boolean.")
    key_tags = keytags.merged({}, keytags.parse(tags))
    if tags:  # "To tag a KMS key when you create it, you need kms:TagResource" (IAM)
        require_also(ctx, "kms:TagResource", None, {"Tags": tags})
    key_policy = default_key_policy(ctx.account_id) if policy is None else policy
    key_id = f"mrk-{uuid.uuid4().hex}" if multi_region else str(uuid.uuid4())
    now = ctx.clock()
    record = KeyRecord(
        key_id=key_id,
        region=ctx.region,
        account_id=ctx.account_id,
        creation_date=now,
        key_spec=spec,
        key_usage=usage,
        origin=key_origin,
        state=KeyState.ENABLED,
        current_version=1,
        description=description,
        multi_region=multi_region,
        tags=key_tags,
        policy=key_policy,
        custom_key_store_id=custom_key_store_id,
        extra=extra,
        multi_region_config=(
            {
                "MultiRegionKeyType": "PRIMARY",
                "PrimaryKey": {"Arn": ctx.key_arn(key_id), "Region": ctx.region},
                "ReplicaKeys": [],
            }
            if multi_region
            else None
        ),
    )
    check_lockout(ctx, record, key_policy, bypass_policy_lockout_safety_check)
    record = _create_material(ctx, record)
    ctx.changed()
    return {"KeyMetadata": key_metadata(record)}


def _create_material(ctx: OperationContext, record: KeyRecord) -> KeyRecord:
    """The token generates the material, or, for Origin EXTERNAL, the key waits for
    ImportKeyMaterial (PendingImport)."""
    if record.origin is Origin.EXTERNAL:
        return create_pending_import(ctx, record)
    return ctx.material.create(record)


def _custom_key_store(
    ctx: OperationContext,
    store_id: str | None,
    origin: Origin,
    spec: KeySpec,
    usage: KeyUsage,
    multi_region: bool,
) -> dict[str, Any]:
    """AWS's rules for a key in a custom key store (only symmetric encryption keys, not
    multi-Region, Origin AWS_CLOUDHSM); its extra fields."""
    if store_id is None:
        if origin is Origin.AWS_CLOUDHSM:
            raise ValidationException("Origin AWS_CLOUDHSM needs a CustomKeyStoreId.")
        return {}
    if origin is not Origin.AWS_CLOUDHSM:
        raise ValidationException(
            "A key in an AWS_CLOUDHSM custom key store needs Origin AWS_CLOUDHSM."
        )
    if spec is not KeySpec.SYMMETRIC_DEFAULT or usage is not KeyUsage.ENCRYPT_DECRYPT:
        raise UnsupportedOperationException(
            "A custom key store holds only symmetric encryption keys (SYMMETRIC_DEFAULT, "
            "ENCRYPT_DECRYPT)."
        )
    if multi_region:
        raise UnsupportedOperationException("Multi-Region keys cannot be in a custom key store.")
    store = require_connected(ctx.store, ctx.region, store_id)
    if store.cluster_id is None:  # an EXTERNAL_KEY_STORE store: Origin must say so
        raise ValidationException(f"Custom key store {store_id} needs Origin EXTERNAL_KEY_STORE.")
    return {CLUSTER_ID: store.cluster_id}


def describe_key(ctx: OperationContext, *, key_id: str) -> Response:
    return {"KeyMetadata": key_metadata(ctx.resolve(key_id))}


def list_keys(
    ctx: OperationContext, *, limit: int | None = None, marker: str | None = None
) -> Response:
    size = check_limit(limit, 1000, 100)
    page = ctx.store.list_keys(ctx.region, _marker_key(marker), size + 1)
    response: Response = {
        "Keys": [{"KeyId": k.key_id, "KeyArn": k.arn} for k in page[:size]],
        "Truncated": len(page) > size,
    }
    if len(page) > size:
        response["NextMarker"] = page[size - 1].key_id
    return response


def update_key_description(ctx: OperationContext, *, key_id: str, description: str) -> Response:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise validation_error(
            "description",
            "…",
            f"Member must have length less than or equal to {MAX_DESCRIPTION}",
        )
    record = ctx.resolve(key_id)
    lifecycle.require(record, Use.MANAGE)
    ctx.update(record, description=description)
    return {}


def enable_key(ctx: OperationContext, *, key_id: str) -> Response:
    record = ctx.resolve(key_id)
    lifecycle.require(record, Use.MANAGE)
    if record.state is KeyState.DISABLED:
        ctx.update(record, state=KeyState.ENABLED)
    elif record.state is not KeyState.ENABLED:
        lifecycle.require(record, Use.CRYPTO)  # PendingImport/Unavailable: refuse
    return {}


def disable_key(ctx: OperationContext, *, key_id: str) -> Response:
    record = ctx.resolve(key_id)
    lifecycle.require(record, Use.MANAGE)
    if record.state is KeyState.ENABLED:
        ctx.update(record, state=KeyState.DISABLED)
    elif record.state is not KeyState.DISABLED:
        lifecycle.require(record, Use.CRYPTO)
    return {}


def schedule_key_deletion(
    ctx: OperationContext, *, key_id: str, pending_window_in_days: int | None = None
) -> Response:
    days = (
        DEFAULT_DELETION_DAYS
        if pending_window_in_days is None
        else check_range("pendingWindowInDays", pending_window_in_days, *DELETION_WINDOW)
    )
    record = ctx.resolve(key_id)
    lifecycle.require(record, Use.MANAGE)
    if has_replicas(record):
        # A primary with replicas waits for them: its waiting period starts when the
        # last replica is deleted, so there is no deletion date yet.
        ctx.update(
            record,
            state=KeyState.PENDING_REPLICA_DELETION,
            deletion_date=None,
            pending_window_days=days,
        )
        return {
            "KeyId": record.arn,
            "KeyState": KeyState.PENDING_REPLICA_DELETION.value,
            "PendingWindowInDays": days,
        }
    deletion_date = ctx.clock() + timedelta(days=days)
    ctx.update(
        record,
        state=KeyState.PENDING_DELETION,
        deletion_date=deletion_date,
        pending_window_days=days,
    )
    return {
        "KeyId": record.arn,
        "DeletionDate": deletion_date,
        "KeyState": KeyState.PENDING_DELETION.value,
        "PendingWindowInDays": days,
    }


def cancel_key_deletion(ctx: OperationContext, *, key_id: str) -> Response:
    record = ctx.resolve(key_id)
    lifecycle.require(record, Use.CANCEL_DELETION)
    ctx.update(record, state=KeyState.DISABLED, deletion_date=None, pending_window_days=None)
    return {"KeyId": record.arn}
