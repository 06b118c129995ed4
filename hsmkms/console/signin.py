"""Signing in to the console: an access key id and its secret, checked against the same
stored credentials SigV4 uses (unwrapped inside the token, Inactive keys refused), in
constant time; failed attempts throttled per source address and per access key id.

The throttle is per process (`--workers N` gives a client N times the attempts, still a
bounded number per window); every failure is also in the audit trail, within the
edge's budget for refusals.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import deque
from collections.abc import Callable

from hsmkms.api.refusals import client_of
from hsmkms.policy.caller import Credential
from hsmkms.policy.principals import CredentialStore

MAX_TRACKED = 10_000  # sources and key ids followed at once; a bound, not a quota
_NO_SECRET = b"\0" * 40  # compared against when there is no credential: same work either way


def check_credentials(
    credentials: CredentialStore, access_key_id: str, secret: str
) -> Credential | None:
    """The active credential whose secret is `secret`, or None (unknown, inactive or a
    wrong secret: the caller learns no more than that)."""
    credential = credentials.lookup(access_key_id)
    expected = _NO_SECRET if credential is None else credential.secret_access_key.encode()
    # Digests first: equal lengths, so the comparison says nothing about the secret's.
    matches = hmac.compare_digest(
        hashlib.sha256(expected).digest(), hashlib.sha256(secret.encode()).digest()
    )
    return credential if credential is not None and matches else None


class SignInThrottle:
    def __init__(
        self, failures: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._failures = failures
        self._window = window_seconds
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, source: str | None, access_key_id: str) -> float:
        """0 when a sign-in may be tried now, else how long until it may."""
        now = self._clock()
        with self._lock:
            waits = [self._wait(name, now) for name in self._names(source, access_key_id)]
        return max(waits)

    def failed(self, source: str | None, access_key_id: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._seen) >= MAX_TRACKED:
                self._prune(now)
            for name in self._names(source, access_key_id):
                self._seen.setdefault(name, deque(maxlen=self._failures)).append(now)

    def succeeded(self, access_key_id: str) -> None:
        with self._lock:
            self._seen.pop(f"key:{access_key_id}", None)

    def _names(self, source: str | None, access_key_id: str) -> tuple[str, str]:
        return f"source:{client_of(source)}", f"key:{access_key_id[:128]}"

    def _wait(self, name: str, now: float) -> float:
        times = self._seen.get(name)
        if times is None or len(times) < self._failures:
            return 0.0
        return max(0.0, times[0] + self._window - now)

    def _prune(self, now: float) -> None:
        stale = [name for name, times in self._seen.items() if times[-1] + self._window <= now]
        for name in stale:
            del self._seen[name]
        if len(self._seen) >= MAX_TRACKED:  # all recent: forget the oldest half
            for name in sorted(self._seen, key=lambda n: self._seen[n][-1])[: MAX_TRACKED // 2]:
                del self._seen[name]
