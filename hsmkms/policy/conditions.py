"""Condition operators of AWS's policy language.

Semantics (AWS IAM reference): values of one key are ORed, keys and operators are
ANDed. A key missing from the request makes positive operators false, negated ones
true, `...IfExists` true, `ForAllValues:` true and `ForAnyValue:` false. `Null`
tests presence.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from hsmkms.policy.glob import like

Match = Callable[[str, str], bool]


def _number(value: str) -> float:
    return float(value)


def _date(value: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except ValueError:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _compare(parse: Callable[[str], object], test: Callable[[object, object], bool]) -> Match:
    def match(value: str, expected: str) -> bool:
        try:
            return test(parse(value), parse(expected))
        except (ValueError, TypeError):
            return False

    return match


def _in_network(value: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


# Base operator -> (match, negated)
OPERATORS: dict[str, tuple[Match, bool]] = {
    "stringequals": (lambda v, e: v == e, False),
    "stringnotequals": (lambda v, e: v == e, True),
    "stringequalsignorecase": (lambda v, e: v.lower() == e.lower(), False),
    "stringnotequalsignorecase": (lambda v, e: v.lower() == e.lower(), True),
    "stringlike": (lambda v, e: like(v, e), False),
    "stringnotlike": (lambda v, e: like(v, e), True),
    "arnequals": (lambda v, e: like(v, e), False),
    "arnlike": (lambda v, e: like(v, e), False),
    "arnnotequals": (lambda v, e: like(v, e), True),
    "arnnotlike": (lambda v, e: like(v, e), True),
    "numericequals": (_compare(_number, lambda a, b: a == b), False),
    "numericnotequals": (_compare(_number, lambda a, b: a == b), True),
    "numericlessthan": (_compare(_number, lambda a, b: a < b), False),  # type: ignore[operator]
    "numericlessthanequals": (_compare(_number, lambda a, b: a <= b), False),  # type: ignore[operator]
    "numericgreaterthan": (_compare(_number, lambda a, b: a > b), False),  # type: ignore[operator]
    "numericgreaterthanequals": (_compare(_number, lambda a, b: a >= b), False),  # type: ignore[operator]
    "dateequals": (_compare(_date, lambda a, b: a == b), False),
    "datenotequals": (_compare(_date, lambda a, b: a == b), True),
    "datelessthan": (_compare(_date, lambda a, b: a < b), False),  # type: ignore[operator]
    "datelessthanequals": (_compare(_date, lambda a, b: a <= b), False),  # type: ignore[operator]
    "dategreaterthan": (_compare(_date, lambda a, b: a > b), False),  # type: ignore[operator]
    "dategreaterthanequals": (_compare(_date, lambda a, b: a >= b), False),  # type: ignore[operator]
    "bool": (lambda v, e: v.lower() == e.lower(), False),
    "ipaddress": (_in_network, False),
    "notipaddress": (_in_network, True),
}


def split_operator(operator: str) -> tuple[str, str, bool]:
    """'ForAnyValue:StringLikeIfExists' -> ('foranyvalue', 'stringlike', True)."""
    qualifier, _, base = operator.rpartition(":")
    base = base.lower()
    if_exists = base.endswith("ifexists") and base != "null"
    if if_exists:
        base = base.removesuffix("ifexists")
    return qualifier.lower(), base, if_exists


def known(operator: str) -> bool:
    qualifier, base, if_exists = split_operator(operator)
    if qualifier not in ("", "foranyvalue", "forallvalues"):
        return False
    return base in OPERATORS or (base == "null" and not if_exists)


def holds(operator: str, expected: Sequence[str], actual: Sequence[str] | None) -> bool:
    """Does one condition (operator, key's values) hold for the request's values?"""
    qualifier, base, if_exists = split_operator(operator)
    if base == "null":
        wanted_absent = any(e.lower() == "true" for e in expected)
        return (not actual) == wanted_absent
    match, negated = OPERATORS[base]
    if not actual:
        if if_exists or qualifier == "forallvalues":
            return True
        return negated and qualifier != "foranyvalue"

    def hit(value: str) -> bool:
        return any(match(value, e) for e in expected)

    if qualifier == "forallvalues":
        return all((not hit(v)) if negated else hit(v) for v in actual)
    if qualifier == "foranyvalue":
        return any((not hit(v)) if negated else hit(v) for v in actual)
    found = any(hit(v) for v in actual)
    return not found if negated else found


__all__ = ["OPERATORS", "holds", "known", "like", "split_operator"]
