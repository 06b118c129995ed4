"""The worker pool that keeps blocking work off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hsmkms.api.workers import LaneChooser, WorkerPool
from hsmkms.errors import DependencyTimeoutException


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


def test_calls_of_one_loop_iteration_take_one_hop_though_threads_idle() -> None:
    """The requests one read completed wake one worker thread, not one each."""

    async def scenario() -> set[int]:
        pool = WorkerPool(4)
        calls = [pool.run(threading.get_ident) for _ in range(12)]  # one iteration
        threads = set(await asyncio.gather(*calls))
        pool.shutdown()
        return threads

    assert len(asyncio.run(scenario())) == 1


def test_calls_that_wait_on_the_token_share_the_idle_threads() -> None:
    """A network HSM's calls wait: batched on one thread their waits would add up."""

    async def scenario() -> set[int]:
        pool = WorkerPool(4)

        def waits() -> int:
            time.sleep(0.01)  # the GIL is free meanwhile, as in a token call
            return threading.get_ident()

        await pool.run(waits)  # the lane learns that its calls wait
        threads = set(await asyncio.gather(*(pool.run(waits) for _ in range(8))))
        pool.shutdown()
        return threads

    assert len(asyncio.run(scenario())) >= 2


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


def test_fast_calls_pass_a_slow_call() -> None:
    async def scenario() -> list[int]:
        pool = WorkerPool(1)
        gate = threading.Event()
        slow = asyncio.ensure_future(pool.run(lambda: gate.wait(5), slow=True))
        await asyncio.sleep(0.01)
        fast = await asyncio.gather(*(pool.run(lambda n=n: n) for n in range(5)))
        assert not slow.done()  # the fast calls finished while the slow one still ran
        gate.set()
        assert await slow is True
        pool.shutdown()
        return list(fast)

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_a_hop_past_its_deadline_fails_and_its_thread_is_replaced() -> None:
    async def scenario() -> None:
        pool = WorkerPool(1, deadline=0.2)
        gate = threading.Event()
        with pytest.raises(DependencyTimeoutException):
            await pool.run(lambda: gate.wait(10))
        assert await pool.run(lambda: "served by the replacement") == "served by the replacement"
        assert pool.timed_out == 1
        gate.set()
        pool.shutdown()

    asyncio.run(scenario())


def test_operations_that_take_long_move_to_the_slow_lane() -> None:
    lanes = LaneChooser(threshold=0.02)
    assert lanes.slow("CreateKey") and not lanes.slow("Encrypt")
    for _ in range(20):
        lanes.observe("Encrypt", 0.001)
    assert not lanes.slow("Encrypt")
    for _ in range(20):
        lanes.observe("Encrypt", 0.5)  # a slow token
    assert lanes.slow("Encrypt")
    for _ in range(40):
        lanes.observe("Encrypt", 0.001)  # and back
    assert not lanes.slow("Encrypt")
