"""Signing in to the console: an access key id and its secret, checked against the same
stored credentials SigV4 uses (unwrapped inside the token, Inactive keys refused), in
constant time; failed attempts throttled per source address and per access key id.

The throttle holds for the server, across its worker processes; every failure is also
in the audit trail, within the edge's budget for refusals.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from hsmkms.api.ratelimit import BucketTable, server_buckets
from hsmkms.api.refusals import client_of
from hsmkms.config import Quota
from hsmkms.policy.caller import Credential
from hsmkms.policy.principals import CredentialStore

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
    """Failed sign-ins per source address and per access key id, in token buckets of the
    server's bucket table (api/ratelimit.py): `failures` at once, then one more every
    `window_seconds / failures`. In `serve --workers N` the table is the workers' shared
    one, so the throttle holds for the server whichever worker a client reaches."""

    def __init__(
        self,
        failures: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        table: BucketTable | None = None,
    ) -> None:
        self._quota = Quota(rate=failures / window_seconds, burst=float(failures))
        self._clock = clock
        self._table = table or server_buckets()

    def attempt(self, source: str | None, access_key_id: str) -> float:
        """One sign-in attempt taken from the address's and the key id's budgets, each
        in one step under the table's lock, so attempts made at once (on any worker)
        cannot overrun them: 0 when it may check the secret, else seconds to wait."""
        return max(self._take(name) for name in self._names(source, access_key_id))

    def succeeded(self, source: str | None, access_key_id: str) -> None:
        """Only failed attempts count: the key id's budget is full again, the address
        gets its attempt back."""
        source_name, key_name = self._names(source, access_key_id)
        self._table.refill(key_name, self._quota, self._clock)
        self._table.give_back(source_name, self._quota, self._clock)

    def _take(self, name: str) -> float:
        if self._table.take(name, self._quota, self._clock):
            return 0.0
        return max(self._table.wait(name, self._quota, self._clock), 0.001)

    def _names(self, source: str | None, access_key_id: str) -> tuple[str, str]:
        return (
            f"console-signin\0source:{client_of(source)}",
            f"console-signin\0key:{access_key_id[:128]}",
        )
