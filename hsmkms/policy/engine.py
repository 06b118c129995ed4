"""Who may do what: AWS KMS's authorization over key policies, identity policies
and grants, with the reason for every decision.

Order (AWS KMS): an explicit Deny in the key policy or the caller's identity
policies denies. Otherwise a key-policy Allow naming the caller (or `*`) allows; a
key-policy Allow naming the caller's account root delegates to the account's
identity policies, which then must allow; a grant for the caller allows. Otherwise
the request is denied by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from hsmkms.policy.conditions import holds, like, split_operator
from hsmkms.policy.model import Policy, Principals, Statement
from hsmkms.policy.variables import GLOB_OPERATORS, substitute_all


@dataclass(frozen=True)
class Request:
    principal: str  # caller ARN
    action: str  # "kms:Decrypt"
    resource: str  # key ARN, or "*" for actions without a key (CreateKey, ListKeys)
    # Condition keys, lower-cased, each with its values (multi-valued keys have several).
    context: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def account(self) -> str:
        return self.principal.split(":")[4]

    @property
    def account_root(self) -> str:
        return f"arn:aws:iam::{self.account}:root"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # e.g. "key policy statement 'Allow use' allows"
    explicit: bool = False  # denied by a Deny statement: no grant can change that

    def message(self, request: Request) -> str:
        """AccessDeniedException's message, in AWS's words: which kind of policy denied
        it, never which statement (the reason has that, for operators): a caller who
        may not read a key policy learns nothing of it from a refusal."""
        if self.reason.startswith("resource-based"):
            why = "with an explicit deny in a resource-based policy"
        elif self.reason.startswith("identity-based"):
            why = "with an explicit deny in an identity-based policy"
        else:
            why = "because " + self.reason
        return (
            f"User: {request.principal} is not authorized to perform: {request.action} "
            f"on resource: {request.resource} {why}"
        )


def _principal_matches(principals: Principals, request: Request, *, deny: bool) -> bool:
    if principals.anyone:
        return True
    for arn in principals.arns:
        if arn == request.principal:
            return True
        # The account principal stands for every identity of the account in a Deny;
        # in an Allow it only delegates (handled by the caller).
        if deny and arn == request.account_root:
            return True
    return False


def _applies_to_principal(statement: Statement, request: Request, *, deny: bool) -> bool:
    if statement.principal is not None:
        return _principal_matches(statement.principal, request, deny=deny)
    if statement.not_principal is not None:
        return not _principal_matches(statement.not_principal, request, deny=True)
    return True  # identity policy: it is the caller's own


# The most matching one request's condition values may cost, in characters compared
# (x1 per 64 characters of pattern, +16 a comparison): a hundred patterns against a full
# 8 KiB encryption context is under half of it; 10,000 patterns against 2,700 context keys
# (a 32 KB policy on the caller's own key) would hold the GIL for a minute.
CONDITION_BUDGET = 2_000_000
TOO_COSTLY = "the request carries too many condition values to evaluate against its policies"


class _TooCostly(Exception):
    pass


class _Budget:
    def __init__(self) -> None:
        self.left = CONDITION_BUDGET

    def spend(self, expected: Sequence[str], actual: Sequence[str] | None) -> None:
        """Charge the worst case before matching: reading every pattern, and every value
        against every pattern (patterns may hold request values, through variables)."""
        actual = actual or ()
        per_char = sum(1 + len(e) // 64 for e in expected)
        self.left -= sum(len(e) for e in expected) + per_char * sum(len(v) for v in actual)
        self.left -= 16 * len(expected) * len(actual)
        if self.left < 0:
            raise _TooCostly


@lru_cache(maxsize=16384)
def _any_like(patterns: tuple[str, ...], value: str, case_sensitive: bool) -> bool:
    return any(like(value, pattern, case_sensitive=case_sensitive) for pattern in patterns)


def _action_matches(statement: Statement, action: str) -> bool:
    if statement.actions:
        return _any_like(statement.actions, action.lower(), False)
    return not _any_like(statement.not_actions, action.lower(), False)


def _resource_matches(statement: Statement, request: Request, budget: _Budget) -> bool:
    resources, not_resources = statement.resources, statement.not_resources
    if statement.variables:  # then request values are in the patterns: they cost
        resources = substitute_all(resources, request.context, glob=True)
        not_resources = substitute_all(not_resources, request.context, glob=True)
        budget.spend((*resources, *not_resources), (request.resource,))
    # Patterns holding request values are not cached: each request would add its own.
    match = _any_like.__wrapped__ if statement.variables else _any_like
    if statement.resources:
        return match(resources, request.resource, True)
    return not match(not_resources, request.resource, True)


def conditions_hold(statement: Statement, request: Request, budget: _Budget) -> bool:
    for c in statement.conditions:
        values = c.values
        if statement.variables and not c.operator.lower().endswith("null"):
            base = split_operator(c.operator)[1]
            values = substitute_all(values, request.context, glob=base in GLOB_OPERATORS)
        actual = request.context.get(c.key)
        budget.spend(values, actual)
        if not holds(c.operator, values, actual):
            return False
    return True


def _matches(statement: Statement, request: Request, budget: _Budget) -> bool:
    """Action, Resource, then Condition; the caller's principal is matched before this."""
    return (
        _action_matches(statement, request.action)
        and _resource_matches(statement, request, budget)
        and conditions_hold(statement, request, budget)
    )


def _delegates_to_account(statement: Statement, request: Request) -> bool:
    return statement.principal is not None and request.account_root in statement.principal.arns


def evaluate(
    request: Request,
    key_policy: Policy | None,
    identity_policies: Sequence[Policy] = (),
) -> Decision:
    """`key_policy` None: an action on no key (CreateKey, ListKeys, GenerateRandom), which
    identity policies alone decide. Grants are consulted by the caller after a denial
    that is not explicit. A request whose conditions cost more than CONDITION_BUDGET is
    denied, explicitly: being too costly to evaluate never allows anything."""
    try:
        return _evaluate(request, key_policy, identity_policies, _Budget())
    except _TooCostly:
        return Decision(False, TOO_COSTLY, explicit=True)


def _evaluate(
    request: Request,
    key_policy: Policy | None,
    identity_policies: Sequence[Policy],
    budget: _Budget,
) -> Decision:
    key_statements = key_policy.statements if key_policy else ()
    for statement in key_statements:
        if (
            statement.effect == "Deny"
            and _applies_to_principal(statement, request, deny=True)
            and _matches(statement, request, budget)
        ):
            return Decision(
                False, f"resource-based policy (statement '{statement.name}')", explicit=True
            )
    for policy in identity_policies:
        for statement in policy.statements:
            if statement.effect == "Deny" and _matches(statement, request, budget):
                return Decision(
                    False, f"identity-based policy (statement '{statement.name}')", explicit=True
                )

    delegated = key_policy is None
    for statement in key_statements:
        if statement.effect != "Allow":
            continue
        # The principal first: conditions read request values the caller controls.
        names_caller = _applies_to_principal(statement, request, deny=False)
        if not (names_caller or _delegates_to_account(statement, request)):
            continue
        if not _matches(statement, request, budget):
            continue
        if names_caller:
            return Decision(True, f"key policy statement '{statement.name}' allows it")
        delegated = True
    if delegated:
        for policy in identity_policies:
            for statement in policy.statements:
                if statement.effect == "Allow" and _matches(statement, request, budget):
                    return Decision(
                        True,
                        f"the key policy enables IAM policies and identity policy statement "
                        f"'{statement.name}' allows it",
                    )
    if delegated:
        return Decision(False, f"no identity-based policy allows the {request.action} action")
    return Decision(False, f"no resource-based policy allows the {request.action} action")
