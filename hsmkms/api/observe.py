"""What the edge tells operators about each request once it is answered: Prometheus
metrics and the access log. One place for both (`Observer.answered`), so the metrics
can move (e.g. to one registry across `--workers` processes) without touching a face.

The access log is one line per request on the `hsmkms.access` logger, to stderr:
request id, client, principal, protocol, operation, status, error code and latency
(HSMKMS_ACCESS_LOG: `text`, the default; `json`, one JSON object a line; `off`). Every
5xx is also logged on `hsmkms.api` with its cause (and an unexpected fault's traceback
where it was caught); the response never carries more than the error's code and message.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from hsmkms.api.shared import METRICS_DIR_ENV
from hsmkms.api.workers import WorkerPool
from hsmkms.audit.outcome import Outcome
from hsmkms.operations.context import OperationContext
from hsmkms.operations.table import OPERATIONS

AccessLogMode = Literal["off", "text", "json"]
_GaugeMode = Literal["livesum", "sum"]
REFRESH_SECONDS = 1.0
OVERDUE = "hsmkms_token_calls_overdue"
KMS, XKS = "kms", "xks"
# XKS operations (xks/table.py's names); anything else is "Unknown" in labels.
XKS_OPERATIONS = frozenset({"GetHealthStatus", "GetKeyMetadata", "Encrypt", "Decrypt"})
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
log = logging.getLogger("hsmkms.api")
access = logging.getLogger("hsmkms.access")
# Anything but printable ASCII without spaces becomes "?" in a text line's fields.
_ONE_FIELD = {c: "?" for c in (*range(0x21), *range(0x7F, 0x100))}


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """sys.stderr as it is when a line is written (a test runner may swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _install_access_handler() -> None:
    """The access logger writes bare lines to stderr, once per process however many
    apps it builds; an operator's own logging configuration may add to it."""
    if not any(isinstance(h, _Stderr) for h in access.handlers):
        access.addHandler(_Stderr())
    access.setLevel(logging.INFO)
    access.propagate = False


class Metrics:
    """The edge's Prometheus metrics. In a worker of `serve --workers N` (the parent set
    PROMETHEUS_MULTIPROC_DIR, hsmkms.api.shared) every process writes its values to
    files there, and a scrape answered by any worker adds up all of them: counters and
    histograms of every worker that ran, gauges of the workers alive (`livesum`), the
    missed deadlines of every worker since the server started (`sum`)."""

    def __init__(self, ctx: OperationContext, workers: WorkerPool) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get(METRICS_DIR_ENV))
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
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.xks_requests = Counter(
            "hsmkms_xks_requests",
            "XKS proxy API requests by operation and errorName ('' for success)",
            ["operation", "error"],
            registry=self.registry,
        )
        self.xks_latency = Histogram(
            "hsmkms_xks_request_seconds",
            "XKS proxy API request latency by operation",
            ["operation"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.token_errors = Counter(
            "hsmkms_token_errors",
            "Requests that failed on a token or internal fault",
            ["error"],
            registry=self.registry,
        )
        pool = self._pool = ctx.hsm.pool
        self._overdue = self._gauge(
            OVERDUE,
            "Token calls past their deadline whose sessions were retired",
        )
        # Each gauge is set from its source when scraped (and, across workers, every
        # REFRESH_SECONDS by each worker: another worker's value is at most that old).
        self._gauges: list[tuple[Gauge, Callable[[], float]]] = [
            (self._gauge("hsmkms_token_sessions_in_use", "Token sessions in use"),
             lambda: pool.in_use),
            (self._gauge("hsmkms_token_sessions_max", "Token session pool size"),
             lambda: pool.size),
            (self._overdue, lambda: pool.stuck),
            (self._gauge("hsmkms_request_deadlines_missed",
                         "Worker hops abandoned at the deadline (DependencyTimeoutException) "
                         "since start", mode="sum"),
             lambda: workers.timed_out),
        ]  # fmt: skip
        self.refresh()

    def token_calls_overdue(self) -> int:
        """Token calls past their deadline now: this process's and, in a worker, those
        of the other workers alive (their gauges, at most REFRESH_SECONDS old)."""
        own = self._pool.overdue()
        if not self.multiprocess:
            return own
        self._overdue.set(own)
        directory = Path(os.environ[METRICS_DIR_ENV])
        mine = f"gauge_livesum_{os.getpid()}.db"
        others = [str(f) for f in directory.glob("gauge_livesum_*.db") if f.name != mine]
        merged = MultiProcessCollector.merge(others, accumulate=False)  # type: ignore[no-untyped-call]
        for metric in merged:
            if metric.name == OVERDUE:
                own += int(sum(sample.value for sample in metric.samples))
        return own

    def _gauge(self, name: str, documentation: str, mode: _GaugeMode = "livesum") -> Gauge:
        return Gauge(name, documentation, registry=self.registry, multiprocess_mode=mode)

    def refresh(self) -> None:
        """Set each gauge from its source (this process's)."""
        for gauge, source in self._gauges:
            gauge.set(source())

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's metrics, or every worker's."""
        self.refresh()
        if not self.multiprocess:
            return generate_latest(self.registry)
        every_worker = CollectorRegistry()
        MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
        return generate_latest(every_worker)


def _label(protocol: str, operation: str) -> str:
    """Labels name known operations only: a made-up name is "Unknown", so clients
    cannot add series without bound."""
    known = OPERATIONS if protocol == KMS else XKS_OPERATIONS
    return operation if operation in known else "Unknown"


def _principal(outcome: Outcome) -> str:
    identity = outcome.identity or {}
    return str(identity.get("arn") or identity.get("accessKeyId") or "-")


class Observer:
    def __init__(self, metrics: Metrics, mode: AccessLogMode = "text") -> None:
        self.metrics = metrics
        self.mode = mode
        if mode != "off":
            _install_access_handler()

    def answered(
        self,
        protocol: str,
        outcome: Outcome,
        *,
        request_id: str,
        client: str | None,
        status: int,
        error: str,
        seconds: float,
    ) -> None:
        """One answered request: `error` is the code the client was told ('' for none)."""
        label = _label(protocol, outcome.operation)
        if protocol == KMS:
            self.metrics.requests.labels(label, error).inc()
            self.metrics.latency.labels(label).observe(seconds)
        else:
            self.metrics.xks_requests.labels(label, error).inc()
            self.metrics.xks_latency.labels(label).observe(seconds)
        if status >= 500:
            self.metrics.token_errors.labels(error).inc()
            _log_failure(protocol, outcome, request_id, status, error)
        if self.mode != "off":
            access.info(self._line(protocol, outcome, request_id, client, status, error, seconds))

    def _line(
        self,
        protocol: str,
        outcome: Outcome,
        request_id: str,
        client: str | None,
        status: int,
        error: str,
        seconds: float,
    ) -> str:
        principal = _principal(outcome)
        if self.mode == "text":
            # A refused call's operation is the client's own words: one field, always.
            operation = outcome.operation.translate(_ONE_FIELD)
            return (
                f"{request_id} {client or '-'} {principal} {protocol}:{operation} "
                f"{status} {error or '-'} {seconds * 1000:.2f}ms"
            )
        return json.dumps(
            {
                "requestId": request_id,
                "client": client,
                "principal": principal,
                "protocol": protocol,
                "operation": outcome.operation,
                "status": status,
                "error": error or None,
                "latencyMs": round(seconds * 1000, 3),
            },
            separators=(",", ":"),
        )


def _log_failure(protocol: str, outcome: Outcome, request_id: str, status: int, error: str) -> None:
    """A 5xx with its cause; the cause's traceback was logged where it was caught (invoke,
    the edge), the response carries neither."""
    failure = outcome.error
    cause = None if failure is None else failure.__cause__ or failure.__context__
    log.error(
        "%s %s:%s answered %d %s: %s%s",
        request_id,
        protocol,
        outcome.operation,
        status,
        error,
        "" if failure is None else failure.message,
        "" if cause is None else f" (cause: {type(cause).__name__}: {cause})",
    )
