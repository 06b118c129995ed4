"""Multi-Region keys: ReplicateKey, UpdatePrimaryRegion, and what the rest of the key
lifecycle needs from them: properties the primary shares with its replicas (material,
key spec, usage, origin, rotation), deletion of replicas, and the primary's
PendingReplicaDeletion state.

A replica is a row of the same key id in another region (the store keys rows by key id
and region). Its description, policy, tags, aliases, grants and enabled state are its
own. Its material: where the two regions share a token, the replica uses the primary's
token objects (same labels); on another token, each version is wrapped under the
security domain key in the primary's token and unwrapped in the replica's
(hsmkms.token.backup), so plaintext material never leaves a token.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

from hsmkms.errors import (
    AlreadyExistsException,
    KMSInvalidStateException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
    validation_error,
)
from hsmkms.keys import lifecycle
from hsmkms.keys import tags as keytags
from hsmkms.keys.lifecycle import Use
from hsmkms.keys.metadata import key_metadata
from hsmkms.operations.also import require_also
from hsmkms.operations.context import OperationContext, Response
from hsmkms.operations.policies import check_lockout
from hsmkms.policy.model import default_key_policy
from hsmkms.store.base import Reader, Writer
from hsmkms.store.model import KeyRecord, KeyState
from hsmkms.token import MaterialRef, Token, unwrap_material, wrap_material

# Properties a primary shares with its replicas (KMS keeps them in step).
SHARED = (
    "key_spec", "key_usage", "origin", "current_version", "rotation_enabled",
    "rotation_period_days", "next_rotation_date", "on_demand_rotations",
)  # fmt: skip
REGION_NAME = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}\Z")
MAX_DESCRIPTION = 8192


# -- the family of rows of one multi-Region key ---------------------------------------


def replica_regions(record: KeyRecord) -> list[str]:
    config = record.multi_region_config or {}
    return [str(r["Region"]) for r in config.get("ReplicaKeys", [])]


def has_replicas(record: KeyRecord) -> bool:
    return record.multi_region and not record.is_replica and bool(replica_regions(record))


def _family(reader: Reader, key_id: str) -> tuple[KeyRecord, list[KeyRecord]]:
    """The primary row and its replicas' rows, as stored now."""
    primary = reader.get_key(key_id)  # without a region: the primary row
    if primary is None or primary.is_replica:
        raise NotFoundException(f"Multi-Region key {key_id} has no primary key.")
    rows = [reader.get_key(key_id, region) for region in replica_regions(primary)]
    return primary, [r for r in rows if r is not None]


def _config(primary: KeyRecord, replicas: list[KeyRecord], kind: str) -> dict[str, Any]:
    return {
        "MultiRegionKeyType": kind,
        "PrimaryKey": {"Arn": primary.arn, "Region": primary.region},
        "ReplicaKeys": [{"Arn": r.arn, "Region": r.region} for r in replicas],
    }


def _write_family(tx: Writer, primary: KeyRecord, replicas: list[KeyRecord]) -> None:
    """Every row with the configuration it must show (DescribeKey lists the primary
    and all replicas on each of them) and the primary's shared properties."""
    replicas = sorted(replicas, key=lambda r: r.region)
    tx.put_key(replace(primary, multi_region_config=_config(primary, replicas, "PRIMARY")))
    shared = {name: getattr(primary, name) for name in SHARED}
    for row in replicas:
        config = _config(primary, replicas, "REPLICA")
        tx.put_key(replace(row, multi_region_config=config, **shared))


def _changed(ctx: OperationContext, regions: list[str]) -> None:
    for region in regions:
        ctx.for_region(region).changed()


# -- material --------------------------------------------------------------------------


def copy_material(source: Token, target: Token, key_id: str, versions: list[int]) -> None:
    """Versions of a key's material into another token, wrapped under the security
    domain key (both tokens must be in one domain, and the material made with domain
    custody). Nothing to do when both regions use one token."""
    if source is target:
        return
    for version in versions:
        ref = MaterialRef(key_id, version)
        try:
            unwrap_material(target, wrap_material(source, ref))
        except AlreadyExistsException:
            continue  # a retried call, or another region on that token has it


def _versions(ctx: OperationContext, key_id: str) -> list[int]:
    return [v.version for v in ctx.store.list_versions(key_id)]


# -- operations ------------------------------------------------------------------------


def _check_region(name: str, region: Any) -> str:
    if not isinstance(region, str) or not REGION_NAME.match(region):
        raise validation_error(name, region, "Member must be an AWS Region name")
    return region


def _primary(ctx: OperationContext, key_id: str) -> KeyRecord:
    record = ctx.resolve(key_id)
    if not record.multi_region:
        raise UnsupportedOperationException(f"{record.arn} is not a multi-Region key.")
    if record.is_replica:
        raise UnsupportedOperationException(f"{record.arn} is not a multi-region primary key.")
    return record


def replicate_key(
    ctx: OperationContext,
    *,
    key_id: str,
    replica_region: str,
    policy: str | None = None,
    bypass_policy_lockout_safety_check: bool = False,
    description: str = "",
    tags: list[dict[str, str]] | None = None,
) -> Response:
    region = _check_region("replicaRegion", replica_region)
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise validation_error(
            "description", "…", f"Member must have length less than or equal to {MAX_DESCRIPTION}"
        )
    primary = _primary(ctx, key_id)
    lifecycle.require(primary, Use.MANAGE)  # Enabled or Disabled primaries replicate
    if primary.state not in (KeyState.ENABLED, KeyState.DISABLED):
        raise KMSInvalidStateException(f"{primary.arn} is {primary.state.value}.")
    if region == primary.region:
        raise ValidationException(
            f"The replica Region {region} is the primary key's Region; choose another one."
        )
    if ctx.served_regions and region not in ctx.served_regions:
        served = ", ".join(sorted(ctx.served_regions))
        raise UnsupportedOperationException(
            f"This hsmkms does not serve {region}; it serves {served}."
        )
    if ctx.store.get_key(primary.key_id, region) is not None:
        raise AlreadyExistsException(
            f"Multi-Region key {primary.key_id} already has a key in {region}."
        )
    target = ctx.for_region(region)
    # https://docs.aws.amazon.com/kms/latest/APIReference/API_ReplicateKey.html:
    # kms:CreateKey (and kms:TagResource for Tags) by IAM policy in the replica Region.
    replica_members = {"KeySpec": primary.key_spec.value, "KeyUsage": primary.key_usage.value,
                       "Origin": primary.origin.value, "MultiRegion": True,
                       "MultiRegionKeyType": "REPLICA"}  # fmt: skip
    require_also(target, "kms:CreateKey", None, replica_members)
    if tags:
        require_also(target, "kms:TagResource", None, {"Tags": tags})
    key_policy = default_key_policy(ctx.account_id) if policy is None else policy
    replica = replace(
        primary,
        region=region,
        creation_date=ctx.clock(),
        state=KeyState.ENABLED,
        description=description,
        deletion_date=None,
        pending_window_days=None,
        tags=keytags.merged({}, keytags.parse(tags)),
        policy=key_policy,
    )
    check_lockout(target, replica, key_policy, bypass_policy_lockout_safety_check)
    versions = _versions(ctx, primary.key_id)
    copy_material(ctx.token_for(primary), target.hsm, primary.key_id, versions)
    with ctx.store.transaction() as tx:
        current, replicas = _family(tx, primary.key_id)
        if current.current_version != primary.current_version or current.region != primary.region:
            raise KMSInvalidStateException(f"{primary.arn} changed meanwhile; retry.")
        if tx.get_key(primary.key_id, region) is not None:
            raise AlreadyExistsException(
                f"Multi-Region key {primary.key_id} already has a key in {region}."
            )
        _write_family(tx, current, [*replicas, replica])
    _changed(ctx, [primary.region, region])
    stored = target.resolve(primary.key_id)
    response: Response = {
        "ReplicaKeyMetadata": key_metadata(stored),
        "ReplicaPolicy": stored.policy,
    }
    if stored.tags:  # AWS leaves ReplicaTags out when there are none
        response["ReplicaTags"] = keytags.as_list(stored.tags)
    return response


def update_primary_region(ctx: OperationContext, *, key_id: str, primary_region: str) -> Response:
    region = _check_region("primaryRegion", primary_region)
    primary = _primary(ctx, key_id)
    lifecycle.require(primary, Use.MANAGE)
    if region == primary.region:
        raise ValidationException(f"{primary.arn} is already the primary key in {region}.")
    with ctx.store.transaction() as tx:
        current, replicas = _family(tx, primary.key_id)
        chosen = next((r for r in replicas if r.region == region), None)
        if chosen is None:
            raise NotFoundException(
                f"Multi-Region key {primary.key_id} has no replica in {region}."
            )
        lifecycle.require(current, Use.MANAGE)
        lifecycle.require(chosen, Use.MANAGE)
        # kms:UpdatePrimaryRegion on the replica too, in its Region (AWS's rule).
        require_also(ctx.for_region(region), "kms:UpdatePrimaryRegion", chosen,
                     {"PrimaryRegion": region})  # fmt: skip
        # The new primary keeps its own policy, tags and state; the shared properties
        # are the same on every row already.
        rest = [r for r in replicas if r.region != region]
        _write_family(tx, chosen, [*rest, current])
    _changed(ctx, [primary.region, *[r.region for r in replicas]])
    return {}


# -- hooks the key lifecycle calls -----------------------------------------------------


def share(ctx: OperationContext, key_id: str) -> None:
    """After the primary changed a shared property (rotation): new versions into the
    replicas' tokens first, then the replicas' rows, so no replica names a version its
    token lacks."""
    primary, replicas = _family(ctx.store, key_id)
    if not replicas:
        return
    source = ctx.for_region(primary.region).token_for(primary)
    for row in replicas:
        behind = [v for v in _versions(ctx, key_id) if v > row.current_version]
        copy_material(source, ctx.token_of_region(row.region), key_id, behind)
    with ctx.store.transaction() as tx:
        current, rows = _family(tx, key_id)
        _write_family(tx, current, rows)
    _changed(ctx, [primary.region, *[r.region for r in replicas]])


def delete_replica(ctx: OperationContext, record: KeyRecord) -> None:
    """A replica's waiting period ended: its row, aliases and grants go; its token
    objects too unless another row of the key lives on that token. A primary waiting
    in PendingReplicaDeletion starts its own waiting period when the last one goes."""
    with ctx.store.transaction() as tx:
        primary, replicas = _family(tx, record.key_id)
        versions = [v.version for v in tx.list_versions(record.key_id)]
        tx.delete_key(record.key_id, record.region)
        rest = [r for r in replicas if r.region != record.region]
        if primary.state is KeyState.PENDING_REPLICA_DELETION and not rest:
            days = primary.pending_window_days or 30
            primary = replace(
                primary,
                state=KeyState.PENDING_DELETION,
                deletion_date=ctx.clock() + timedelta(days=days),
            )
        _write_family(tx, primary, rest)
    token = ctx.token_of_region(record.region)
    if all(ctx.token_of_region(r.region) is not token for r in [primary, *rest]):
        for version in versions:
            token.destroy(MaterialRef(record.key_id, version))
    _changed(ctx, [primary.region, record.region, *[r.region for r in rest]])
