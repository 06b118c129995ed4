"""Key policies: PutKeyPolicy, GetKeyPolicy, ListKeyPolicies, and KMS's lockout
safety check (also run by CreateKey).
"""

from __future__ import annotations

from hsmkms.errors import (
    NotFoundException,
)
from hsmkms.keys import lifecycle
from hsmkms.keys.lifecycle import Use
from hsmkms.operations.checks import (
    check_limit,
)
from hsmkms.operations.context import OperationContext, Response
from hsmkms.policy.caller import current_caller
from hsmkms.policy.model import (
    MalformedPolicyDocumentException,
    Policy,
    default_key_policy,
    parse_policy,
)
from hsmkms.policy.principals import known_principal
from hsmkms.store.model import (
    KeyRecord,
)


def check_lockout(ctx: OperationContext, record: KeyRecord, policy: str, bypass: bool) -> None:
    """Validate a key policy and, unless bypassed, KMS's lockout safety check: the
    caller must still be allowed kms:PutKeyPolicy under it."""
    parsed = parse_policy(policy)
    caller = current_caller.get()
    if caller is not None:  # the operator (library, CLI) may name principals before they exist
        check_principals(ctx, parsed)
    if caller is None or bypass:
        return
    _, decision = ctx.authorizer.decide(caller, "kms:PutKeyPolicy", record, {}, key_policy=parsed)
    if not decision.allowed:
        raise MalformedPolicyDocumentException(
            "The new key policy will not allow you to update the key policy in the future."
        )


def check_principals(ctx: OperationContext, policy: Policy) -> None:
    """KMS refuses a key policy naming a principal that does not exist: here, one that is
    neither an account root nor a principal hsmkms knows.
    https://docs.aws.amazon.com/kms/latest/APIReference/API_PutKeyPolicy.html#KMS-PutKeyPolicy-request-Policy"""
    for statement in policy.statements:
        for principals in (statement.principal, statement.not_principal):
            for arn in principals.arns if principals is not None else ():
                if not arn.endswith(":root") and not known_principal(ctx.store, arn):
                    raise MalformedPolicyDocumentException(
                        "Policy contains a statement with one or more invalid principals."
                    )


def _policy_name(name: str) -> None:
    if name != "default":
        raise NotFoundException(f"No such policy exists: {name}")


def put_key_policy(
    ctx: OperationContext,
    *,
    key_id: str,
    policy: str,
    policy_name: str = "default",
    bypass_policy_lockout_safety_check: bool = False,
) -> Response:
    _policy_name(policy_name)
    record = ctx.resolve(key_id)
    lifecycle.require(record, Use.MANAGE)
    check_lockout(ctx, record, policy, bypass_policy_lockout_safety_check)
    ctx.update(record, policy=policy)
    return {}


def get_key_policy(ctx: OperationContext, *, key_id: str, policy_name: str = "default") -> Response:
    _policy_name(policy_name)
    record = ctx.resolve(key_id)
    return {
        "Policy": record.policy or default_key_policy(record.account_id),
        "PolicyName": "default",
    }


def list_key_policies(
    ctx: OperationContext, *, key_id: str, limit: int | None = None, marker: str | None = None
) -> Response:
    check_limit(limit, 1000, 100)
    ctx.resolve(key_id)
    return {"PolicyNames": ["default"], "Truncated": False}
