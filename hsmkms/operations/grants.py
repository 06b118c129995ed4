"""Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant.

Grants are stored at once and consistently, so a grant token is never needed to
use a new grant: GrantTokens are accepted and have nothing left to do.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

from hsmkms.errors import (
    LimitExceededException,
    ValidationException,
)
from hsmkms.keys import lifecycle
from hsmkms.keys.lifecycle import Use
from hsmkms.operations.checks import (
    check_limit,
    offset_page,
)
from hsmkms.operations.context import OperationContext, Response
from hsmkms.policy.caller import current_caller
from hsmkms.policy.grants import find_grant
from hsmkms.policy.model import (
    PRINCIPAL_ARN,
)
from hsmkms.store.base import Reader
from hsmkms.store.model import (
    Grant,
    KeyRecord,
    KeySpec,
    KeyUsage,
)

# "Grants per KMS key: 50,000", an AWS KMS resource quota:
# https://docs.aws.amazon.com/kms/latest/developerguide/resource-limits.html
MAX_GRANTS_PER_KEY = 50_000
ALWAYS = {"CreateGrant", "RetireGrant", "DescribeKey"}
OPERATIONS_BY_USAGE = {
    KeyUsage.ENCRYPT_DECRYPT: {"Encrypt", "Decrypt", "ReEncryptFrom", "ReEncryptTo"},
    KeyUsage.SIGN_VERIFY: {"Sign", "Verify", "GetPublicKey"},
    KeyUsage.GENERATE_VERIFY_MAC: {"GenerateMac", "VerifyMac"},
    KeyUsage.KEY_AGREEMENT: {"DeriveSharedSecret", "GetPublicKey"},
}
SYMMETRIC_ONLY = {
    "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
}  # fmt: skip


def allowed_operations(record: KeyRecord) -> set[str]:
    allowed = ALWAYS | OPERATIONS_BY_USAGE[record.key_usage]
    if record.key_spec is KeySpec.SYMMETRIC_DEFAULT:
        allowed |= SYMMETRIC_ONLY
    elif record.key_usage is KeyUsage.ENCRYPT_DECRYPT:
        allowed.add("GetPublicKey")
    return allowed


def grant_entry(grant: Grant, key_arn: str) -> Response:
    entry: Response = {
        "KeyId": key_arn,
        "GrantId": grant.grant_id,
        "CreationDate": grant.creation_date,
        "GranteePrincipal": grant.grantee_principal,
        "IssuingAccount": f"arn:aws:iam::{grant.issuing_account}:root",
        "Operations": list(grant.operations),
    }
    if grant.name:
        entry["Name"] = grant.name
    if grant.retiring_principal:
        entry["RetiringPrincipal"] = grant.retiring_principal
    constraints = {}
    if grant.context_subset is not None:
        constraints["EncryptionContextSubset"] = grant.context_subset
    if grant.context_equals is not None:
        constraints["EncryptionContextEquals"] = grant.context_equals
    if constraints:
        entry["Constraints"] = constraints
    return entry


def _page(entries: list[Response], limit: int | None, marker: str | None) -> Response:
    return offset_page("Grants", entries, check_limit(limit, 100, 50), marker)


def _new_grant(
    ctx: OperationContext,
    *,
    key_id: str,
    grantee_principal: str,
    operations: list[str],
    retiring_principal: str | None = None,
    constraints: dict[str, dict[str, str]] | None = None,
    grant_tokens: list[str] | None = None,
    name: str | None = None,
) -> tuple[Grant, KeyRecord]:
    """The grant CreateGrant would store, after every check it makes, and its key."""
    for role, principal in (("GranteePrincipal", grantee_principal),
                            ("RetiringPrincipal", retiring_principal)):  # fmt: skip
        if principal is not None and not PRINCIPAL_ARN.match(principal):
            raise ValidationException(f"{role} {principal!r} is not a valid principal ARN.")
    record = ctx.resolve(key_id)
    lifecycle.require(record, Use.MANAGE)
    invalid = sorted(set(operations) - allowed_operations(record))
    if invalid or not operations:
        raise ValidationException(
            f"Grant operations {', '.join(invalid) or '(none)'} are not valid for "
            f"{record.arn} ({record.key_spec.value}, {record.key_usage.value})."
        )
    constraints = constraints or {}
    subset = constraints.get("EncryptionContextSubset")
    equals = constraints.get("EncryptionContextEquals")
    if (subset is not None or equals is not None) and record.key_spec is not (
        KeySpec.SYMMETRIC_DEFAULT
    ):
        raise ValidationException("Encryption context constraints need a symmetric key.")
    caller = current_caller.get()
    grant = Grant(
        grant_id=secrets.token_hex(32),
        key_id=record.key_id,
        grantee_principal=grantee_principal,
        operations=tuple(operations),
        creation_date=ctx.clock(),
        issuing_account=caller.account if caller else ctx.account_id,
        token=secrets.token_urlsafe(48),
        name=name or "",
        retiring_principal=retiring_principal,
        context_subset=subset,
        context_equals=equals,
        region=record.region,
    )
    return grant, record


def _check_quota(store: Reader, record: KeyRecord) -> None:
    limit = MAX_GRANTS_PER_KEY
    if store.count_grants(record.key_id, record.region) >= limit:
        raise LimitExceededException(
            f"{record.arn} has reached the Grants per KMS key quota of {limit:,} grants."
        )


def create_grant_dry_run(ctx: OperationContext, **arguments: Any) -> Response:
    _, record = _new_grant(ctx, **arguments)
    _check_quota(ctx.store, record)
    return {}


def create_grant(
    ctx: OperationContext,
    *,
    key_id: str,
    grantee_principal: str,
    operations: list[str],
    retiring_principal: str | None = None,
    constraints: dict[str, dict[str, str]] | None = None,
    grant_tokens: list[str] | None = None,
    name: str | None = None,
) -> Response:
    grant, record = _new_grant(
        ctx,
        key_id=key_id,
        grantee_principal=grantee_principal,
        operations=operations,
        retiring_principal=retiring_principal,
        constraints=constraints,
        name=name,
    )
    with ctx.store.transaction() as tx:
        if name:  # CreateGrant is idempotent for the same name and parameters
            for existing in tx.list_grants_for(grant.key_id, grantee_principal, grant.region):
                same = replace(existing, grant_id=grant.grant_id, token=grant.token,
                               creation_date=grant.creation_date)  # fmt: skip
                if existing.name == name and same == grant:
                    return {"GrantToken": existing.token, "GrantId": existing.grant_id}
        _check_quota(tx, record)
        tx.put_grant(grant)
    ctx.changed()
    return {"GrantToken": grant.token, "GrantId": grant.grant_id}


def list_grants(
    ctx: OperationContext,
    *,
    key_id: str,
    limit: int | None = None,
    marker: str | None = None,
    grant_id: str | None = None,
    grantee_principal: str | None = None,
) -> Response:
    record = ctx.resolve(key_id)
    entries = [
        grant_entry(g, record.arn)
        for g in ctx.store.list_grants(record.key_id, record.region)
        if (grant_id is None or g.grant_id == grant_id)
        and (grantee_principal is None or g.grantee_principal == grantee_principal)
    ]
    return _page(entries, limit, marker)


def list_retirable_grants(
    ctx: OperationContext,
    *,
    retiring_principal: str,
    limit: int | None = None,
    marker: str | None = None,
) -> Response:
    entries = []
    for grant in ctx.store.list_grants(None, ctx.region):
        if grant.retiring_principal != retiring_principal:
            continue
        record = ctx.store.get_key(grant.key_id, ctx.region)
        if record is not None and record.region == ctx.region:
            entries.append(grant_entry(grant, record.arn))
    return _page(entries, limit, marker)


def find_named_grant(
    ctx: OperationContext,
    *,
    grant_token: str | None = None,
    key_id: str | None = None,
    grant_id: str | None = None,
) -> Response:
    """RetireGrant's and RevokeGrant's checks without the deletion, for DryRun."""
    find_grant(ctx.keys, grant_token, key_id, grant_id)
    return {}


def retire_grant(
    ctx: OperationContext,
    *,
    grant_token: str | None = None,
    key_id: str | None = None,
    grant_id: str | None = None,
) -> Response:
    grant = find_grant(ctx.keys, grant_token, key_id, grant_id)
    with ctx.store.transaction() as tx:
        tx.delete_grant(grant.grant_id)
    ctx.changed()
    return {}


def revoke_grant(ctx: OperationContext, *, key_id: str, grant_id: str) -> Response:
    grant = find_grant(ctx.keys, None, key_id, grant_id)
    with ctx.store.transaction() as tx:
        tx.delete_grant(grant.grant_id)
    ctx.changed()
    return {}
