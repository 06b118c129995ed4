"""The ASGI app: the edge pipeline (api/edge.py) with its two faces, KMS JSON 1.1 on
`POST /` (api/kms.py) and the XKS proxy under its URI prefixes (api/xks_proxy.py);
`GET /healthz`, `GET /metrics`.

Token and database work runs in worker threads (as many as token sessions), never
on the event loop; a background task runs `maintain` periodically.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hsmkms.api import devmode
from hsmkms.api.body import DEFAULT_MAX_REQUEST_BYTES, limit_body
from hsmkms.api.edge import Edge, Face
from hsmkms.api.health import HealthProbe, arm_exit_deadline
from hsmkms.api.kms import KmsFace
from hsmkms.api.observe import REFRESH_SECONDS, AccessLogMode, Metrics, Observer
from hsmkms.api.ratelimit import RateLimiter
from hsmkms.api.refusals import STATE_KEY
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.api.workers import WorkerPool
from hsmkms.api.xks_proxy import XksProxyFace
from hsmkms.audit.log import AuditLog
from hsmkms.config import XksSettings
from hsmkms.operations.context import OperationContext
from hsmkms.operations.maintenance import maintain

log = logging.getLogger("hsmkms.api")


def create_app(
    ctx: OperationContext,
    verifier: SigV4Verifier,
    *,
    maintenance_seconds: float = 300.0,
    audit: AuditLog | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    xks: XksSettings | None = None,
    call_timeout: float | None = None,
    rate_limiter: RateLimiter | None = None,
    exit_deadline: float | None = None,
    access_log: AccessLogMode = "text",
    dev_mode: bool = False,
    console: ASGIApp | None = None,
) -> ASGIApp:
    """The app; bodies over `max_request_bytes` get 413 before they are buffered.
    `xks`: serve the XKS proxy API too, under its URI prefixes (None: not served).
    call_timeout: seconds before a request waiting on the token or database gets
    DependencyTimeoutException; exit_deadline: seconds the process may take to
    exit once shutdown begins (then it is ended), for `serve` only; access_log: one
    line per request to stderr (`text`, `json`) or none (`off`); dev_mode: serve
    development mode's reset endpoints too (hsmkms/api/devmode.py)."""
    workers = WorkerPool(ctx.hsm.pool.size, deadline=call_timeout)
    kms = KmsFace(ctx, verifier, rate_limiter)
    proxy = None if xks is None else XksProxyFace(ctx, xks)

    def face_of(path: str) -> Face:
        return proxy if proxy is not None and proxy.handles(path) else kms

    metrics = Metrics(ctx, workers)
    health = HealthProbe(ctx, min(call_timeout or 5.0, 5.0), metrics.token_calls_overdue)
    edge = Edge(workers, audit, Observer(metrics, access_log), face_of)

    async def healthz(request: Request) -> Response:
        status = await health.check()
        healthy = all(v == "ok" for v in status.values())
        return JSONResponse(
            {"status": "ok" if healthy else "unhealthy", **status},
            status_code=200 if healthy else 503,
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def maintenance_loop() -> None:
        while True:
            await anyio.sleep(maintenance_seconds)
            try:
                report = await workers.run(lambda: maintain(ctx), slow=True)
                if report.deleted or report.rotated:
                    log.info("maintenance: %s", report.as_dict())
            except Exception:  # keep the loop alive; the next pass retries
                log.exception("maintenance pass failed")

    async def metrics_refresh() -> None:
        while True:  # this worker's gauges, for a scrape another worker answers
            await anyio.sleep(REFRESH_SECONDS)
            metrics.refresh()

    async def refusal_summaries() -> None:
        while True:  # due summaries get written even when the refusals stop
            await anyio.sleep(5.0)
            edge.refusals.summarise()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with anyio.create_task_group() as tasks:
            if maintenance_seconds > 0:
                tasks.start_soon(maintenance_loop)
            tasks.start_soon(refusal_summaries)
            if metrics.multiprocess:
                tasks.start_soon(metrics_refresh)
            # The protocol and body limit below the app find the recorder here.
            yield {STATE_KEY: edge.refusals}
            tasks.cancel_scope.cancel()
        if exit_deadline is not None:
            arm_exit_deadline(exit_deadline)
        workers.shutdown()
        edge.refusals.summarise(now=True)
        if audit is not None:
            audit.close()  # the last records, then a final checkpoint while the token is open

    others = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *(devmode.routes(ctx, workers, audit) if dev_mode else ()),
        ],
        lifespan=lifespan,
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"] == "/" and scope["method"] == "POST":
                await edge.serve(kms, scope, receive, send)
                return
            if proxy is not None and proxy.handles(scope["path"]):
                await edge.serve(proxy, scope, receive, send)
                return
            if console is not None and scope["path"].startswith("/console"):  # its own 404s
                await console(scope, receive, send)
                return
        await others(scope, receive, send)

    return limit_body(app, max_request_bytes)
