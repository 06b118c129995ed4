"""Grants as authorization sees them: constraints, and finding the grant a call names."""

from __future__ import annotations

from hsmkms.errors import NotFoundException, ValidationException
from hsmkms.keys.model import Grant
from hsmkms.keys.resolver import KeyResolver


def constraints_hold(grant: Grant, context: dict[str, str] | None) -> bool:
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


def may_retire(principal_arn: str, grant: Grant) -> bool:
    """KMS lets a grant's retiring principal, or its grantee when the grant includes
    RetireGrant, retire it without any policy."""
    return principal_arn == grant.retiring_principal or (
        principal_arn == grant.grantee_principal and "RetireGrant" in grant.operations
    )
