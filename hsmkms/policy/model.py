"""Policy documents in AWS's policy language: parsed, validated, normalised.

Validation follows what KMS rejects with MalformedPolicyDocumentException:
invalid JSON, unknown elements, bad Effect, bad principal ARNs, empty statements,
documents over 32 KB. Names are normalised once (actions lower-cased, single
values turned into lists) so evaluation stays simple.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from hsmkms.errors import KMSError
from hsmkms.json_input import parse_json
from hsmkms.policy.conditions import known
from hsmkms.policy.context import KMS_CONDITION_KEYS, KMS_CONDITION_PREFIXES
from hsmkms.policy.variables import has_variables

MAX_POLICY_BYTES = 32768
VERSIONS = ("2012-10-17", "2008-10-17")
STATEMENT_ELEMENTS = frozenset(
    {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource",
     "NotResource", "Condition"}
)  # fmt: skip
PRINCIPAL_ARN = re.compile(
    r"^arn:aws:(iam::\d{12}:(root|(user|role)/[\w+=,.@/-]+)|sts::\d{12}:assumed-role/[\w+=,.@/-]+)\Z"
)
ACCOUNT_ID = re.compile(r"^\d{12}\Z")


class MalformedPolicyDocumentException(KMSError):
    code = "MalformedPolicyDocumentException"
    status = 400


def _malformed(reason: str) -> MalformedPolicyDocumentException:
    return MalformedPolicyDocumentException(f"The policy document is malformed: {reason}")


def _strings(value: Any, element: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise _malformed(f"{element} must be a string or a list of strings")
    return tuple(values)


@dataclass(frozen=True)
class Principals:
    """A Principal element: `*`, or AWS principals as ARNs ("123456789012" = its root)."""

    anyone: bool = False
    arns: tuple[str, ...] = ()
    services: tuple[str, ...] = ()


def _principals(value: Any) -> Principals:
    if value == "*":
        return Principals(anyone=True)
    if not isinstance(value, dict) or not value:
        raise _malformed('Principal must be "*" or a map such as {"AWS": [...]}')
    arns: list[str] = []
    services: tuple[str, ...] = ()
    for kind, members in value.items():
        if kind == "AWS":
            for member in _strings(members, "Principal AWS"):
                if member == "*":
                    return Principals(anyone=True)
                if ACCOUNT_ID.match(member):
                    member = f"arn:aws:iam::{member}:root"
                if not PRINCIPAL_ARN.match(member):
                    raise _malformed(f"invalid principal {member!r}")
                arns.append(member)
        elif kind == "Service":
            services = _strings(members, "Principal Service")
        else:
            raise _malformed(f"unsupported principal type {kind!r}")
    return Principals(arns=tuple(arns), services=services)


@dataclass(frozen=True)
class Condition:
    operator: str  # as written, e.g. "ForAnyValue:StringLike"
    key: str  # lower-cased condition key
    values: tuple[str, ...]


@dataclass(frozen=True)
class ConditionKeys:
    """The condition keys a kind of policy may name: those its requests can carry. A key
    outside them would never be set, so a condition on it would never match and a Deny
    conditioned on it never apply: a new policy naming one is refused."""

    known: Callable[[str], bool]  # of a lower-cased key
    whose: str  # "AWS KMS defines", in the refusal's words


def _kms_key_known(key: str) -> bool:
    return (
        not key.startswith("kms:")
        or key in KMS_CONDITION_KEYS
        or key.startswith(KMS_CONDITION_PREFIXES)
    )


KMS_KEYS = ConditionKeys(_kms_key_known, "AWS KMS defines")


def _conditions(value: Any, keys: ConditionKeys | None) -> tuple[Condition, ...]:
    """`keys`: the keys the statement may name (None: a stored policy, not checked)."""
    if not isinstance(value, dict):
        raise _malformed("Condition must be a map of operators")
    found: list[Condition] = []
    for operator, block in value.items():
        if not known(operator):
            raise _malformed(f"unknown condition operator {operator!r}")
        if not isinstance(block, dict) or not block:
            raise _malformed(f"condition {operator!r} must map keys to values")
        for key, raw in block.items():
            if keys is not None and not keys.known(key.lower()):
                raise _malformed(
                    f"{key!r} is not a condition key {keys.whose}: a condition on it "
                    "would never match, and a Deny conditioned on it never apply"
                )
            values = raw if isinstance(raw, list) else [raw]
            if not all(isinstance(v, str | bool | int | float) for v in values):
                raise _malformed(f"condition values of {key!r} must be scalars")
            found.append(
                Condition(operator, key.lower(), tuple(str(v).lower() if isinstance(v, bool)
                                                       else str(v) for v in values))
            )  # fmt: skip
    return tuple(found)


@dataclass(frozen=True)
class Statement:
    effect: str  # "Allow" | "Deny"
    sid: str = ""
    principal: Principals | None = None
    not_principal: Principals | None = None
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()
    # Resource or Condition values hold ${...} policy variables (Version 2012-10-17 only).
    variables: bool = False

    @property
    def name(self) -> str:
        return self.sid or "(no Sid)"


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]
    text: str = field(default="", compare=False)


def _statement(
    raw: Any,
    *,
    identity: bool,
    variables: bool = False,
    stored: bool = False,
    keys: ConditionKeys = KMS_KEYS,
) -> Statement:
    if not isinstance(raw, dict):
        raise _malformed("each statement must be an object")
    unknown = set(raw) - STATEMENT_ELEMENTS
    if unknown:
        raise _malformed(f"unknown statement element(s) {', '.join(sorted(unknown))}")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise _malformed('Effect must be "Allow" or "Deny"')
    has_principal = "Principal" in raw or "NotPrincipal" in raw
    if identity and has_principal:
        raise _malformed("identity policies have no Principal")
    if not identity and not has_principal:
        raise _malformed("key policy statements need a Principal")
    if ("Action" in raw) == ("NotAction" in raw):
        raise _malformed("a statement needs exactly one of Action and NotAction")
    # Key policies too: "Resource (Required)",
    # https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-overview.html
    # A key policy stored before this rule was enforced keeps its implicit "*".
    has_resource, has_not_resource = "Resource" in raw, "NotResource" in raw
    implicit = stored and not identity and not has_resource and not has_not_resource
    if has_resource == has_not_resource and not implicit:
        raise _malformed("a statement needs exactly one of Resource and NotResource")
    sid = raw.get("Sid", "")
    if not isinstance(sid, str):
        raise _malformed("Sid must be a string")
    statement = Statement(
        effect=effect,
        sid=sid,
        principal=_principals(raw["Principal"]) if "Principal" in raw else None,
        not_principal=_principals(raw["NotPrincipal"]) if "NotPrincipal" in raw else None,
        actions=tuple(a.lower() for a in _strings(raw["Action"], "Action")) if "Action" in raw
        else (),
        not_actions=tuple(a.lower() for a in _strings(raw["NotAction"], "NotAction"))
        if "NotAction" in raw else (),
        resources=_strings(raw["Resource"], "Resource") if "Resource" in raw else ("*",)
        if "NotResource" not in raw else (),
        not_resources=_strings(raw["NotResource"], "NotResource") if "NotResource" in raw
        else (),
        conditions=_conditions(raw["Condition"], None if stored else keys)
        if "Condition" in raw else (),
    )  # fmt: skip
    if variables and any(
        has_variables(v)
        for v in (*statement.resources, *statement.not_resources,
                  *(v for c in statement.conditions for v in c.values))
    ):  # fmt: skip
        statement = replace(statement, variables=True)
    return statement


def parse_policy(
    text: str, *, identity: bool = False, stored: bool = False, keys: ConditionKeys = KMS_KEYS
) -> Policy:
    """A key policy (identity=False) or an identity policy (identity=True). `stored`:
    a policy accepted earlier, read for evaluation rather than checked as a new one;
    `keys`: the condition keys its requests carry (another kind of policy's)."""
    if not isinstance(text, str):
        raise _malformed("the policy must be a JSON string")
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise _malformed(f"it is larger than {MAX_POLICY_BYTES} bytes")
    try:
        document = parse_json(text)
    except ValueError:
        raise _malformed("it is not valid JSON") from None
    if not isinstance(document, dict):
        raise _malformed("it must be a JSON object")
    unknown = set(document) - {"Version", "Id", "Statement"}
    if unknown:
        raise _malformed(f"unknown element(s) {', '.join(sorted(unknown))}")
    if document.get("Version", "2008-10-17") not in VERSIONS:
        raise _malformed(f"Version must be one of {', '.join(VERSIONS)}")
    raw = document.get("Statement")
    statements = raw if isinstance(raw, list) else [raw] if raw is not None else []
    if not statements:
        raise _malformed("it has no statements")
    # Policy variables exist in Version 2012-10-17; in 2008-10-17 "${...}" is literal text.
    variables = document.get("Version") == "2012-10-17"
    return Policy(
        tuple(
            _statement(s, identity=identity, variables=variables, stored=stored, keys=keys)
            for s in statements
        ),
        text,
    )


def default_key_policy(account_id: str) -> str:
    """KMS's default key policy: the account root gets kms:*, which lets IAM policies
    of the account's principals grant access to the key."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        indent=2,
    )
