"""Blocking work (token and database calls) off the event loop, in worker threads.

A thread hop costs more than a SoftHSM2 operation on a small machine, so calls
that arrive while every worker is busy wait together and the next free worker
takes them all in one hop: under load one hop serves many requests; when idle
every call is dispatched at once.

Two lanes keep a slow call from delaying fast ones: calls known to be slow (key
generation, or any operation whose recent calls took long) run one per hop on
the slow lane's own threads (at a lower CPU priority: software tokens generate
keys on the calling thread); only fast calls are batched together.

A hop that outlives the deadline fails its waiting calls with
DependencyTimeoutException and its thread is replaced: a token call that never
returns costs one thread, not the server. Threads are daemons, so a stuck one
cannot hold the process at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hsmkms.errors import DependencyTimeoutException

T = TypeVar("T")
_Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]
_Result = tuple["asyncio.Future[Any]", Any, BaseException | None]

# Operations that generate key material: slow on any token.
SLOW_OPERATIONS = frozenset(
    {
        "CreateKey",
        "RotateKeyOnDemand",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
    }
)
SLOW_NICE = 10  # the slow lane's threads yield the CPU to the fast lane's
SLOW_SECONDS = 0.02  # an operation averaging longer than this moves to the slow lane
# Calls averaging longer than this wait on the token (a network HSM; SoftHSM2's take
# well under it, Python included): idle threads then share a batch.
SPREAD_SECONDS = 0.001
_SMOOTHING = 0.2


class LaneChooser:
    """Which lane an operation takes: SLOW_OPERATIONS, plus any operation whose
    recent calls (an exponential moving average) took longer than SLOW_SECONDS,
    which is how a slow token or a slow key type moves off the fast lane."""

    def __init__(self, threshold: float = SLOW_SECONDS) -> None:
        self.threshold = threshold
        self._average: dict[str, float] = {}

    def observe(self, operation: str, seconds: float) -> None:
        before = self._average.get(operation, seconds)
        self._average[operation] = before + _SMOOTHING * (seconds - before)

    def slow(self, operation: str) -> bool:
        return operation in SLOW_OPERATIONS or self._average.get(operation, 0.0) > self.threshold


_Inbox = queue.SimpleQueue["_Hop | None"]


@dataclass(eq=False)
class _Hop:
    calls: list[_Call]
    inbox: _Inbox  # of the thread running it
    done: bool = False
    abandoned: bool = False
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class _Lane:
    """Each thread has an inbox of its own and a hop goes to an idle thread's: with one
    queue for all, a put woke one waiting thread and that one, having taken the hop,
    woke the next (SimpleQueue hands its lock on) for nothing, a context switch and a
    GIL hand-off per hop."""

    def __init__(
        self, name: str, size: int, batch: bool, deadline: float | None, nice: int = 0
    ) -> None:
        self._name = name
        self._nice = nice
        self._batch = batch
        self._deadline = deadline
        self._idle: list[_Inbox] = []  # the last to finish is the next to run (warm)
        self._inboxes: list[_Inbox] = []
        self._waiting: list[_Call] = []
        self._dispatching = False  # a dispatch is scheduled for this loop iteration
        self._per_call = 0.0  # seconds per call in a hop, a moving average
        self.timed_out = 0  # hops abandoned at the deadline
        for _ in range(size):
            self._start_thread()

    def _start_thread(self) -> None:
        inbox: _Inbox = queue.SimpleQueue()
        self._inboxes.append(inbox)
        self._idle.append(inbox)
        name = f"hsmkms-{self._name}-{len(self._inboxes)}"
        threading.Thread(target=self._serve, args=(inbox,), name=name, daemon=True).start()

    def submit(self, loop: asyncio.AbstractEventLoop, call: _Call) -> None:
        """A batching lane hands the calls of one event-loop iteration (the requests
        whose bodies one read completed) to one thread at the iteration's end: one
        wake-up for all of them rather than one per call for as long as threads idle;
        shared among the idle threads while calls take longer than SPREAD_SECONDS."""
        self._waiting.append(call)
        if not self._batch:
            self._dispatch(loop)
        elif not self._dispatching:
            self._dispatching = True
            loop.call_soon(self._dispatch, loop)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._dispatching = False
        while self._idle and self._waiting:
            if not self._batch:
                calls = [self._waiting.pop(0)]
            elif self._per_call > SPREAD_SECONDS:
                # A token whose calls wait (a network HSM): the idle threads share the
                # calls, so that their waits overlap.
                share = -(-len(self._waiting) // len(self._idle))
                calls, self._waiting = self._waiting[:share], self._waiting[share:]
            else:
                calls, self._waiting = self._waiting, []
            hop = _Hop(calls, self._idle.pop())
            if self._deadline is not None:
                hop.timer = loop.call_later(self._deadline, self._expire, loop, hop)
            hop.inbox.put(hop)

    def _serve(self, inbox: _Inbox) -> None:
        if self._nice:
            # Key generation is CPU work in this thread (software tokens): let the
            # fast lane's threads have the CPU first. Linux threads have their own nice.
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
        while (hop := inbox.get()) is not None:
            started = time.perf_counter()
            results = _run_batch(hop.calls)
            per_call = (time.perf_counter() - started) / len(hop.calls)
            loop = hop.calls[0][1].get_loop()
            try:
                loop.call_soon_threadsafe(self._finish, loop, hop, results, per_call)
            except RuntimeError:  # the loop closed while this hop ran
                return
            if hop.abandoned:
                return  # a replacement thread took this one's place

    def _finish(
        self, loop: asyncio.AbstractEventLoop, hop: _Hop, results: list[_Result], per_call: float
    ) -> None:
        self._per_call += _SMOOTHING * (per_call - self._per_call)
        hop.done = True
        if hop.timer is not None:
            hop.timer.cancel()
        if hop.abandoned:
            # Its callers already got DependencyTimeoutException and a replacement took
            # the thread's place; a thread that finished just before the deadline
            # waits on its inbox again (or has ended): this ends it.
            hop.inbox.put(None)
            return
        self._idle.append(hop.inbox)
        for future, value, error in results:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)
        self._dispatch(loop)

    def _expire(self, loop: asyncio.AbstractEventLoop, hop: _Hop) -> None:
        if hop.done:
            return
        hop.abandoned = True
        self.timed_out += 1
        for _, future in hop.calls:
            if not future.done():
                future.set_exception(
                    DependencyTimeoutException(
                        "The request did not complete in time: the token or the database "
                        "is not answering."
                    )
                )
        self._start_thread()  # in place of the one still in the call
        self._dispatch(loop)

    def shutdown(self) -> None:
        for inbox in self._inboxes:
            inbox.put(None)


class WorkerPool:
    def __init__(
        self, workers: int, *, slow_workers: int = 1, deadline: float | None = None
    ) -> None:
        """workers: threads of the fast lane; slow_workers: of the slow lane;
        deadline: seconds after which a hop's callers get DependencyTimeoutException."""
        self._fast = _Lane("worker", workers, True, deadline)
        self._slow = _Lane("slow", max(1, slow_workers), False, deadline, nice=SLOW_NICE)

    @property
    def timed_out(self) -> int:
        return self._fast.timed_out + self._slow.timed_out

    async def run(self, work: Callable[[], T], *, slow: bool = False) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        (self._slow if slow else self._fast).submit(loop, (work, future))
        return await future

    def shutdown(self) -> None:
        self._fast.shutdown()
        self._slow.shutdown()


def _run_batch(batch: list[_Call]) -> list[_Result]:
    results: list[_Result] = []
    for work, future in batch:
        if future.done():  # cancelled, or its caller already timed out
            continue
        try:
            results.append((future, work(), None))
        except BaseException as exc:  # handed back to the awaiting request, not raised here
            results.append((future, None, exc))
    return results
