"""Group commit that waits for the records of requests still being handled: at
concurrency a worker hands its batch of calls back at once, so without the wait the
writer fsyncs the first record of a burst alone and the rest in the next batch (about
one fsync per three requests at concurrency 8). The edge counts the requests that will
record (`AuditLog.coming`); with none in flight the writer does not wait at all."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from hsmkms.audit import log as audit_log
from hsmkms.audit.log import AuditLog, verify
from hsmkms.token import Hsm
from tests.audit.test_audit_wakeups import FullDisk
from tests.support.edge_support import edge_server


def trail_lines(directory: Path) -> list[str]:
    return [line for path in sorted(directory.glob("*.jsonl")) if ".checkpoints." not in path.name
            for line in path.read_text().splitlines()]  # fmt: skip


class CountedDisk(AuditLog):
    """An audit log that notes the size of each batch it writes (one fsync each)."""

    def __init__(self, directory: Path) -> None:
        self.batches: list[int] = []
        super().__init__(directory)

    def _write(self, batch: list[Any]) -> bool:
        self.batches.append(sum(1 for event, _ in batch if event is not None))
        return super()._write(batch)


def _event(number: int) -> dict[str, Any]:
    return {"eventName": "Encrypt", "eventSource": "test", "requestID": f"r{number}"}


def _arriving(audit: AuditLog, count: int) -> list[Future[None] | None]:
    """`count` requests in flight, whose records arrive 50 ms apart (the edge's order:
    a request leaves the handler stage, then submits)."""
    audit.coming = count
    done = []
    for number in range(count):
        audit.coming -= 1
        done.append(audit.submit(_event(number)))
        time.sleep(0.05)
    return done


def test_records_of_requests_in_flight_share_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_log, "GATHER_SECONDS", 10.0)
    audit = CountedDisk(tmp_path)
    try:
        audit.submit(_event(99)).result(timeout=10)  # type: ignore[union-attr]
        for done in _arriving(audit, 3):
            assert done is not None
            done.result(timeout=10)
        assert audit.batches == [1, 3]
    finally:
        audit.close()


def test_nothing_in_flight_no_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_log, "GATHER_SECONDS", 60.0)
    audit = AuditLog(tmp_path)
    try:
        started = time.monotonic()
        done = audit.submit(_event(0))
        assert done is not None
        done.result(timeout=10)
        assert time.monotonic() - started < 10
    finally:
        audit.close()


def test_a_request_that_never_records_holds_a_batch_for_the_gather_time_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_log, "GATHER_SECONDS", 0.2)
    audit = AuditLog(tmp_path)
    try:
        audit.coming = 1  # e.g. stuck on the token until its deadline
        done = audit.submit(_event(0))
        assert done is not None
        done.result(timeout=10)
    finally:
        audit.coming = 0
        audit.close()


def test_a_failed_write_fails_every_record_of_a_gathered_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_log, "GATHER_SECONDS", 10.0)
    audit = AuditLog(tmp_path)
    try:
        audit.flush()
        audit._out = FullDisk(audit._out)  # type: ignore[assignment]
        waiters = _arriving(audit, 3)
        for done in waiters:
            assert done is not None
            with pytest.raises(OSError, match="No space left"):
                done.result(timeout=10)
    finally:
        audit.close()


def test_a_record_utf8_cannot_carry_fails_neither_itself_nor_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone surrogate (Python's json lets `\\ud800` in) made the batch's write raise:
    every request of the group commit was told its record was lost."""
    monkeypatch.setattr(audit_log, "GATHER_SECONDS", 10.0)
    audit = AuditLog(tmp_path)
    try:
        audit.flush()
        audit.coming = 2
        audit.coming -= 1
        bad = audit.submit({**_event(1), "requestParameters": {"keyId": "alias/\ud800"}})
        audit.coming -= 1
        good = audit.submit(_event(2))
        for done in (bad, good):
            assert done is not None
            done.result(timeout=10)
    finally:
        audit.close()
    records = [json.loads(line) for line in trail_lines(tmp_path)]
    assert [r["requestID"] for r in records] == ["r1", "r2"]
    assert records[0]["requestParameters"] == {"keyId": "alias/?"}
    assert verify(tmp_path).ok


def test_the_edge_counts_requests_being_handled(hsm: Hsm, tmp_path: Path) -> None:
    with edge_server(hsm, tmp_path) as server:
        kms = server.client()
        seen: list[int] = []
        slow = threading.Thread(  # key generation: long enough to be seen in flight
            target=lambda: kms.create_key(KeySpec="RSA_4096", KeyUsage="SIGN_VERIFY")
        )
        slow.start()
        while slow.is_alive():
            seen.append(server.audit.coming)
            time.sleep(0.0005)
        slow.join()
        kms.generate_random(NumberOfBytes=8)
        server.raw("ListKeys", "{}", sign=False)  # refused before the handler
        assert max(seen) == 1
        assert server.audit.coming == 0
