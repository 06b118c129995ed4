"""The audit trail: append-only JSON lines, CloudTrail-shaped, hash-chained, checkpointed.

Each record carries `auditSequence` (1, 2, 3, ... along its chain), `previousHash` and
its own `hash` (SHA-256 over the canonical JSON of the record without `hash`), so
editing, dropping, inserting or reordering records breaks the chain; token-signed
checkpoints (hsmkms.audit.checkpoint) stop the tail being cut or the chain rewritten,
and with the token's record of each trail (hsmkms.audit.trails) a log with a token
never writes a trail other than the one the token holds as active: a deleted, swapped
or replaced trail stops every writer until an operator retires it. Each process writes
its own chain (hsmkms.audit.files), so servers sharing a data dir never interleave.
Files rotate by size and age; a new file's first record chains to the last record of
the one before.

A writer thread appends. Durability `sync`: `record` returns (and `submit`'s future
completes) only once the record is fsync'd; records that arrive while one fsync runs
share the next one (group commit), and while requests that will record are still being
handled (`coming`, counted by the edge) the writer waits briefly for theirs. `async`:
`record` only queues, and the writer fsyncs in batches; a power cut can lose the last
~50 ms of records, never reorder them. A torn last record (a power cut mid-append) is
moved aside at start and the recovery itself is recorded. No secret ever enters a
record: request parameters are copied from an allow-list and never include plaintext,
ciphertext, MACs or signatures.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_for
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hsmkms.audit.checkpoint import Anchor, CheckpointWriter
from hsmkms.audit.files import (
    claim_chain,
    node_name,
    open_tail,
    sealed_line,
    segment_name,
    sync_directory,
    trail_id,
)
from hsmkms.audit.trails import open_trail
from hsmkms.audit.verify import Verification, verify
from hsmkms.config import AuditSettings

if TYPE_CHECKING:  # asyncio only for its types: CLI commands never load it
    import asyncio

__all__ = ["AuditLog", "Verification", "request_parameters", "verify"]

log = logging.getLogger("hsmkms.audit")

Durability = Literal["sync", "async"]
BATCH_SECONDS = 0.05  # async mode: let a batch gather, one fsync for many
# sync mode, while requests that will record are still being handled: how long the writer
# lets their records join the batch (one fsync and one loop wake-up for all). Workers hand
# calls back ~1-3 ms apart: 0.5 ms gathered nothing, 4 ms cut the CPU per request 7-16 %.
GATHER_SECONDS = 0.004
DEFAULT_ROTATE_BYTES = 64 * 1024 * 1024
DEFAULT_ROTATE_SECONDS = 24 * 3600.0
DEFAULT_CHECKPOINT_RECORDS = 1000
DEFAULT_CHECKPOINT_SECONDS = 60.0
LOGGED_PARAMETERS = frozenset({
    "KeyId", "EncryptionContext", "SourceEncryptionContext", "DestinationEncryptionContext",
    "EncryptionAlgorithm", "SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm",
    "SigningAlgorithm", "MacAlgorithm", "MessageType", "KeySpec", "KeyUsage", "KeyPairSpec",
    "NumberOfBytes", "AliasName", "TargetKeyId", "DestinationKeyId", "SourceKeyId",
    "GranteePrincipal", "RetiringPrincipal", "Operations", "GrantId", "PendingWindowInDays",
    "RotationPeriodInDays", "Origin", "MultiRegion", "PolicyName", "KeyAgreementAlgorithm",
    "TagKeys", "Limit", "BypassPolicyLockoutSafetyCheck", "Description",
    # imported material: never ImportToken or EncryptedKeyMaterial
    "WrappingAlgorithm", "WrappingKeySpec", "ExpirationModel", "ImportType",
    "KeyMaterialId", "IncludeKeyMaterial",
    # policies are not secrets, and say who may do what (CloudTrail records them too)
    "Policy", "PolicyDocument",
    # operator commands (hsmkms.cli.registry): never a secret access key or a PIN
    "PrincipalArn", "AccessKeyId", "Status", "Tags", "XksProxyUriPath", "CloudHsmClusterId",
    "TokenLabel", "Module", "Host", "Url", "TokenCreated", "Database", "Scope", "Trail",
    "RetiredTrails", "Reason", "Custodians", "Threshold", "Domain", "CheckValue", "File",
    "AccessKeyIds", "PolicyNames", "GrantIds", "AcceptUnenforcedTemplates",
    "UnenforcedProtections",
    # hsmkms apply: whether it only planned, and how many changes of each kind it made
    "Plan", "Changes",
})  # fmt: skip

# Who waits for a record: a thread (a Future), or a task on an event loop (its loop and
# an asyncio future, completed for the whole batch by one call on that loop).
_Waiter = tuple["asyncio.AbstractEventLoop", "asyncio.Future[None]"]
_Item = tuple[dict[str, Any] | None, "Future[None] | _Waiter | None"]
_STOP: _Item = (None, None)


def request_parameters(members: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in members.items() if k in LOGGED_PARAMETERS}


def _started(path: Path) -> float:
    """When a record file began: its first record's eventTime (now for a new file)."""
    try:
        with path.open("rb") as handle:
            first = handle.readline()
        stamp = first.split(b'"eventTime":"', 1)[1].split(b'"', 1)[0].decode()
        return datetime.fromisoformat(stamp).timestamp()
    except (OSError, IndexError, ValueError):
        return time.time()


class AuditLog:
    @classmethod
    def configured(
        cls, directory: Path, settings: AuditSettings, anchor: Anchor | None
    ) -> AuditLog:
        """The trail as the configuration's audit group says."""
        return cls(directory, anchor=anchor, **settings.model_dump(exclude={"scope"}))

    def __init__(
        self,
        directory: Path,
        *,
        anchor: Anchor | None = None,
        node_id: str | None = None,
        durability: Durability = "sync",
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
        rotate_seconds: float = DEFAULT_ROTATE_SECONDS,
        checkpoint_records: int = DEFAULT_CHECKPOINT_RECORDS,
        checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
    ) -> None:
        """With an anchor, refuses (AuditTrailConflictException) to write a trail the
        token does not hold as the anchor's scope's active one (hsmkms.audit.trails)."""
        if durability not in ("sync", "async"):
            raise ValueError(f"audit durability must be 'sync' or 'async', not {durability!r}")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.durability: Durability = durability
        self._rotate_bytes, self._rotate_seconds = rotate_bytes, rotate_seconds
        self._checkpoint_records, self._checkpoint_seconds = checkpoint_records, checkpoint_seconds
        self.chain, self._lock = claim_chain(directory, node_name(node_id))
        self._checkpoints: CheckpointWriter | None = None
        try:
            if anchor is None:
                self.trail = trail_id(directory, create=True) or ""
            else:
                self.trail, held = open_trail(directory, anchor)
                in_token = held.checkpoints.get(self.trail, {}).get(self.chain, [])
                self._checkpoints = CheckpointWriter(
                    directory, self.trail, self.chain, anchor, in_token
                )
        except BaseException:
            self._lock.close()
            raise
        tail = open_tail(directory, self.chain)
        self._index, self._sequence, self._head = tail.index, tail.sequence, tail.head
        if self._checkpoints is not None and self._checkpoints.number == 0:
            # The token learns of the chain before its first record: verify knows a
            # chain without any checkpoint for a forgery.
            first_file = segment_name(self.chain, self._index)
            self._checkpoints.write(self._sequence, self._head, first_file)
        self._checkpoint_at = time.monotonic()
        self._open_segment()
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._closed = False
        # Requests being handled that will submit a record soon (the edge counts them):
        # a hint for the writer's group commit, read without a lock.
        self.coming = 0
        self._gathering, self._all_in = False, threading.Event()
        self._writer = threading.Thread(target=self._run, name="hsmkms-audit", daemon=True)
        self._writer.start()
        covered = self._checkpoints.sequence if self._checkpoints else 0
        if tail.torn is not None or covered > self._sequence:
            self.submit(self._recovery_event(tail.torn, tail.torn_bytes, covered))

    # -- the API -----------------------------------------------------------------------

    def submit(self, event: dict[str, Any]) -> Future[None] | None:
        """Queue one event. In sync mode, returns a future that completes once the record
        is on disk (or fails with the write's error); in async mode, None."""
        event.setdefault("eventTime", datetime.now(UTC).isoformat())
        done: Future[None] | None = Future() if self.durability == "sync" else None
        if self._closed:  # no writer left: fail loudly rather than wait forever
            log.error("audit record after close: %s", event.get("eventName"))
            if done is not None:
                done.set_exception(OSError("the audit log is closed"))
            return done
        self._queue.put((event, done))
        self._arrived()
        return done

    def submit_awaitable(
        self, event: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[None] | None:
        """`submit` for a task on `loop`: in sync mode, an asyncio future of that loop,
        done once the record is on disk. The writer completes every such future of a
        batch in one call on the loop: one wake-up per fsync, not one per record."""
        event.setdefault("eventTime", datetime.now(UTC).isoformat())
        if self.durability != "sync":
            self.submit(event)
            return None
        done: asyncio.Future[None] = loop.create_future()
        if self._closed:
            log.error("audit record after close: %s", event.get("eventName"))
            done.set_exception(OSError("the audit log is closed"))
            return done
        self._queue.put((event, (loop, done)))
        self._arrived()
        return done

    def _arrived(self) -> None:
        if self._gathering and self.coming <= 0:
            self._all_in.set()  # every record the writer gathers for is queued

    def record(self, event: dict[str, Any]) -> None:
        """Record one event; in sync mode, returns once it is durable."""
        done = self.submit(event)
        if done is not None:
            done.result()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every event queued before this call is on disk."""
        if self._closed:
            return  # close() wrote everything
        marker: Future[None] = Future()
        self._queue.put((None, marker))
        wait_for([marker], timeout)

    def close(self) -> None:
        """Write what is queued, a final checkpoint, and give the chain up."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join(timeout=30)
        self._lock.close()

    # -- the writer thread -------------------------------------------------------------

    def _open_segment(self) -> None:
        self.path = self.directory / segment_name(self.chain, self._index)
        new = not self.path.exists()
        self._out = self.path.open("ab")
        if new:
            os.chmod(self.path, 0o600)
            sync_directory(self.directory)
        self._started = _started(self.path)

    def _run(self) -> None:
        while True:
            try:
                batch = [self._queue.get(timeout=self._wait_seconds())]
            except queue.Empty:
                self._checkpoint_if_due()
                continue
            self._take_waiting(batch)
            if self.durability == "sync":
                self._gather(batch)
            stop = any(item is _STOP for item in batch)
            wrote = self._write(batch)
            self._checkpoint_if_due(force=stop)
            if stop:
                self._out.close()
                return
            if wrote and self.durability == "async":
                time.sleep(BATCH_SECONDS)

    def _take_waiting(self, batch: list[_Item]) -> None:
        """What is queued, without a timed wait per record."""
        try:
            while len(batch) < 4096:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass

    def _gather(self, batch: list[_Item]) -> None:
        """Group commit: while requests that will record are still being handled, let
        their records join this batch (one fsync and one loop wake-up for all), up to
        GATHER_SECONDS; nothing in flight (concurrency 1): no wait at all. The writer
        sleeps until the last of them is queued (`_arrived`), not once per record."""
        if self.coming <= 0 or any(item is _STOP for item in batch):
            return
        self._all_in.clear()
        self._gathering = True  # before the check: a record queued from now on wakes it
        try:
            if self.coming > 0:
                self._all_in.wait(GATHER_SECONDS)
        finally:
            self._gathering = False
        self._take_waiting(batch)

    def _wait_seconds(self) -> float | None:
        """Idle: wake up for a time-based checkpoint when records await one."""
        if self._checkpoints is None or self._sequence == self._checkpoints.sequence:
            return None
        return max(0.01, self._checkpoint_at + self._checkpoint_seconds - time.monotonic())

    def _write(self, batch: list[_Item]) -> bool:
        done = [waiter for _, waiter in batch if waiter is not None]
        events = [event for event, _ in batch if event is not None]
        sequence, head, size = self._sequence, self._head, self._out.tell()
        try:
            if events:
                self._rotate_if_due()
                sequence, head, size = self._sequence, self._head, self._out.tell()
                lines = []
                for event in events:
                    self._sequence += 1
                    numbered = {**event, "auditSequence": self._sequence}
                    line, self._head = sealed_line(numbered, self._head)
                    lines.append(line)
                self._out.write(b"".join(lines))
                self._out.flush()
                os.fsync(self._out.fileno())
        except Exception as exc:  # disk full, I/O error: the waiting requests learn it
            log.exception("audit records could not be written")
            self._sequence, self._head = sequence, head
            try:
                self._out.truncate(size)
            except OSError:
                log.exception("could not cut a half-written audit batch")
            _settle(done, exc)
            return False
        _settle(done, None)
        return bool(events)

    def _rotate_if_due(self) -> None:
        size = self._out.tell()
        aged = time.time() - self._started >= self._rotate_seconds
        if size == 0 or (size < self._rotate_bytes and not aged):
            return
        self._checkpoint_if_due(force=True)  # every finished file is covered
        self._out.close()
        self._index += 1
        self._open_segment()

    def _checkpoint_if_due(self, force: bool = False) -> None:
        if self._checkpoints is None:
            return
        pending = self._sequence - self._checkpoints.sequence
        due = (
            pending >= self._checkpoint_records
            or (pending > 0 and force)
            or (pending > 0 and time.monotonic() - self._checkpoint_at >= self._checkpoint_seconds)
        )
        if not due:
            return
        self._checkpoint_at = time.monotonic()
        try:
            self._checkpoints.write(self._sequence, self._head, self.path.name)
        except Exception:  # the token is away: records stay uncovered until the next try
            log.exception("audit checkpoint failed; retrying in %.0f s", self._checkpoint_seconds)

    def _recovery_event(self, torn: Path | None, torn_bytes: int, covered: int) -> dict[str, Any]:
        """Said in the trail itself: what start-up found at the end of this chain."""
        data: dict[str, Any] = {"chain": self.chain, "lastRecord": self._sequence,
                                "lastCheckpoint": covered}  # fmt: skip
        if torn is not None:
            data.update(tornFile=torn.name, tornBytes=torn_bytes)
        if covered > self._sequence:
            data["missingCoveredRecords"] = f"{self._sequence + 1}-{covered}"
        return {
            "eventVersion": "1.08",
            "eventSource": "hsmkms.audit",
            "eventName": "AuditTrailRecovered",
            "eventType": "hsmkmsServiceEvent",
            "userIdentity": None,
            "readOnly": False,
            "additionalEventData": data,
        }


def _settle(waiters: list[Future[None] | _Waiter], error: BaseException | None) -> None:
    """Tell a batch's waiters: threads directly, each event loop once for all its own."""
    loops: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for waiter in waiters:
        if isinstance(waiter, Future):
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
        else:
            loops.setdefault(waiter[0], []).append(waiter[1])
    for loop, futures in loops.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there now
            loop.call_soon_threadsafe(_settle_on_loop, futures, error)


def _settle_on_loop(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # its request was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
