"""IAM's wildcard matching (`*`, `?`, and the literal `${*}`, `${?}`, `${$}` of policy
variables): a semantics table, a property test against a plain reference matcher, and
the patterns that froze the server when `*` was a backtracking regex."""

from __future__ import annotations

import time
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsmkms.policy.conditions import like
from hsmkms.policy.variables import substitute


def pattern(raw: str) -> str:
    """A policy value as evaluation sees it: ${*}, ${?} and ${$} turned literal."""
    found = substitute(raw, {}, glob=True)
    assert found is not None
    return found


# (value, pattern as written in a policy, case-sensitive, matches?)
TABLE = [
    ("kms:Decrypt", "kms:Decrypt", True, True),
    ("kms:Decrypt", "kms:*", True, True),
    ("kms:Decrypt", "*", True, True),
    ("", "*", True, True),
    ("", "", True, True),
    ("", "?", True, False),
    ("a", "", True, False),
    ("kms:Decrypt", "kms:decrypt", True, False),
    ("kms:decrypt", "KMS:De*", False, True),
    ("kms:Decrypt", "kms:Encrypt", True, False),
    ("kms:Decrypt", "kms:?ecrypt", True, True),
    ("kms:Decrypt", "kms:??crypt", True, True),
    ("kms:Decrypt", "kms:?crypt", True, False),  # ? is exactly one character
    ("kms:GenerateDataKeyPair", "kms:Generate*Pair", True, True),
    ("kms:GenerateDataKey", "kms:Generate*Pair", True, False),
    ("arn:aws:kms:us-east-1:111122223333:key/k", "arn:aws:kms:*:111122223333:key/*", True, True),
    ("arn:aws:kms:us-east-1:444455556666:key/k", "arn:aws:kms:*:111122223333:key/*", True, False),
    # * crosses ARN delimiters and matches nothing at all
    ("arn:aws:s3:::bucket-a/b/c/d.csv", "arn:aws:s3:::bucket-*/*/*/*.csv", True, True),
    ("arn:aws:s3:::bucket-//.csv", "arn:aws:s3:::bucket-*/*/*/*.csv", True, False),
    ("arn:aws:s3:::bucket-///.csv", "arn:aws:s3:::bucket-*/*/*/*.csv", True, True),
    ("arn:aws:s3:::bucket-a/b/c/d.txt", "arn:aws:s3:::bucket-*/*/*/*.csv", True, False),
    ("line one\nline two", "line*two", True, True),  # * spans newlines too
    ("line\n", "line?", True, True),
    ("abab", "*ab", True, True),
    ("aab", "*ab", True, True),
    ("ab", "a**b", True, True),
    ("abcabd", "*abd", True, True),
    ("xaxbxc", "*a?b?c", True, True),
    ("xaxbxxc", "*a?b?c", True, False),
    ("[ab]", "[ab]", True, True),  # brackets are literal, unlike fnmatch
    ("a", "[ab]", True, False),
    ("a.c", "a.c", True, True),
    ("abc", "a.c", True, False),  # regex metacharacters are literal
    ("a+", "a+", True, True),
    ("aa", "a+", True, False),
    # ${*}, ${?} and ${$} are the characters themselves, not wildcards
    ("report*", "report${*}", True, True),
    ("reports", "report${*}", True, False),
    ("what?", "what${?}", True, True),
    ("whatx", "what${?}", True, False),
    ("cost$", "cost${$}", True, True),
    ("a*b?c", "a${*}*${?}c", True, True),
    ("a*b!c", "a${*}*${?}c", True, False),
    ("axb?c", "a${*}*${?}c", True, False),
    ("A*", "a${*}", False, True),
]


@pytest.mark.parametrize(("value", "raw", "case_sensitive", "expected"), TABLE)
def test_iam_wildcard_semantics(value: str, raw: str, case_sensitive: bool, expected: bool) -> None:
    assert like(value, pattern(raw), case_sensitive=case_sensitive) is expected


TOKENS = ["a", "b", "A", "*", "?", "${*}", "${?}", "${$}"]
# What each token stands for in the reference: a wildcard, or the one literal character.
WILD = {"*": "*", "?": "?"}
LITERAL = {"${*}": "*", "${?}": "?", "${$}": "$"}


def reference(value: str, tokens: list[str], case_sensitive: bool) -> bool:
    """Matching by plain recursion over (value position, token position)."""
    fold = (lambda s: s) if case_sensitive else str.lower

    @cache
    def match(i: int, j: int) -> bool:
        if j == len(tokens):
            return i == len(value)
        token = tokens[j]
        if WILD.get(token) == "*":
            return match(i, j + 1) or (i < len(value) and match(i + 1, j))
        if i == len(value):
            return False
        if WILD.get(token) == "?":
            return match(i + 1, j + 1)
        return fold(value[i]) == fold(LITERAL.get(token, token)) and match(i + 1, j + 1)

    return match(0, 0)


@settings(max_examples=1000, deadline=None)
@given(
    tokens=st.lists(st.sampled_from(TOKENS), max_size=8),
    value=st.text(alphabet="abAB*?$", max_size=10),
    case_sensitive=st.booleans(),
)
def test_matches_the_reference(tokens: list[str], value: str, case_sensitive: bool) -> None:
    raw = "".join(tokens)
    assert like(value, pattern(raw), case_sensitive=case_sensitive) is reference(
        value, tokens, case_sensitive
    ), (value, raw)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        # The finding: each * was a `.*` the regex engine backtracked over.
        ("arn:aws:s3:::bucket-*/*/*/*.csv", "arn:aws:s3:::bucket-" + "/" * 100_000),
        ("*a*a*a*a*a*a*a*b", "a" * 100_000),
        ("*a?a?a?a?a?a?a?b*", "a" * 100_000),
        ("*" + "a?" * 2000 + "b*", "a" * 20_000),
    ],
    ids=["s3-arn", "stars", "holes", "long-holes"],
)
def test_pathological_patterns_answer_at_once(raw: str, value: str) -> None:
    """An attack test, not a benchmark: the bound is generous, the old regex took
    hours on these."""
    started = time.perf_counter()
    assert like(value, pattern(raw)) is False
    assert time.perf_counter() - started < 2.0
