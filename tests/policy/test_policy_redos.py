"""One request must not freeze the server (trust review, finding 2: ReDoS).

A key policy condition `StringLike kms:EncryptionContext:aws:s3:arn` with four `*`, and
a principal the statement does not even name sending a long context value: each `*`
was a backtracking `.*` holding the GIL, and conditions were read before the principal
was matched. Now principals come first, matching is linear, and the encryption context
is capped before authorization. Attack tests over the real server with boto3 clients;
the time bounds are generous (the old code took hours at these sizes)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from hsmkms.errors import ValidationException
from hsmkms.library import KeyManager
from hsmkms.policy.engine import Request, evaluate
from hsmkms.policy.model import parse_policy
from tests.conftest import ACCOUNT, Server
from tests.support.parallel import serial

# Answers within a bound, and a flood beside other work: alone on its worker.
pytestmark = serial

ROOT = f"arn:aws:iam::{ACCOUNT}:root"
S3_PATTERN = "arn:aws:s3:::bucket-*/*/*/*.csv"
S3_KEY = "aws:s3:arn"
# The most an encryption context may hold: its keys and values, UTF-8 (see README).
MAX_CONTEXT_BYTES = 8192
BOUND = 1.0  # seconds; the attack requests took minutes to hours before the fix


def user(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def key_policy(*statements: dict[str, Any]) -> str:
    root = {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*",
            "Resource": "*"}  # fmt: skip
    return json.dumps({"Version": "2012-10-17", "Statement": [root, *statements]})


def error_code(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    code: str = caught.value.response["Error"]["Code"]
    return code


def longest_value(key: str, prefix: str, filler: str) -> str:
    """The longest value `key` may carry: the whole context at its cap."""
    return prefix + filler * (MAX_CONTEXT_BYTES - len(key.encode()) - len(prefix.encode()))


@contextmanager
def health_latencies(url: str) -> Iterator[list[float]]:
    """Poll /healthz from another thread while the block runs; yields the latencies of
    the polls made meanwhile (the first poll, made before, is left out)."""
    latencies: list[float] = []
    stop, ready = threading.Event(), threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=120) as client:
            client.get(url + "/healthz")
            ready.set()
            while not stop.is_set():
                started = time.perf_counter()
                client.get(url + "/healthz")
                latencies.append(time.perf_counter() - started)
                stop.wait(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    assert ready.wait(30), "/healthz did not answer"
    try:
        yield latencies
    finally:
        stop.set()
        poller.join(timeout=120)


def attack(call: Any, latencies: list[float], **kwargs: Any) -> list[tuple[str, float]]:
    """The request, repeated (at most 50 times) until /healthz was polled 3 times meanwhile."""
    outcomes = []
    while len(outcomes) < 50 and (len(outcomes) < 3 or len(latencies) < 3):
        outcomes.append(timed(call, **kwargs))
    return outcomes


def timed(call: Any, **kwargs: Any) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        call(**kwargs)
        outcome = "ok"
    except ClientError as error:
        outcome = error.response["Error"]["Code"]
    return outcome, time.perf_counter() - started


def test_a_long_context_from_a_principal_the_statement_does_not_name(server: Server) -> None:
    tag = uuid.uuid4().hex[:8]
    reader, attacker = f"reader-{tag}", f"attacker-{tag}"
    server.principal(reader)
    as_attacker = server.principal(attacker)  # no permissions at all
    admin = server.client()
    key = admin.create_key(Policy=key_policy(
        {"Sid": "S3 reads CSV", "Effect": "Allow", "Principal": {"AWS": user(reader)},
         "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringLike": {f"kms:EncryptionContext:{S3_KEY}": S3_PATTERN}}},
    ))["KeyMetadata"]["KeyId"]  # fmt: skip
    blob = admin.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    context = {S3_KEY: longest_value(S3_KEY, "arn:aws:s3:::bucket-", "/")}

    with health_latencies(server.url) as latencies:
        outcomes = attack(as_attacker.decrypt, latencies, CiphertextBlob=blob,
                          EncryptionContext=context)  # fmt: skip
    assert {code for code, _ in outcomes} == {"AccessDeniedException"}
    assert max(seconds for _, seconds in outcomes) < BOUND, outcomes
    assert len(latencies) >= 3 and max(latencies) < BOUND, latencies


def test_a_many_wildcard_condition_on_the_callers_own_key(server: Server) -> None:
    """The principal matches, so the condition is evaluated: it must be linear."""
    attacker = f"owner-{uuid.uuid4().hex[:8]}"
    as_attacker = server.principal(attacker)
    key = server.client().create_key(Policy=key_policy(
        {"Sid": "Seven stars", "Effect": "Allow", "Principal": {"AWS": user(attacker)},
         "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*",
         "Condition": {"StringLike": {"kms:EncryptionContext:path": "*a*a*a*a*a*a*b"}}},
    ))["KeyMetadata"]["KeyId"]  # fmt: skip
    context = {"path": longest_value("path", "", "a")}

    with health_latencies(server.url) as latencies:
        outcomes = attack(as_attacker.encrypt, latencies, KeyId=key, Plaintext=b"x",
                          EncryptionContext=context)  # fmt: skip
    assert {code for code, _ in outcomes} == {"AccessDeniedException"}
    assert max(seconds for _, seconds in outcomes) < BOUND, outcomes
    assert len(latencies) >= 3 and max(latencies) < BOUND, latencies
    # ... and the condition still decides: a value it matches is allowed.
    allowed = {"path": "a" * 4000 + "b"}
    as_attacker.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext=allowed)


def test_an_encryption_context_over_the_cap_is_refused_before_authorization(
    server: Server,
) -> None:
    as_nobody = server.principal(f"nobody-{uuid.uuid4().hex[:8]}")
    admin = server.client()
    key = admin.create_key()["KeyMetadata"]["KeyId"]
    at_cap = {"k": "v" * (MAX_CONTEXT_BYTES - 1)}
    over = {"k": "v" * MAX_CONTEXT_BYTES}
    multibyte = {"k": "é" * (MAX_CONTEXT_BYTES // 2)}  # under the cap in characters only
    blob = admin.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext=at_cap)["CiphertextBlob"]
    assert admin.decrypt(CiphertextBlob=blob, EncryptionContext=at_cap)["Plaintext"] == b"x"

    calls: Sequence[tuple[Any, dict[str, Any]]] = [
        (admin.encrypt, {"KeyId": key, "Plaintext": b"x", "EncryptionContext": over}),
        (admin.encrypt, {"KeyId": key, "Plaintext": b"x", "EncryptionContext": multibyte}),
        (admin.decrypt, {"CiphertextBlob": blob, "EncryptionContext": over}),
        (admin.generate_data_key, {"KeyId": key, "KeySpec": "AES_256", "EncryptionContext": over}),
        (admin.re_encrypt, {"CiphertextBlob": blob, "SourceEncryptionContext": at_cap,
                            "DestinationKeyId": key, "DestinationEncryptionContext": over}),
        # refused as invalid before the caller's (missing) permission is looked at
        (as_nobody.decrypt, {"CiphertextBlob": blob, "EncryptionContext": over}),
    ]  # fmt: skip
    for call, arguments in calls:
        with pytest.raises(ClientError) as caught:
            call(**arguments)
        error = caught.value.response["Error"]
        assert error["Code"] == "ValidationException", (call, error)
        assert "ncryptionContext" in error["Message"] and str(MAX_CONTEXT_BYTES) in error["Message"]
        assert "v" * 100 not in error["Message"]  # the value is not echoed back


def test_the_library_applies_the_same_cap(km: KeyManager, key_id: str) -> None:
    with pytest.raises(ValidationException):
        km.encrypt(key_id=key_id, plaintext=b"x", encryption_context={"k": "v" * MAX_CONTEXT_BYTES})
    at_cap = {"k": "v" * (MAX_CONTEXT_BYTES - 1)}
    blob = km.encrypt(key_id=key_id, plaintext=b"x", encryption_context=at_cap)["CiphertextBlob"]
    assert km.decrypt(ciphertext_blob=blob, encryption_context=at_cap)["Plaintext"] == b"x"


def test_grant_constraints_within_the_documented_limits(server: Server) -> None:
    """ "Each constraint value can include up to 8 encryption context pairs. The encryption
    context value in each constraint cannot exceed 384 characters." (CreateGrant)"""
    admin = server.client()
    key = admin.create_key()["KeyMetadata"]["KeyId"]
    grantee = user(f"grantee-{uuid.uuid4().hex[:8]}")
    server.principal(grantee.rsplit("/", 1)[1])
    base = {"KeyId": key, "GranteePrincipal": grantee, "Operations": ["Decrypt"]}
    eight = {f"k{n}": "v" * 384 for n in range(8)}
    admin.create_grant(**base, Constraints={"EncryptionContextSubset": eight})
    for constraints in (
        {"EncryptionContextSubset": {**eight, "k8": "v"}},
        {"EncryptionContextEquals": {"k": "v" * 385}},
    ):
        assert error_code(admin.create_grant, **base, Constraints=constraints) == (
            "ValidationException"
        )


class Tripwire(Mapping[str, Sequence[str]]):
    """Request condition keys that must not be read."""

    def __getitem__(self, key: str) -> Sequence[str]:
        raise AssertionError(f"condition key {key!r} read for a statement not naming the caller")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_principals_are_matched_before_conditions() -> None:
    """In every statement loop: a statement that does not apply to the caller never reads
    the request's condition keys (the caller controls them)."""
    condition = {"StringLike": {f"kms:EncryptionContext:{S3_KEY}": S3_PATTERN}}
    alice, bob = user("alice"), user("bob")
    outsider = "arn:aws:iam::444455556666:user/mallory"

    def statement(sid: str, effect: str, **principal: Any) -> dict[str, Any]:
        return {"Sid": sid, "Effect": effect, **principal, "Action": "kms:*", "Resource": "*",
                "Condition": condition}  # fmt: skip

    others = [
        statement("Alice", "Allow", Principal={"AWS": alice}),
        statement("Not them", "Allow", NotPrincipal={"AWS": [bob, outsider]}),
        statement("No Alice", "Deny", Principal={"AWS": alice}),
    ]
    # The root statement delegates to the key's own account only: not to the outsider.
    root = statement("Root", "Allow", Principal={"AWS": ROOT})
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    for principal, statements in ((outsider, [root, *others]), (bob, others)):
        policy = parse_policy(json.dumps({"Version": "2012-10-17", "Statement": statements}))
        decision = evaluate(Request(principal, "kms:Decrypt", key, Tripwire()), policy)
        assert not decision.allowed
        assert "no resource-based policy" in decision.reason


KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_KEY = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def allow(**element: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": {"AWS": user("alice")}, "Action": "kms:*",
            "Resource": "*", **element}  # fmt: skip


# (statement, principal, action, resource, request condition keys, allowed?)
ELEMENTS = [
    (allow(Principal=None, NotPrincipal={"AWS": user("bob")}), "alice", "kms:Decrypt", KEY, {},
     True),
    (allow(Principal=None, NotPrincipal={"AWS": user("bob")}), "bob", "kms:Decrypt", KEY, {},
     False),
    (allow(Action=None, NotAction="kms:Schedule*"), "alice", "kms:Decrypt", KEY, {}, True),
    (allow(Action=None, NotAction="kms:Schedule*"), "alice", "kms:ScheduleKeyDeletion", KEY, {},
     False),
    (allow(Action="kms:?ecrypt"), "alice", "kms:Decrypt", KEY, {}, True),
    (allow(Action="kms:?ecrypt"), "alice", "kms:Encrypt", KEY, {}, False),
    (allow(Resource=None, NotResource="arn:aws:kms:eu-*"), "alice", "kms:Decrypt", KEY, {}, True),
    (allow(Resource=None, NotResource="arn:aws:kms:eu-*"), "alice", "kms:Decrypt", OTHER_KEY, {},
     False),
    (allow(Condition={"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": "app*"}}),
     "alice", "kms:Decrypt", KEY, {"kms:encryptioncontextkeys": ["x", "appId"]}, True),
    (allow(Condition={"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": "app*"}}),
     "alice", "kms:Decrypt", KEY, {"kms:encryptioncontextkeys": ["x", "y"]}, False),
    (allow(Condition={"ForAllValues:StringLike": {"kms:EncryptionContextKeys": "app*"}}),
     "alice", "kms:Decrypt", KEY, {"kms:encryptioncontextkeys": ["appA", "appB"]}, True),
    (allow(Condition={"ForAllValues:StringLike": {"kms:EncryptionContextKeys": "app*"}}),
     "alice", "kms:Decrypt", KEY, {"kms:encryptioncontextkeys": ["appA", "b"]}, False),
    (allow(Condition={"ForAnyValue:StringNotLike": {"kms:EncryptionContextKeys": "app*"}}),
     "alice", "kms:Decrypt", KEY, {"kms:encryptioncontextkeys": ["appA", "b"]}, True),
    (allow(Condition={"StringLikeIfExists": {"kms:EncryptionContext:path": "/a/*"}}),
     "alice", "kms:Decrypt", KEY, {}, True),
    (allow(Condition={"StringLikeIfExists": {"kms:EncryptionContext:path": "/a/*"}}),
     "alice", "kms:Decrypt", KEY, {"kms:encryptioncontext:path": ["/b/c"]}, False),
    (allow(Condition={"StringNotLike": {"kms:EncryptionContext:path": "/a/*"}}),
     "alice", "kms:Decrypt", KEY, {"kms:encryptioncontext:path": ["/b/c"]}, True),
    (allow(Condition={"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:user/al?ce"}}),
     "alice", "kms:Decrypt", KEY, {"aws:principalarn": [user("alice")]}, True),
]  # fmt: skip


@pytest.mark.parametrize(("statement", "who", "action", "resource", "keys", "allowed"), ELEMENTS)
def test_not_elements_and_set_operators_still_behave(
    statement: dict[str, Any],
    who: str,
    action: str,
    resource: str,
    keys: dict[str, list[str]],
    allowed: bool,
) -> None:
    statement = {k: v for k, v in statement.items() if v is not None}
    policy = parse_policy(json.dumps({"Version": "2012-10-17", "Statement": [statement]}))
    decision = evaluate(Request(user(who), action, resource, keys), policy)
    assert decision.allowed is allowed, decision.reason


def test_many_patterns_times_many_values_is_bounded() -> None:
    """The caller's own key, a 31 KB policy of 4,000 patterns, and 2,700 context keys:
    10.8 million comparisons (27 s of the GIL) before the request-wide budget. Over it,
    the request is denied (explicitly: no grant can open it), never allowed."""
    patterns = [f"{n}*" for n in range(4000)]
    costly = {"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": patterns}}
    keys = {"kms:encryptioncontextkeys": [chr(0x100 + n) for n in range(2700)]}
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    costly_allow = {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*",
                    "Condition": costly}  # fmt: skip
    # A Deny that would not match, before an Allow that would: over budget, still denied.
    costly_deny = {**costly_allow, "Effect": "Deny"}
    for statements in ([costly_allow], [costly_deny, allow()]):
        document = {"Version": "2012-10-17", "Statement": statements}
        policy = parse_policy(json.dumps(document, separators=(",", ":")))
        request = Request(user("alice"), "kms:Decrypt", key, keys)
        started = time.perf_counter()
        decision = evaluate(request, policy)
        assert time.perf_counter() - started < BOUND
        assert not decision.allowed and decision.explicit
        assert "too many" in decision.message(request)


def test_a_large_but_real_condition_is_still_evaluated() -> None:
    """A hundred patterns against a context at its 8 KiB cap stays within the budget."""
    patterns = [f"/data/{n}/*" for n in range(99)] + ["/logs/*"]
    value = "/logs/" + "x" * (MAX_CONTEXT_BYTES - 10)
    statement = allow(Condition={"StringLike": {"kms:EncryptionContext:path": patterns}})
    policy = parse_policy(json.dumps({"Version": "2012-10-17", "Statement": [statement]}))
    request = Request(user("alice"), "kms:Decrypt", KEY, {"kms:encryptioncontext:path": [value]})
    assert evaluate(request, policy).allowed


def test_request_values_in_resource_patterns_are_bounded_too() -> None:
    """Policy variables put request values into Resource patterns: 1,000 of them, each
    an 8 KiB context value, would be 8 MB of patterns to read per request."""
    patterns = ["${kms:EncryptionContext:x}?*"] * 1000
    statement = allow(Resource=patterns)
    document = {"Version": "2012-10-17", "Statement": [statement]}
    policy = parse_policy(json.dumps(document, separators=(",", ":")))
    value = longest_value("x", "", "a")
    request = Request(user("alice"), "kms:Decrypt", KEY, {"kms:encryptioncontext:x": [value]})
    started = time.perf_counter()
    decision = evaluate(request, policy)
    assert time.perf_counter() - started < BOUND
    assert not decision.allowed and decision.explicit
    # One such pattern is an ordinary request: evaluated, and it matches.
    policy = parse_policy(json.dumps({"Version": "2012-10-17", "Statement": [
        allow(Resource="arn:aws:kms:*:${kms:EncryptionContext:x}")]}))  # fmt: skip
    own = Request(
        user("alice"), "kms:Decrypt", KEY, {"kms:encryptioncontext:x": [KEY.split(":", 4)[4]]}
    )
    assert evaluate(own, policy).allowed
