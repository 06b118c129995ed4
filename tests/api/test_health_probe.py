"""The health probe's own logic (hsmkms/api/health.py) with checks standing in for the
token's and the database's: overlapping checks share one probe; a stuck one stays
reported until it returns, and no second one is started beside it."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

from hsmkms.api.health import HealthProbe


def probe_with(token_check: Any, timeout: float) -> HealthProbe:
    ctx: Any = SimpleNamespace(
        hsm=SimpleNamespace(probe=token_check, pool=SimpleNamespace(overdue=lambda: 0)),
        store=SimpleNamespace(ping=lambda: None),
    )
    return HealthProbe(ctx, timeout)


def test_overlapping_checks_share_one_probe_and_all_see_it_healthy() -> None:
    """Before: every check that found a probe under way said "the previous probe has
    not returned" (503): anyone polling /healthz took a healthy node out of rotation."""
    calls = []

    def slow() -> None:
        calls.append(1)
        time.sleep(0.2)

    async def checks() -> list[dict[str, str]]:
        probe = probe_with(slow, timeout=5.0)
        return await asyncio.gather(*(probe.check() for _ in range(6)))

    assert asyncio.run(checks()) == [{"token": "ok", "database": "ok"}] * 6
    assert len(calls) == 1


def test_a_stuck_probe_is_reported_and_not_started_twice() -> None:
    release, calls = threading.Event(), []

    def stuck() -> None:
        calls.append(1)
        release.wait(10)

    async def checks() -> tuple[dict[str, str], dict[str, str]]:
        probe = probe_with(stuck, timeout=0.2)
        first = await probe.check()
        second = await probe.check()  # the first probe is still stuck, past its timeout
        return first, second

    try:
        first, second = asyncio.run(checks())
    finally:
        release.set()
    assert first["token"] == "error: no answer in 0.2 s"
    assert second["token"] == "error: the previous probe has not returned"
    assert len(calls) == 1
