"""The ASGI app: KMS JSON 1.1 on `POST /`, `GET /healthz`, `GET /metrics`.

Token and database work runs in worker threads (as many as token sessions), never
on the event loop; a background task runs `maintain` periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hsmkms.api.body import DEFAULT_MAX_REQUEST_BYTES, limit_body
from hsmkms.api.errors import error_body
from hsmkms.api.health import HealthProbe, arm_exit_deadline
from hsmkms.api.kms import call, encode_response, parse_body, resolve_operation
from hsmkms.api.ratelimit import RateLimiter
from hsmkms.api.refusals import STATE_KEY, EdgeRefusals, Refusal
from hsmkms.api.sigv4 import SigV4Verifier, claimed_access_key_id
from hsmkms.api.workers import LaneChooser, WorkerPool
from hsmkms.api.xks import XksEndpoint
from hsmkms.audit.log import AuditLog, request_parameters
from hsmkms.config import XksSettings
from hsmkms.errors import KMSError, KMSInternalException
from hsmkms.operations.context import OperationContext
from hsmkms.operations.maintenance import maintain
from hsmkms.operations.table import OPERATIONS, Operation
from hsmkms.policy.caller import CallerInfo, current_caller
from hsmkms.policy.needs import Access

JSON_11 = "application/x-amz-json-1.1"
log = logging.getLogger("hsmkms.api")


class Metrics:
    def __init__(self, ctx: OperationContext) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hsmkms_requests",
            "KMS API requests by operation and error code ('' for success)",
            ["operation", "error"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hsmkms_request_seconds",
            "KMS API request latency by operation",
            ["operation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.token_errors = Counter(
            "hsmkms_token_errors",
            "Requests that failed on a token or internal fault",
            ["error"],
            registry=self.registry,
        )
        sessions = Gauge(
            "hsmkms_token_sessions_in_use", "Token sessions in use", registry=self.registry
        )
        sessions.set_function(lambda: ctx.hsm.pool.in_use)
        size = Gauge("hsmkms_token_sessions_max", "Token session pool size", registry=self.registry)
        size.set(ctx.hsm.pool.size)


@dataclass(slots=True)
class _Call:
    """One KMS API request as received, and what handling learned about it (for audit)."""

    path: str
    query: str
    target: str  # X-Amz-Target
    headers: dict[str, list[str]]
    body: bytes
    client: str | None
    secure: bool
    caller: Any = None
    members: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    resources: list[str] = field(default_factory=list)


def _error_json(error: KMSError) -> bytes:
    return json.dumps(error_body(error)).encode()


def _operation_named(target: str) -> str:
    """The operation an X-Amz-Target names, as the audit trail shows it (unverified)."""
    return target.removeprefix("TrentService.")[:64] or "Unknown"


def _metric_label(operation: str) -> str:
    """Metric labels name known operations only: a made-up name is "Unknown", so
    clients cannot add series without bound."""
    return operation if operation in OPERATIONS else "Unknown"


def _audit_event(
    call_: _Call, operation: str, request_id: str, failure: KMSError | None
) -> dict[str, Any]:
    """A CloudTrail-shaped record of one call; denials carry the reason as errorMessage."""
    caller = call_.caller
    members = call_.members or {}
    event: dict[str, Any] = {
        "eventVersion": "1.08",
        "eventTime": datetime.now(UTC).isoformat(),
        "eventSource": "kms.amazonaws.com",
        "eventName": operation,
        "awsRegion": getattr(caller, "region", None),
        "sourceIPAddress": call_.client,
        "userIdentity": None
        if caller is None
        else {
            "type": "IAMUser",
            "arn": caller.principal_arn,
            "accountId": caller.principal_arn.split(":")[4],
            "accessKeyId": caller.access_key_id,
        },
        "requestParameters": request_parameters(members),
        "requestID": request_id,
        "readOnly": operation in OPERATIONS and OPERATIONS[operation].read_only,
    }
    keys = (
        call_.resources
        or [
            k
            for k in ((call_.result or {}).get("KeyId"), members.get("KeyId"))
            if isinstance(k, str)
        ][:1]
    )
    if keys:
        event["resources"] = [{"ARN": k, "type": "AWS::KMS::Key"} for k in keys]
    if failure is not None:
        event["errorCode"] = failure.code
        event["errorMessage"] = failure.message
        claimed = None if caller is not None else claimed_access_key_id(call_.headers)
        if claimed is not None:  # refused before the signature was checked
            event["additionalEventData"] = {"claimedAccessKeyId": claimed}
    return event


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
    console: ASGIApp | None = None,
) -> ASGIApp:
    """The app; bodies over `max_request_bytes` get 413 before they are buffered.
    `xks`: serve the XKS proxy API too, under its URI prefixes (None: not served).
    call_timeout: seconds before a request waiting on the token or database gets
    DependencyTimeoutException; exit_deadline: seconds the process may take to
    exit once shutdown begins (then it is ended), for `serve` only."""
    workers = WorkerPool(ctx.hsm.pool.size, deadline=call_timeout)
    lanes = LaneChooser()
    health = HealthProbe(ctx, timeout=min(call_timeout or 5.0, 5.0))
    # Request ids: unique per server run without a random draw per request.
    run_id, request_numbers = str(uuid.uuid4())[:23], itertools.count()

    def refusal_event(refusal: Refusal) -> dict[str, Any]:
        """The record of a request refused below the app: the KMS calls' own shape."""
        headers = {name: list(values) for name, values in refusal.headers.items()}
        call_ = _Call(
            refusal.path, "", refusal.target, headers, b"", refusal.source, refusal.secure
        )
        request_id = f"{run_id}-{next(request_numbers):012x}"
        return _audit_event(call_, _operation_named(refusal.target), request_id, refusal.error)

    refusals = EdgeRefusals(audit, refusal_event)
    xks_endpoint = None if xks is None else XksEndpoint(ctx, workers, xks, audit, refusals)
    metrics = Metrics(ctx)
    Gauge(
        "hsmkms_token_calls_overdue",
        "Token calls past their deadline whose sessions were retired",
        registry=metrics.registry,
    ).set_function(lambda: ctx.hsm.pool.stuck)
    Gauge(
        "hsmkms_request_deadlines_missed",
        "Worker hops abandoned at the deadline (DependencyTimeoutException) since start",
        registry=metrics.registry,
    ).set_function(lambda: workers.timed_out)

    def handle(call_: _Call) -> tuple[str, bytes]:
        started = time.perf_counter()
        caller = verifier.verify("POST", call_.path, call_.query, call_.headers, call_.body)
        call_.caller = caller
        op = resolve_operation(call_.target or None)
        if rate_limiter is not None:
            rate_limiter.check(caller.principal_arn, op.name)
        info = CallerInfo(
            caller.principal_arn, source_ip=call_.client, secure_transport=call_.secure
        )
        regional = ctx.for_region(caller.region)
        regional.keys.refresh()  # see writes committed on any node before this request
        token = current_caller.set(info)
        try:
            result = call(
                op,
                regional,
                parse_body(call_.body),
                lambda op, members: authorize(regional, info, call_, op, members),
            )
        finally:
            current_caller.reset(token)
            lanes.observe(op.name, time.perf_counter() - started)
        call_.result = result
        return op.name, encode_response(result)

    def authorize(
        regional: OperationContext,
        info: CallerInfo,
        call_: _Call,
        op: Operation,
        members: dict[str, Any],
    ) -> Access:
        call_.members = members
        return regional.authorizer.require(info, op.name, op.resource, members, call_.resources)

    async def kms(scope: Scope, receive: Receive, send: Send) -> None:
        """POST / as a bare ASGI handler: the hot path skips routing and
        request/response objects."""
        started = time.perf_counter()
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left or was cut off mid-body: nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers: dict[str, list[str]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        client = scope.get("client")
        target = (headers.get("x-amz-target") or [""])[0]
        call_ = _Call(
            scope["path"],
            scope["query_string"].decode("latin-1"),
            target,
            headers,
            b"".join(chunks),
            client[0] if client else None,
            scope.get("scheme") == "https",
        )
        operation = _operation_named(target)
        failure: KMSError | None = None
        try:
            operation, payload = await workers.run(
                lambda: handle(call_), slow=lanes.slow(operation)
            )
        except KMSError as exc:
            failure = exc
        except Exception:  # a real fault: logged here, a clean 500 to the client
            log.exception("internal error in %s", operation)
            failure = KMSInternalException("An internal error occurred.")
        request_id = f"{run_id}-{next(request_numbers):012x}".encode()
        if audit is not None and refusals.should_record(call_.client, failure):
            # Durability `sync`: the record is on disk before the response goes out.
            durable = audit.submit(_audit_event(call_, operation, request_id.decode(), failure))
            if durable is not None:
                try:
                    await asyncio.wrap_future(durable)
                except Exception:  # no response the trail does not hold
                    log.exception("audit record for %s not written", operation)
                    failure = KMSInternalException("The audit record could not be written.")
        status, error = 200, ""
        if failure is not None:
            status, error, payload = failure.status, failure.code, _error_json(failure)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", JSON_11.encode()),
                    (b"content-length", str(len(payload)).encode()),
                    (b"x-amzn-requestid", request_id),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        if status >= 500:
            metrics.token_errors.labels(error).inc()
        label = _metric_label(operation)
        metrics.requests.labels(label, error).inc()
        metrics.latency.labels(label).observe(time.perf_counter() - started)

    async def healthz(request: Request) -> Response:
        status = await health.check()
        healthy = all(v == "ok" for v in status.values())
        return JSONResponse(
            {"status": "ok" if healthy else "unhealthy", **status},
            status_code=200 if healthy else 503,
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def maintenance_loop() -> None:
        while True:
            await anyio.sleep(maintenance_seconds)
            try:
                report = await workers.run(lambda: maintain(ctx), slow=True)
                if report.deleted or report.rotated:
                    log.info("maintenance: %s", report.as_dict())
            except Exception:  # keep the loop alive; the next pass retries
                log.exception("maintenance pass failed")

    async def refusal_summaries() -> None:
        while True:  # due summaries get written even when the refusals stop
            await anyio.sleep(5.0)
            refusals.summarise()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with anyio.create_task_group() as tasks:
            if maintenance_seconds > 0:
                tasks.start_soon(maintenance_loop)
            tasks.start_soon(refusal_summaries)
            # The protocol and body limit below the app find the recorder here.
            yield {STATE_KEY: refusals}
            tasks.cancel_scope.cancel()
        if exit_deadline is not None:
            arm_exit_deadline(exit_deadline)
        workers.shutdown()
        refusals.summarise(now=True)
        if audit is not None:
            audit.close()  # the last records, then a final checkpoint while the token is open

    others = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] == "POST":
            await kms(scope, receive, send)
        elif (
            xks_endpoint is not None
            and scope["type"] == "http"
            and xks_endpoint.handles(scope["path"])
        ):
            await xks_endpoint(scope, receive, send)
        elif console is not None and scope["path"].startswith("/console"):  # its own 404s
            await console(scope, receive, send)
        else:
            await others(scope, receive, send)

    return limit_body(app, max_request_bytes)
