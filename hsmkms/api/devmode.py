"""Development mode's endpoints (`hsmkms serve --dev`, HSMKMS_DEV_MODE): the state reset
and health endpoints that suites written for moto_server or LocalStack call between tests.

    POST /moto-api/reset               200 {"status": "ok"}
    POST /_localstack/state/reset      200 {"status": "ok"}
    POST /_localstack/state/kms/reset  200 {"status": "ok"}
    GET  /_localstack/health           200 {"services": {"kms": "running"}, ...}

A reset deletes every key, alias, grant, key policy and custom key store
(hsmkms/operations/devmode.py). Like the emulators' endpoints it asks no signature; each
reset is in the audit trail, with the caller's address, before it is answered.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hsmkms import __version__
from hsmkms.api.audit_step import record_event
from hsmkms.api.errors import error_body
from hsmkms.api.workers import WorkerPool
from hsmkms.audit.log import AuditLog
from hsmkms.audit.operator import operator_event
from hsmkms.errors import KMSError, KMSInternalException
from hsmkms.operations.context import OperationContext
from hsmkms.operations.devmode import ResetReport, reset_state

RESET_PATHS = ("/moto-api/reset", "/_localstack/state/reset", "/_localstack/state/kms/reset")
HEALTH_PATH = "/_localstack/health"
EVENT_SOURCE = "hsmkms.devmode"
log = logging.getLogger("hsmkms.api")


def _reset_event(request: Request, report: ResetReport | None, failure: KMSError | None) -> Any:
    event = operator_event(
        "ResetState",
        resources=report.keys if report is not None else (),
        error_code=failure.code if failure is not None else None,
        error_message=failure.message if failure is not None else None,
        source=EVENT_SOURCE,
    )
    event["sourceIPAddress"] = request.client.host if request.client else None
    event["additionalEventData"] = {
        "path": request.url.path,
        **(report.as_event_data() if report is not None else {}),
    }
    return event


def routes(ctx: OperationContext, workers: WorkerPool, audit: AuditLog | None) -> list[Route]:
    """The development mode's routes, for the app to mount beside its others."""

    async def reset(request: Request) -> Response:
        report: ResetReport | None = None
        failure: KMSError | None = None
        # On a worker thread, never the event loop; the fast lane: the slow one runs at a
        # lower CPU priority, and a suite waits on each reset
        try:
            report = await workers.run(lambda: reset_state(ctx))
        except KMSError as exc:
            failure = exc
        try:  # the record is on disk before the answer
            await record_event(audit, _reset_event(request, report, failure), "of a reset")
        except KMSInternalException as exc:
            failure = exc
        if failure is not None:
            return JSONResponse(error_body(failure), status_code=failure.status)
        return JSONResponse({"status": "ok"})

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"services": {"kms": "running"}, "edition": "hsmkms", "version": __version__}
        )

    return [
        *(Route(path, reset, methods=["POST"]) for path in RESET_PATHS),
        Route(HEALTH_PATH, health, methods=["GET", "HEAD"]),
    ]
