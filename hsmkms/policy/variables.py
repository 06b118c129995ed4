"""Policy variables: `${aws:username}`, `${aws:PrincipalTag/team}`, ... in the Resource
and Condition values of a policy whose Version is 2012-10-17, replaced at evaluation
by the request's value of that condition key.
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html

- `${key, 'default'}` gives a default for a key with no value.
- `${*}`, `${?}` and `${$}` stand for the characters themselves.
- A variable with no value (and no default), or a multivalued key, leaves the value
  with nothing to match: a Resource pattern then matches no resource, a condition value
  no request value (so a negated operator such as StringNotEquals holds), as the page's
  "Policy variables with no value" section says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from hsmkms.policy.glob import LITERAL_QUESTION, LITERAL_STAR

VARIABLE = re.compile(r"\$\{([^}]*)\}")
_DEFAULT = re.compile(r"^\s*([^,\s]+)\s*,\s*'([^']*)'\s*$")
_LITERAL = {"*": "*", "?": "?", "$": "$"}
# In patterns (StringLike, Arn*, Resource) ${*} and ${?} must not act as wildcards.
_GLOB_LITERAL = {**_LITERAL, "*": LITERAL_STAR, "?": LITERAL_QUESTION}
GLOB_OPERATORS = frozenset({"stringlike", "stringnotlike", "arnlike", "arnnotlike", "arnequals",
                            "arnnotequals"})  # fmt: skip


def has_variables(value: str) -> bool:
    return VARIABLE.search(value) is not None


def substitute(
    value: str, context: Mapping[str, Sequence[str]], *, glob: bool = False
) -> str | None:
    """The value with its variables replaced, or None when one has no single value.
    `glob`: the value is a pattern, so ${*} and ${?} become literal (not wildcard) marks."""
    unresolved = False
    literals = _GLOB_LITERAL if glob else _LITERAL

    def replace(match: re.Match[str]) -> str:
        nonlocal unresolved
        inner = match.group(1)
        if inner in literals:
            return literals[inner]
        default = _DEFAULT.match(inner)
        key = (default.group(1) if default else inner.strip()).lower()
        found = context.get(key)
        if found is not None and len(found) == 1:
            return found[0]
        if default:
            return default.group(2)
        unresolved = True
        return ""

    replaced = VARIABLE.sub(replace, value)
    return None if unresolved else replaced


def substitute_all(
    values: Sequence[str], context: Mapping[str, Sequence[str]], *, glob: bool = False
) -> tuple[str, ...]:
    """Every value that resolves; the others match nothing and are left out."""
    found = (substitute(v, context, glob=glob) if has_variables(v) else v for v in values)
    return tuple(v for v in found if v is not None)
