"""The audit trail: append-only JSON lines, CloudTrail-shaped, hash-chained.

Each record carries `previousHash` and its own `hash` (SHA-256 over the canonical
JSON of the record without `hash`), so editing, dropping or reordering records
breaks the chain, and `hsmkms audit verify` names the first bad one.

Writing never blocks a request: records are queued, and a writer thread appends
them in batches and fsyncs each batch (records of the last ~50 ms can be lost in a
power cut, never half-written or reordered). No secret ever enters a record: request
parameters are copied from an allow-list (key ids, algorithms, encryption context,
...) and never include plaintext, ciphertext, MACs or signatures.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "hsmkms-audit.jsonl"
GENESIS = "0" * 64
BATCH_SECONDS = 0.05
LOGGED_PARAMETERS = frozenset({
    "KeyId", "EncryptionContext", "SourceEncryptionContext", "DestinationEncryptionContext",
    "EncryptionAlgorithm", "SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm",
    "SigningAlgorithm", "MacAlgorithm", "MessageType", "KeySpec", "KeyUsage", "KeyPairSpec",
    "NumberOfBytes", "AliasName", "TargetKeyId", "DestinationKeyId", "SourceKeyId",
    "GranteePrincipal", "RetiringPrincipal", "Operations", "GrantId", "PendingWindowInDays",
    "RotationPeriodInDays", "Origin", "MultiRegion", "PolicyName", "KeyAgreementAlgorithm",
    "TagKeys", "Limit", "BypassPolicyLockoutSafetyCheck", "Description",
})  # fmt: skip


def _canonical(record: Mapping[str, Any]) -> str:
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def _digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(record).encode()).hexdigest()


def _seal(event: Mapping[str, Any], previous: str) -> tuple[str, str]:
    """One serialisation serves both the hash and the line: the canonical JSON of the
    record, with its hash appended as the last member."""
    body = _canonical({**event, "previousHash": previous})
    digest = hashlib.sha256(body.encode()).hexdigest()
    return body[:-1] + f',"hash":"{digest}"}}\n', digest


def request_parameters(members: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in members.items() if k in LOGGED_PARAMETERS}


class AuditLog:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = directory / FILE_NAME
        self._last_hash = _last_hash(self.path)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._writer = threading.Thread(target=self._run, name="hsmkms-audit", daemon=True)
        self._writer.start()

    def record(self, event: dict[str, Any]) -> None:
        """Queue one event; the writer chains, appends and fsyncs it."""
        self._idle.clear()
        self._queue.put(event)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued event is on disk."""
        self._queue.put({})  # a marker: the writer sets idle once it has passed it
        self._idle.wait(timeout)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._writer.join(timeout=10)

    def _run(self) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            os.chmod(self.path, 0o600)
            while True:
                batch = [self._queue.get()]
                try:  # take what is waiting, without a timed wait per record
                    while len(batch) < 4096:
                        batch.append(self._queue.get_nowait())
                except queue.Empty:
                    pass
                stop = any(event is None for event in batch)
                lines = []
                for event in batch:
                    if not event:
                        continue  # a flush marker or the stop signal
                    line, self._last_hash = _seal(event, self._last_hash)
                    lines.append(line)
                if lines:
                    out.write("".join(lines))
                    out.flush()
                    os.fsync(out.fileno())
                if self._queue.empty():
                    self._idle.set()
                if stop:
                    return
                if lines:
                    time.sleep(BATCH_SECONDS)  # let the next batch gather: one fsync for many


def _last_hash(path: Path) -> str:
    if not path.exists() or path.stat().st_size == 0:
        return GENESIS
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 65536))
        tail = handle.read().splitlines()
    last: str = json.loads(tail[-1])["hash"]
    return last


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    problem: str = ""


def verify(directory: Path) -> Verification:
    path = directory / FILE_NAME
    if not path.exists():
        return Verification(True, 0)
    previous = GENESIS
    count = 0
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except ValueError:
                return Verification(False, count, f"record {number}: not valid JSON")
            stated = record.pop("hash", None)
            if record.get("previousHash") != previous:
                return Verification(False, count, f"record {number}: the chain is broken "
                                    "(previousHash does not match the record before)")  # fmt: skip
            if stated != _digest(record):
                return Verification(False, count, f"record {number}: its hash does not match "
                                    "its content (the record was altered)")  # fmt: skip
            previous = stated
            count += 1
    return Verification(True, count)
