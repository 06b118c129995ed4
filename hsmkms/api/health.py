"""`/healthz` that answers even when the token or the database does not, and the
hard stop that bounds a shutdown.

The probe runs on a thread of its own (never a request worker, which may all be
stuck) and is waited for with a timeout; checks that overlap share one probe, and
while one probe is still stuck no second one is started. The token is unhealthy
while it is gone, while a probe hangs, or while a token call is past its deadline
(its session retired, its request answered with DependencyTimeoutException) — in any
worker process of the server: whichever worker answers, it reports the token they
share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

from hsmkms.operations.context import OperationContext

log = logging.getLogger("hsmkms.api")


class HealthProbe:
    def __init__(
        self,
        ctx: OperationContext,
        timeout: float,
        overdue: Callable[[], int] | None = None,
    ) -> None:
        """overdue: token calls past their deadline now (default: this process's; in a
        worker of `serve --workers N`, every worker's: the token is theirs together)."""
        self._ctx = ctx
        self._timeout = timeout
        self._overdue = overdue or ctx.hsm.pool.overdue
        # per probe: its thread, the future of its answer, when it started (loop time)
        self._running: dict[str, tuple[threading.Thread, asyncio.Future[str], float]] = {}

    async def check(self) -> dict[str, str]:
        token, database = await asyncio.gather(
            self._probe("token", self._ctx.hsm.probe), self._probe("database", self._ctx.store.ping)
        )
        stuck = self._overdue()
        if token == "ok" and stuck:
            token = f"error: {stuck} token call(s) past their deadline"
        return {"token": token, "database": database}

    async def _probe(self, name: str, check: Callable[[], None]) -> str:
        """A check that finds a probe under way waits for that one's answer: health
        checks that overlap (a load balancer's and a monitor's) share a probe, and
        none reports the other's as a failure. One under way past the timeout is stuck."""
        loop = asyncio.get_running_loop()
        running = self._running.get(name)
        if running is not None and running[0].is_alive():
            _, answer, started = running
            remaining = started + self._timeout - loop.time()
            if remaining <= 0 or answer.get_loop() is not loop:
                return "error: the previous probe has not returned"
        else:
            answer, remaining = loop.create_future(), self._timeout

            def run() -> None:
                try:
                    check()
                    outcome = "ok"
                except Exception as exc:  # reported, not raised: this is the health check
                    outcome = f"error: {type(exc).__name__}"
                with contextlib.suppress(RuntimeError):  # the server stopped meanwhile
                    loop.call_soon_threadsafe(_settle, answer, outcome)

            thread = threading.Thread(target=run, name=f"hsmkms-health-{name}", daemon=True)
            self._running[name] = (thread, answer, loop.time())
            thread.start()
        try:
            return await asyncio.wait_for(asyncio.shield(answer), remaining)
        except TimeoutError:
            return f"error: no answer in {self._timeout:g} s"


def _settle(future: asyncio.Future[str], outcome: str) -> None:
    if not future.done():
        future.set_result(outcome)


def arm_exit_deadline(seconds: float) -> None:
    """End the process `seconds` from now unless it has exited by then: closing
    sessions or finalising the token module can block behind a call that never
    returns, and a server that will not stop is worse than one that stops hard."""

    def stop() -> None:
        time.sleep(seconds)
        log.error("shutdown did not finish in %g s; exiting now", seconds)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=stop, name="hsmkms-exit-deadline", daemon=True).start()
