"""Per-principal request quotas: a token bucket per (principal, quota), so one
client cannot starve the others.

Like AWS KMS, a request over quota gets ThrottlingException (HTTP 400, which
AWS SDKs retry with backoff) with KMS's wording. A principal's requests share
one default quota; an operation may have a quota of its own (KMS gives CreateKey
and the like far lower rates than cryptographic operations), counted apart.

The buckets live in one fixed-size table (`BucketTable`) in memory mapped by every
process of one `hsmkms serve`: private memory when it serves alone, the file
`rate-buckets` of the workers' shared directory (hsmkms.api.shared) when it runs
several, so that a quota holds for the server as a whole. Dividing the quota by the
number of processes instead would be wrong, not approximate: the kernel hands a
connection to whichever worker accepts it, and a client with one kept-alive
connection stays on one worker, so it would get 1/N of its quota. A request takes
the table's lock (a thread lock, then `flock` between processes: released by the
kernel if a worker dies holding it) for a few microseconds.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from hsmkms.api.shared import RATE_TABLE, shared_dir
from hsmkms.config import Quota, RateLimits
from hsmkms.errors import ThrottlingException

# Principals whose buckets are kept exactly, however many others there are (the table
# has SLOTS, so it stays sparse enough for its probe windows never to be full).
MAX_BUCKETS = 10_000
SLOTS = 65_536  # 2.5 MiB
PROBES = 16  # slots a bucket may sit in after its hash's
THROTTLED = (
    "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."
)
# A slot: digest of principal and scope (all zero: empty), tokens, last update and the
# time it is full again (monotonic seconds: CLOCK_MONOTONIC, the same in every process).
_SLOT = struct.Struct("<16sddd")
_FULL_AT = struct.Struct("<d")
_EMPTY = bytes(16)
_T = TypeVar("_T")


class BucketTable:
    """Token buckets by key in a fixed table: open addressing, `PROBES` slots from the
    key's hash. A new key takes the first empty slot there, or else the bucket closest
    to being full again (one that is full is as good as new: forgetting it changes
    nothing). `path`: a file mapped by every process that opens it; None: this
    process's memory."""

    def __init__(self, path: Path | None = None, slots: int = SLOTS) -> None:
        self.slots = slots
        size = slots * _SLOT.size
        self._fd: int | None = None
        if path is None:
            self._map = mmap.mmap(-1, size)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_size != size:  # the first process to open it
                    os.ftruncate(fd, size)
                fcntl.flock(fd, fcntl.LOCK_UN)
                self._map = mmap.mmap(fd, size)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        self._lock = threading.Lock()
        self._digests: dict[str, bytes] = {}  # keys are authenticated principals: few

    def take(self, key: str, quota: Quota, clock: Callable[[], float]) -> bool:
        """Take one token from `key`'s bucket; False when it has none."""
        return self._locked(key, lambda digest: self._take(digest, quota, clock()))

    def wait(self, key: str, quota: Quota, clock: Callable[[], float]) -> float:
        """Seconds until `key`'s bucket has a token (0: now), taking none."""
        return self._locked(key, lambda digest: self._wait(digest, quota, clock()))

    def refill(self, key: str, quota: Quota, clock: Callable[[], float]) -> None:
        """`key`'s bucket full again, as if it had never been used."""
        self._locked(key, lambda digest: self._store(digest, quota, quota.burst, clock()))

    def give_back(self, key: str, quota: Quota, clock: Callable[[], float]) -> None:
        """One token back into `key`'s bucket (never above its burst)."""

        def give(digest: bytes) -> None:
            now = clock()
            offset, tokens = self._tokens(digest, quota, now)
            self._store(digest, quota, min(quota.burst, tokens + 1), now, offset)

        self._locked(key, give)

    def _locked(self, key: str, work: Callable[[bytes], _T]) -> _T:
        digest = self._digests.get(key)
        if digest is None:
            if len(self._digests) >= MAX_BUCKETS:
                self._digests.clear()
            digest = self._digests[key] = hashlib.blake2b(key.encode(), digest_size=16).digest()
        with self._lock:  # flock does not exclude the threads of one process
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                return work(digest)
            finally:
                if self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _tokens(self, digest: bytes, quota: Quota, now: float) -> tuple[int, float]:
        """The offset of `digest`'s slot and the tokens its bucket has now."""
        offset = self._find(digest)
        stored, tokens, updated, _ = _SLOT.unpack_from(self._map, offset)
        if stored != digest:
            return offset, quota.burst
        return offset, min(quota.burst, tokens + max(0.0, now - updated) * quota.rate)

    def _take(self, digest: bytes, quota: Quota, now: float) -> bool:
        offset, tokens = self._tokens(digest, quota, now)
        allowed: bool = tokens >= 1
        self._store(digest, quota, tokens - 1 if allowed else tokens, now, offset)
        return allowed

    def _wait(self, digest: bytes, quota: Quota, now: float) -> float:
        _, tokens = self._tokens(digest, quota, now)
        return 0.0 if tokens >= 1 else (1 - tokens) / quota.rate

    def _store(
        self, digest: bytes, quota: Quota, tokens: float, now: float, offset: int | None = None
    ) -> None:
        offset = self._find(digest) if offset is None else offset
        full_at = now + (quota.burst - tokens) / quota.rate
        _SLOT.pack_into(self._map, offset, digest, tokens, now, full_at)

    @property
    def used(self) -> int:
        """Slots holding a bucket."""
        view = bytes(self._map)
        return sum(view[n : n + 16] != _EMPTY for n in range(0, len(view), _SLOT.size))

    def _find(self, digest: bytes) -> int:
        """The offset of `digest`'s slot, an empty one, or the one to reuse. Slots are
        never emptied, so a key is never stored past an empty slot of its window."""
        first = int.from_bytes(digest[:8], "little") % self.slots
        reuse, reuse_full_at = 0, float("inf")
        for probe in range(PROBES):
            offset = ((first + probe) % self.slots) * _SLOT.size
            stored = self._map[offset : offset + 16]
            if stored in (digest, _EMPTY):
                return offset
            (full_at,) = _FULL_AT.unpack_from(self._map, offset + 32)
            if full_at < reuse_full_at:
                reuse, reuse_full_at = offset, full_at
        return reuse


class RateLimiter:
    def __init__(
        self,
        default: Quota | None,
        per_operation: Mapping[str, Quota] | None = None,
        clock: Callable[[], float] = time.monotonic,
        table: BucketTable | None = None,
    ) -> None:
        """default: every principal's quota (None: unlimited, except per_operation);
        table: where the buckets are (default: this process's own)."""
        self._default = default
        self._per_operation = dict(per_operation or {})
        self._clock = clock
        # Keyed by authenticated principals only; fixed in size whatever they send.
        self._table = table or BucketTable()

    @classmethod
    def configured(cls, limits: RateLimits) -> RateLimiter | None:
        """None when nothing is limited (rate 0 and no per-operation quota). In a worker
        of `serve --workers N`, the buckets are the server's, shared by its workers."""
        if limits.rate <= 0 and not limits.per_operation:
            return None
        default = None
        if limits.rate > 0:
            default = Quota(limits.rate, limits.burst or max(limits.rate, 1.0))
        return cls(default, limits.per_operation, table=server_buckets())

    def check(self, principal: str, operation: str) -> None:
        """Take one request from the principal's bucket, or raise ThrottlingException."""
        quota = self._per_operation.get(operation)
        scope = operation if quota is not None else ""
        quota = quota or self._default
        if quota is None:
            return
        if not self._table.take(f"{principal}\0{scope}", quota, self._clock):
            raise ThrottlingException(THROTTLED)

    @property
    def buckets(self) -> int:
        return self._table.used


def server_buckets() -> BucketTable:
    """Where a server's buckets are: in a worker of `serve --workers N`, the file every
    worker maps (opened once per process), so that quotas and the console's sign-in
    throttle hold for the server, not per process; else a table of the caller's own."""
    directory = shared_dir()
    return BucketTable() if directory is None else _shared_table(str(directory / RATE_TABLE))


@functools.cache
def _shared_table(path: str) -> BucketTable:
    return BucketTable(Path(path))
