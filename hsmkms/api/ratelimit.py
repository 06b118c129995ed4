"""Per-principal request quotas: a token bucket per (principal, quota), so one
client cannot starve the others.

Like AWS KMS, a request over quota gets ThrottlingException (HTTP 400, which
AWS SDKs retry with backoff) with KMS's wording. A principal's requests share
one default quota; an operation may have a quota of its own (KMS gives CreateKey
and the like far lower rates than cryptographic operations), counted apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from hsmkms.config import Quota, RateLimits
from hsmkms.errors import ThrottlingException

MAX_BUCKETS = 10_000  # beyond, buckets refilled to their burst are dropped (they are as new)
THROTTLED = (
    "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."
)


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    def __init__(
        self,
        default: Quota | None,
        per_operation: Mapping[str, Quota] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """default: every principal's quota (None: unlimited, except per_operation)."""
        self._default = default
        self._per_operation = dict(per_operation or {})
        self._clock = clock
        # Keyed by authenticated principals only, so bounded by them; pruned beyond MAX_BUCKETS.
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._pruned_at = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def configured(cls, limits: RateLimits) -> RateLimiter | None:
        """None when nothing is limited (rate 0 and no per-operation quota)."""
        if limits.rate <= 0 and not limits.per_operation:
            return None
        default = None
        if limits.rate > 0:
            default = Quota(limits.rate, limits.burst or max(limits.rate, 1.0))
        return cls(default, limits.per_operation)

    def check(self, principal: str, operation: str) -> None:
        """Take one request from the principal's bucket, or raise ThrottlingException."""
        quota = self._per_operation.get(operation)
        scope = operation if quota is not None else ""
        quota = quota or self._default
        if quota is None:
            return
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get((principal, scope))
            if bucket is None:
                if len(self._buckets) >= MAX_BUCKETS and now - self._pruned_at >= 1.0:
                    self._pruned_at = now  # a scan a second at most
                    self._forget_full_buckets(now)
                bucket = self._buckets[(principal, scope)] = _Bucket(quota.burst, now)
            bucket.tokens = min(quota.burst, bucket.tokens + (now - bucket.updated) * quota.rate)
            bucket.updated = now
            if bucket.tokens < 1:
                raise ThrottlingException(THROTTLED)
            bucket.tokens -= 1

    @property
    def buckets(self) -> int:
        return len(self._buckets)

    def _forget_full_buckets(self, now: float) -> None:
        for (principal, scope), bucket in list(self._buckets.items()):
            quota = self._per_operation.get(scope) if scope else self._default
            if quota is None or bucket.tokens + (now - bucket.updated) * quota.rate >= quota.burst:
                del self._buckets[(principal, scope)]
