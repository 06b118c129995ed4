"""The worker pool that keeps blocking work off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hsmkms.api.workers import WorkerPool


def test_results_errors_and_threads() -> None:
    async def scenario() -> None:
        pool = WorkerPool(2)
        loop_thread = threading.get_ident()

        def work(n: int) -> tuple[int, int]:
            time.sleep(0.002)
            if n == 13:
                raise ValueError("unlucky")
            return n * n, threading.get_ident()

        calls = [pool.run(lambda n=n: work(n)) for n in range(40)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for n, result in enumerate(results):
            if n == 13:
                assert isinstance(result, ValueError)
            else:
                assert isinstance(result, tuple) and result[0] == n * n
                assert result[1] != loop_thread  # never on the event loop
        threads = {r[1] for r in results if isinstance(r, tuple)}
        assert 1 <= len(threads) <= 2
        pool.shutdown()

    asyncio.run(scenario())


def test_calls_waiting_for_a_worker_share_one_hop() -> None:
    async def scenario() -> int:
        pool = WorkerPool(1)
        hops: set[int] = set()
        gate = threading.Event()

        def first() -> None:
            gate.wait(5)

        def later() -> int:
            hops.add(threading.get_ident())
            return 1

        blocker = asyncio.ensure_future(pool.run(first))
        await asyncio.sleep(0.01)
        waiting = [asyncio.ensure_future(pool.run(later)) for _ in range(10)]
        await asyncio.sleep(0.01)
        gate.set()
        await blocker
        done = sum(await asyncio.gather(*waiting))
        pool.shutdown()
        return done

    assert asyncio.run(scenario()) == 10


def test_the_event_loop_stays_responsive() -> None:
    async def scenario() -> float:
        pool = WorkerPool(1)
        slow = asyncio.ensure_future(pool.run(lambda: time.sleep(0.3)))
        started = time.perf_counter()
        await asyncio.sleep(0.01)  # would wait ~0.3 s if the work blocked the loop
        elapsed = time.perf_counter() - started
        await slow
        pool.shutdown()
        return elapsed

    assert asyncio.run(scenario()) == pytest.approx(0.01, abs=0.1)
