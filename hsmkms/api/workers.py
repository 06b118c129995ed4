"""Blocking work (token and database calls) off the event loop, in worker threads.

A thread hop costs more than a SoftHSM2 operation on a small machine, so calls
that arrive while every worker is busy wait together and the next free worker
takes them all in one hop: under load one hop serves many requests; when idle
every call is dispatched at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
_Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class WorkerPool:
    def __init__(self, workers: int) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="hsmkms-worker")
        self._idle = workers
        self._waiting: list[_Call] = []

    async def run(self, work: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._waiting.append((work, future))
        self._dispatch(loop)
        return await future

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._idle or not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        self._idle -= 1
        done = loop.run_in_executor(self._executor, _run_batch, batch)
        done.add_done_callback(lambda finished: self._finish(loop, finished))

    def _finish(self, loop: asyncio.AbstractEventLoop, finished: asyncio.Future[Any]) -> None:
        self._idle += 1
        for future, value, error in finished.result():
            if future.cancelled():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)
        self._dispatch(loop)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _run_batch(batch: list[_Call]) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
    results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
    for work, future in batch:
        try:
            results.append((future, work(), None))
        except BaseException as exc:  # handed back to the awaiting request, not raised here
            results.append((future, None, exc))
    return results
