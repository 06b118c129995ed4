"""Every cache or table keyed by what requests carry has a bound, however many
distinct values a client sends (the HTTP-level floods are in test_edge_floods.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hsmkms.api import sigv4
from hsmkms.api.errors import MissingAuthenticationTokenException
from hsmkms.api.ratelimit import MAX_BUCKETS, PROBES, SLOTS, BucketTable, Quota, RateLimiter
from hsmkms.api.refusals import UNTRACKED, EdgeRefusals, Refusal
from hsmkms.audit.files import segments
from hsmkms.audit.log import AuditLog
from hsmkms.errors import ThrottlingException
from hsmkms.keys import context as encryption_context
from hsmkms.keys import resolver
from hsmkms.library import KeyManager
from hsmkms.policy.caller import Credential


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def headers_for(access_key_id: str, region: str) -> dict[str, list[str]]:
    now = datetime.now(UTC)
    scope = f"{access_key_id}/{now:%Y%m%d}/{region}/kms/aws4_request"
    return {
        "host": ["127.0.0.1"],
        "x-amz-date": [f"{now:%Y%m%dT%H%M%SZ}"],
        "authorization": [
            f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature=00"
        ],
    }


def test_the_signing_key_cache_holds_known_regions_only_and_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sigv4, "MAX_SIGNING_KEYS", 100)
    verifier = sigv4.SigV4Verifier(lambda key: Credential(key, "secret", "arn:aws:iam::1:user/u"))
    for n in range(300):
        with pytest.raises(sigv4.InvalidSignatureException, match="valid region"):
            verifier.verify("POST", "/", "", headers_for("AKIDBOUNDS", f"zz-made-up-{n}"), b"")
    assert verifier.cached_signing_keys == 0
    for n in range(300):  # a known region, but a new access key id each time
        with pytest.raises(sigv4.InvalidSignatureException, match="does not match"):
            verifier.verify("POST", "/", "", headers_for(f"AKID{n}", "eu-west-1"), b"")
        assert verifier.cached_signing_keys <= 100


def test_rate_limit_buckets_of_quiet_principals_are_dropped() -> None:
    ticks = Ticks()
    limiter = RateLimiter(Quota(rate=1, burst=1), clock=ticks)
    principals = [f"arn:aws:iam::111122223333:user/u{n}" for n in range(MAX_BUCKETS)]
    for principal in principals:
        limiter.check(principal, "Encrypt")
    for principal in principals:  # state kept while it matters, for every one of them
        with pytest.raises(ThrottlingException):
            limiter.check(principal, "Encrypt")
    ticks.now = 10.0  # every bucket refilled: as good as new
    for n in range(100):
        limiter.check(f"arn:aws:iam::111122223333:user/new{n}", "Encrypt")
    assert limiter.buckets <= SLOTS  # a table of fixed size, whatever the principals


def test_a_full_rate_limit_table_reuses_refilled_buckets_first() -> None:
    ticks = Ticks()
    table = BucketTable(slots=PROBES)  # one probe window: every key competes for it
    limiter = RateLimiter(Quota(rate=1, burst=1), {"CreateKey": Quota(0.01, 1)}, ticks, table)
    slow = [f"arn:aws:iam::111122223333:user/slow{n}" for n in range(PROBES // 2)]
    for n in range(PROBES // 2):
        limiter.check(slow[n], "CreateKey")  # full again in 100 s
        limiter.check(f"arn:aws:iam::111122223333:user/fast{n}", "Encrypt")  # in 1 s
    ticks.now = 2.0
    for n in range(PROBES // 2):  # the table is full: these take the refilled buckets
        limiter.check(f"arn:aws:iam::111122223333:user/new{n}", "Encrypt")
    assert table.used == PROBES
    for principal in slow:
        with pytest.raises(ThrottlingException):
            limiter.check(principal, "CreateKey")


def test_key_ids_are_cached_as_spelled_but_boundedly(
    km: KeyManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resolver, "MAX_CACHED_KEY_IDS", 20)
    ids = [km.create_key()["KeyMetadata"]["KeyId"] for _ in range(15)]
    keys = km.context.keys
    keys.refresh()
    for key_id in ids:  # each key by its id and by its ARN: 30 spellings
        assert keys.cached(key_id)
        assert keys.cached(f"arn:aws:kms:us-east-1:111122223333:key/{key_id}")
        assert keys.cached_key_ids <= 21


def test_only_small_encryption_contexts_are_cached() -> None:
    before = encryption_context._canonical.cache_info().currsize
    for n in range(50):
        big = {"k": f"{n}-" + "v" * 4096}
        assert encryption_context.canonical(big) == encryption_context._encode(tuple(big.items()))
    assert encryption_context._canonical.cache_info().currsize == before


def test_refusals_from_endless_sources_stay_bounded(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    ticks = Ticks()

    def build(refusal: Refusal) -> dict[str, object]:
        return {"eventName": "Refused", "sourceIPAddress": refusal.source}

    recorder = EdgeRefusals(audit, build, max_sources=100, clock=ticks)
    error = MissingAuthenticationTokenException("Missing Authentication Token")
    for n in range(10_000):
        recorder.record(Refusal(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", error))
        assert recorder.tracked_sources <= 101  # 100 addresses, and one shared by the rest
    recorder.summarise(now=True)
    audit.close()
    records = [
        json.loads(line)
        for files in segments(tmp_path).values()
        for _, path in files
        for line in path.read_text().splitlines()
    ]
    full = [r for r in records if r["eventName"] == "Refused"]
    (summary,) = [r for r in records if r["eventName"] == "EdgeRefusalsSuppressed"]
    data = summary["additionalEventData"]
    assert len(full) <= 200  # every source together: the global budget
    assert len(full) + data["suppressed"] == 10_000
    assert data["byErrorCode"] == {"MissingAuthenticationTokenException": data["suppressed"]}
    assert len(data["bySource"]) <= 20 and UNTRACKED in data["bySource"]


def test_an_ipv6_slash_64_is_one_source(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    recorder = EdgeRefusals(audit, lambda refusal: {"eventName": "Refused"}, clock=Ticks())
    error = MissingAuthenticationTokenException("Missing Authentication Token")
    for n in range(1000):
        recorder.record(Refusal(f"2001:db8:0:7::{n:x}", error))
    recorder.record(Refusal("::ffff:192.0.2.1", error))
    assert recorder.tracked_sources == 2  # 2001:db8:0:7::/64 and 192.0.2.1
    audit.close()
