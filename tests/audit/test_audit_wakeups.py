"""Durable audit costs per fsync, not per record: the writer completes the waiting
requests of a batch with one call on their event loop. Each record used to wake the
loop on its own (a future chained per record), which made `sync` durability cost
CPU per request although the fsync is shared."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hsmkms.api.audit_step import record_event
from hsmkms.audit.log import AuditLog
from hsmkms.errors import KMSInternalException


class GatedDisk(AuditLog):
    """An audit log whose writes wait until `open` is set (the disk is busy)."""

    def __init__(self, directory: Path, fail: bool = False) -> None:
        self.open = threading.Event()
        self.writing = threading.Event()
        self.fail = fail
        super().__init__(directory)

    def _write(self, batch: list[Any]) -> bool:
        self.writing.set()
        assert self.open.wait(timeout=30)
        if self.fail:
            self._out = FullDisk(self._out)  # type: ignore[assignment]
        return super()._write(batch)


class FullDisk:
    """A record file on a disk with no space left: every write fails."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def write(self, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _event(number: int) -> dict[str, Any]:
    return {"eventName": "Encrypt", "eventSource": "test", "requestID": f"r{number}"}


async def _record_while_busy(audit: GatedDisk, count: int) -> tuple[int, list[Any]]:
    """One record takes the writer, `count` more wait for the next fsync; returns how
    often the writer called into the loop, and each request's result."""
    loop = asyncio.get_running_loop()
    calls = 0
    real: Callable[..., Any] = loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign, assignment]
    first = asyncio.ensure_future(record_event(audit, _event(0), "first"))
    await asyncio.to_thread(audit.writing.wait, 10)
    calls = 0  # to_thread's own wake-up is not the trail's
    rest = [asyncio.ensure_future(record_event(audit, _event(n), f"r{n}")) for n in range(1, count)]
    await asyncio.sleep(0.05)  # every request is queued behind the busy writer
    audit.open.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    return calls, results


def test_one_loop_wake_up_per_fsync_not_per_record(tmp_path: Path) -> None:
    audit = GatedDisk(tmp_path)
    try:
        calls, results = asyncio.run(_record_while_busy(audit, 50))
        assert results == [None] * 50
        # two batches (the first record, then the 49 queued behind it): two wake-ups
        assert calls <= 2, f"{calls} wake-ups of the loop for 2 fsyncs"
        on_disk = sum(1 for line in audit.path.read_text().splitlines() if line)
        assert on_disk == 50  # every awaited record was on disk when its await returned
    finally:
        audit.open.set()
        audit.close()


def test_a_batch_that_cannot_be_written_fails_every_waiting_request(tmp_path: Path) -> None:
    audit = GatedDisk(tmp_path, fail=True)
    try:
        _, results = asyncio.run(_record_while_busy(audit, 5))
        assert all(isinstance(result, KMSInternalException) for result in results), results
    finally:
        audit.open.set()
        audit.close()


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_a_closed_trail_refuses_at_once(tmp_path: Path, durability: str) -> None:
    audit = AuditLog(tmp_path, durability=durability)  # type: ignore[arg-type]
    audit.close()

    async def attempt() -> None:
        await record_event(audit, _event(1), "late")

    if durability == "sync":
        with pytest.raises(KMSInternalException):
            asyncio.run(attempt())
    else:
        asyncio.run(attempt())  # async mode never waits: the record is only logged as lost
