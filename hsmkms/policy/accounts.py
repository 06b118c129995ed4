"""A caller of another account than the one hsmkms serves: AWS's cross-account rules,
applied to every decision the authorizer makes for such a caller.

https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-modifying-external-accounts.html:
the key policy must allow the other account (or its principal) AND that account's own
IAM policies must allow; only the operations marked "Cross-account use: Yes" can be
allowed at all; what has no key policy (the account itself, its aliases and custom key
stores) is never another account's.
"""

from __future__ import annotations

from collections.abc import Sequence

from hsmkms.policy.engine import Decision, Request, evaluate
from hsmkms.policy.model import Policy
from hsmkms.policy.needs import CROSS_ACCOUNT_ACTIONS


def across_accounts(
    request: Request,
    decision: Decision,
    key_policy: Policy | None,
    identity_policies: Sequence[Policy],
    account: str,
) -> Decision:
    """`decision` (by the key policy and the caller's identity policies) for a caller of
    another account than `account`, the one the resource is in."""
    if decision.explicit:
        return decision  # a Deny is a Deny, whoever asks
    if key_policy is None:
        return Decision(
            False,
            f"the resource is in account {account}, where another account may use only "
            "the keys whose key policy allows it",
        )
    if request.action not in CROSS_ACCOUNT_ACTIONS:
        return Decision(False, f"{request.action} cannot be used across accounts")
    if decision.allowed and not evaluate(request, None, identity_policies).allowed:
        # The key policy named the principal (or `*`): its own account must agree.
        return Decision(False, f"no identity-based policy allows the {request.action} action")
    return decision
