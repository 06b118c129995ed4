"""Requests the edge refuses go into the audit trail, without letting a flood grow it.

CloudTrail records failed calls, so hsmkms records what its edge refuses: a missing
or bad signature, an unknown operation, a throttled call, a body or header section
too large, a client too slow, a connection over a cap. Those are also what a flood is
made of. So each source address has a budget of full records (a token bucket: `burst`
at once, then `rate` a second), and all sources together one more; a refusal over
budget is only counted, and once per `summary_seconds` one `EdgeRefusalsSuppressed`
record says how many were left out, by error code and by source (the busiest
SUMMARY_SOURCES by address). At most `max_sources` addresses are tracked, the rest
share one entry, so memory stays bounded as well as the trail.

The recorder is one per app; the layers below the app (the HTTP protocol, the body
limit) find it in the ASGI lifespan state under STATE_KEY.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hsmkms.api.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    RequestEntityTooLargeException,
    RequestHeaderFieldsTooLarge,
    RequestTimeoutException,
    ServiceUnavailableException,
    UnknownOperationException,
    UnrecognizedClientException,
)
from hsmkms.api.xks_proxy_errors import InvalidUriPathException, MethodNotAllowed
from hsmkms.api.xks_proxy_errors import ThrottlingException as XksThrottlingException
from hsmkms.audit.log import AuditLog
from hsmkms.errors import KMSError, ThrottlingException

STATE_KEY = "hsmkms.edge_refusals"
BURST, RATE = 50.0, 1.0  # full records per source: at once, then per second
GLOBAL_BURST, GLOBAL_RATE = 200.0, 10.0  # full records of every source together
MAX_SOURCES = 1024
SUMMARY_SECONDS = 60.0
SUMMARY_SOURCES = 20
UNTRACKED = "(untracked sources)"
UNKNOWN_SOURCE = "(unknown)"

# What the edge refuses before, or instead of, running an operation.
EDGE_REFUSALS: tuple[type[KMSError], ...] = (
    MissingAuthenticationTokenException,
    IncompleteSignatureException,
    InvalidSignatureException,
    UnrecognizedClientException,
    UnknownOperationException,
    ThrottlingException,
    RequestEntityTooLargeException,
    RequestHeaderFieldsTooLarge,
    RequestTimeoutException,
    ServiceUnavailableException,
    InvalidUriPathException,  # the XKS API's: a path or method it does not serve,
    MethodNotAllowed,  # too many requests pending
    XksThrottlingException,
)


@dataclass(frozen=True)
class Refusal:
    """A request refused below the app (HTTP protocol, body limit): what is known of it."""

    source: str | None
    error: KMSError
    target: str = ""  # X-Amz-Target, when its header arrived
    headers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    path: str = "/"
    secure: bool = False


def client_of(address: str | None) -> str:
    """Who a peer address is, for per-client caps and budgets: the address, except
    that an IPv6 /64 (what one host or site gets) counts as one client."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or UNKNOWN_SOURCE
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated

    def take(self, now: float, burst: float, rate: float) -> bool:
        self.tokens = min(burst, self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class EdgeRefusals:
    def __init__(
        self,
        audit: AuditLog | None,
        build: Callable[[Refusal], dict[str, Any]],
        *,
        burst: float = BURST,
        rate: float = RATE,
        global_burst: float = GLOBAL_BURST,
        global_rate: float = GLOBAL_RATE,
        max_sources: int = MAX_SOURCES,
        summary_seconds: float = SUMMARY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """build: the audit record of a Refusal (the app's own record builder)."""
        self._audit = audit
        self._build = build
        self._burst, self._rate = burst, rate
        self._global_burst, self._global_rate = global_burst, global_rate
        self._max_sources = max_sources
        self._summary_seconds = summary_seconds
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._global = _Bucket(global_burst, clock())
        self._suppressed: dict[str, Counter[str]] = {}  # source -> error code -> count
        self._first: datetime | None = None  # the first one suppressed since the last summary
        self._last: datetime | None = None
        self._summarised_at = clock()
        self._pruned_at = float("-inf")
        self._lock = threading.Lock()

    @property
    def tracked_sources(self) -> int:
        return len(self._buckets)

    def should_record(self, source: str | None, failure: KMSError | None) -> bool:
        """Whether a call's record goes into the trail: always, unless it is a refusal
        at the edge over its source's budget (then it is counted for the summary)."""
        if failure is None or not isinstance(failure, EDGE_REFUSALS):
            return True
        self.summarise()
        now = self._clock()
        with self._lock:
            name = self._source_entry(client_of(source), now)
            bucket = self._buckets.get(name)
            if bucket is None:
                bucket = self._buckets[name] = _Bucket(self._burst, now)
            if bucket.take(now, self._burst, self._rate) and self._global.take(
                now, self._global_burst, self._global_rate
            ):
                return True
            if name not in self._suppressed and len(self._suppressed) >= self._max_sources:
                name = UNTRACKED
            self._suppressed.setdefault(name, Counter())[failure.code] += 1
            self._last = datetime.now(UTC)
            self._first = self._first or self._last
            return False

    def record(self, refusal: Refusal) -> None:
        """Record a refusal made below the app, within its source's budget."""
        if self._audit is not None and self.should_record(refusal.source, refusal.error):
            self._audit.submit(self._build(refusal))

    def summarise(self, *, now: bool = False) -> None:
        """Write the summary of what was left out, once it is due (`now`: at once)."""
        clock = self._clock()
        if not now and clock - self._summarised_at < self._summary_seconds:
            return
        with self._lock:
            self._summarised_at = clock
            suppressed, self._suppressed = self._suppressed, {}
            first, last, self._first, self._last = self._first, self._last, None, None
            self._forget_full_buckets(clock)
        if suppressed and self._audit is not None:
            self._audit.submit(_summary(suppressed, first, last))

    def _source_entry(self, source: str, now: float) -> str:
        """The bucket a source counts against: its own, or the untracked sources' one."""
        if source in self._buckets or len(self._buckets) < self._max_sources:
            return source
        if now - self._pruned_at >= 1.0:  # a scan a second at most, however many sources
            self._pruned_at = now
            self._forget_full_buckets(now)
        return source if len(self._buckets) < self._max_sources else UNTRACKED

    def _forget_full_buckets(self, now: float) -> None:
        """A bucket refilled to its burst is the same as none: drop it."""
        full = [
            name
            for name, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * self._rate >= self._burst
        ]
        for name in full:
            del self._buckets[name]


def _summary(
    suppressed: Mapping[str, Counter[str]], first: datetime | None, last: datetime | None
) -> dict[str, Any]:
    by_source = sorted(
        ((source, sum(codes.values())) for source, codes in suppressed.items()),
        key=lambda item: -item[1],
    )
    by_code: Counter[str] = Counter()
    for codes in suppressed.values():
        by_code.update(codes)
    shown = dict(by_source[:SUMMARY_SOURCES])
    return {
        "eventVersion": "1.08",
        "eventSource": "hsmkms.edge",
        "eventName": "EdgeRefusalsSuppressed",
        "eventType": "hsmkmsServiceEvent",
        "userIdentity": None,
        "readOnly": True,
        "additionalEventData": {
            "suppressed": sum(by_code.values()),
            "byErrorCode": dict(by_code),
            "bySource": shown,
            "fromOtherSources": sum(count for _, count in by_source[SUMMARY_SOURCES:]),
            "firstSuppressed": first.isoformat() if first else None,
            "lastSuppressed": last.isoformat() if last else None,
        },
    }


# The headers a refusal's record reads (the operation, the access key id claimed).
RECORDED_HEADERS = ("x-amz-target", "authorization")


def scope_refusal(scope: Mapping[str, Any], error: KMSError) -> Refusal:
    """A refusal of an ASGI HTTP request, from its scope."""
    headers: dict[str, list[str]] = {}
    for raw_name, value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        if name in RECORDED_HEADERS:
            headers.setdefault(name, []).append(value.decode("latin-1"))
    client = scope.get("client")
    return Refusal(
        client[0] if client else None,
        error,
        (headers.get("x-amz-target") or [""])[0],
        headers,
        scope.get("path", "/"),
        scope.get("scheme") == "https",
    )


def refusals_of(state: Mapping[str, Any] | None) -> EdgeRefusals | None:
    """The app's recorder, from the ASGI lifespan state (None: the app keeps none)."""
    recorder = (state or {}).get(STATE_KEY)
    return recorder if isinstance(recorder, EdgeRefusals) else None
