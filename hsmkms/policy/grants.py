"""Grants as authorization sees them: constraints, and finding the grant a call names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hsmkms.errors import NotFoundException, ValidationException
from hsmkms.keys.resolver import KeyResolver
from hsmkms.store.model import Grant

# Grant constraints apply only to operations that take an encryption context; "grant
# constraints are not applied to operations that do not support an encryption context,
# such as ... DescribeKey or RetireGrant":
# https://docs.aws.amazon.com/kms/latest/APIReference/API_GrantConstraints.html
CONTEXT_OPERATIONS = frozenset({
    "Encrypt", "Decrypt", "ReEncryptFrom", "ReEncryptTo", "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext", "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
})  # fmt: skip


def constraints_hold(
    grant: Grant, context: dict[str, str] | None, operation: str = "Encrypt"
) -> bool:
    if operation not in CONTEXT_OPERATIONS:
        return True
    context = context or {}
    if grant.context_equals is not None and context != grant.context_equals:
        return False
    return grant.context_subset is None or all(
        context.get(k) == v for k, v in grant.context_subset.items()
    )


def find_grant(
    keys: KeyResolver, grant_token: str | None, key_id: str | None, grant_id: str | None
) -> Grant:
    """The grant a RetireGrant or RevokeGrant names, by token or by key and id."""
    if grant_token is None and (key_id is None or grant_id is None):
        raise ValidationException("Give a GrantToken, or both KeyId and GrantId.")
    candidates = keys.store.list_grants(None if key_id is None else keys.resolve(key_id).key_id)
    for grant in candidates:
        if (grant_token is not None and grant.token == grant_token) or (
            grant_token is None and grant.grant_id == grant_id
        ):
            return grant
    raise NotFoundException("Grant not found.")


def within_parent(parent: Grant, members: Mapping[str, Any]) -> bool:
    """May a grantee whose CreateGrant permission comes from `parent` create this grant?
    Only for some or all of the parent's operations, with constraints at least as
    strict as the parent's:
    https://docs.aws.amazon.com/kms/latest/developerguide/create-grant-overview.html#grant-creategrant"""
    if not set(members.get("Operations") or ()) <= set(parent.operations):
        return False
    constraints = members.get("Constraints") or {}
    equals = constraints.get("EncryptionContextEquals")
    subset = constraints.get("EncryptionContextSubset")
    if parent.context_equals is not None:
        return equals == parent.context_equals
    if parent.context_subset is not None:
        required = parent.context_subset.items()
        return any(c is not None and required <= c.items() for c in (equals, subset))
    return True


def may_retire(principal_arn: str, grant: Grant) -> bool:
    """KMS lets a grant's retiring principal, or its grantee when the grant includes
    RetireGrant, retire it without any policy."""
    return principal_arn == grant.retiring_principal or (
        principal_arn == grant.grantee_principal and "RetireGrant" in grant.operations
    )
