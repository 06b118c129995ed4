"""Running the API: uvicorn with hsmkms's edge limits.

What each limit guards against, and where it is enforced:

- `max_request_bytes`: memory per request. An ASGI wrapper (`hsmkms.api.body`)
  refuses a body over it with 413 by its Content-Length before reading it, and
  counts chunked bodies; uvicorn itself stops reading a connection once 64 KiB of
  body wait unread, so nothing larger is ever held.
- `max_header_count`, `max_header_bytes`, `header_timeout_seconds`,
  `body_timeout_seconds`, `max_connections`, `max_connections_per_client`: slow or
  oversized clients, and one client holding every connection, enforced per
  connection by the protocol in `hsmkms.api.protocol` (uvicorn has none).
  Worst case held in bodies: `max_connections` x `max_request_bytes` (150 MiB).
- `keep_alive_seconds`: how long an idle kept-alive connection stays open
  (uvicorn's `timeout_keep_alive`).

`trusted_proxies` (HSMKMS_TRUSTED_PROXIES): X-Forwarded-For / X-Forwarded-Proto are
believed only from these peers (uvicorn's proxy headers, off without them), so a
client cannot claim another address (`aws:SourceIp`, the audit trail) or TLS
(`aws:SecureTransport`); they are exempt from the per-client connection cap.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client.multiprocess import mark_process_dead
from starlette.types import ASGIApp
from uvicorn.supervisors import Multiprocess

from hsmkms.api.body import limit_body
from hsmkms.api.handoff import Dispatcher
from hsmkms.api.handoff_worker import LOOP_SETTING
from hsmkms.api.listener import ReloadingServer, listening_socket
from hsmkms.api.mtls import client_tls_options, subject_checked
from hsmkms.api.protocol import guarded_protocol
from hsmkms.api.shared import shared_directory
from hsmkms.config import EdgeLimits, ServingSettings

log = logging.getLogger("hsmkms.api")


def proxy_options(trusted_proxies: Sequence[str]) -> dict[str, Any]:
    """uvicorn's proxy-header settings: forwarded headers believed from these peers
    only, and not at all without any (uvicorn's own default trusts 127.0.0.1)."""
    if not trusted_proxies:
        return {"proxy_headers": False, "forwarded_allow_ips": []}
    return {"proxy_headers": True, "forwarded_allow_ips": list(trusted_proxies)}


def _allow_descriptors(connections: int) -> None:
    """Each connection is a file descriptor: make room for the cap plus the
    token, database and log files, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        if raised < wanted:
            log.warning("only %d file descriptors for %d connections", raised, connections)


def _listener_options(serving: ServingSettings, limits: EdgeLimits) -> dict[str, Any]:
    """uvicorn's keywords for where and how to listen, the same in one process or many."""
    ca = serving.tls_client_ca
    return {
        "host": serving.host,
        "port": serving.port,
        "ssl_certfile": None if serving.tls_cert is None else str(serving.tls_cert),
        "ssl_keyfile": None if serving.tls_key is None else str(serving.tls_key),
        "ws": "none",
        "timeout_keep_alive": limits.keep_alive_seconds,
        "timeout_graceful_shutdown": int(max(1, serving.shutdown_drain_seconds)),
        "access_log": False,
        **client_tls_options(None if ca is None else str(ca)),
        **proxy_options(limits.trusted_proxies),
    }


def build_server(
    app: ASGIApp,
    serving: ServingSettings,
    limits: EdgeLimits,
    *,
    log_level: str = "warning",
) -> uvicorn.Server:
    """A uvicorn server for `app` with `limits`, not yet started (`.run()`)."""
    _allow_descriptors(limits.max_connections)
    protocol = guarded_protocol(limits)
    if serving.tls_client_subjects:
        protocol = subject_checked(protocol, serving.tls_client_subjects)
    config = uvicorn.Config(
        limit_body(app, limits.max_request_bytes),
        http=protocol,
        log_level=log_level,
        **_listener_options(serving, limits),
    )
    return ReloadingServer(config)


def serve(
    app: ASGIApp | None,
    serving: ServingSettings,
    limits: EdgeLimits,
    listener: socket.socket | None = None,
) -> None:
    """Serve `app` on `listener` (hsmkms.api.listener: bound before the server said it
    serves) until interrupted; in-flight requests get the drain time after SIGTERM, and
    SIGHUP loads the TLS certificate again. With more than one process
    (`serving.processes`: `workers`, else one per core), uvicorn runs them, each
    building its own app (`hsmkms.bootstrap:app_factory`) and edge protocol
    (`hsmkms.api.server:worker_protocol`, from the same settings) — `app` is unused —
    sharing a private directory (hsmkms.api.shared) for metrics and quotas; this
    process accepts the connections and hands them to the workers in turn
    (hsmkms.api.handoff); SIGHUP replaces the workers one by one."""
    listener = listener or listening_socket(serving)
    if serving.processes > 1:
        _allow_descriptors(limits.max_connections)
        # for the worker processes
        os.environ[SUBJECTS_ENV] = ",".join(serving.tls_client_subjects)
        config = uvicorn.Config(
            "hsmkms.bootstrap:app_factory",
            factory=True,
            workers=serving.processes,
            http="hsmkms.api.server:worker_protocol",
            log_level="warning",
            # A new worker opens the token and the database before it is ready: on a
            # busy machine (or a slow HSM) that takes longer than uvicorn's 5 s, and a
            # SIGHUP restart would then give up and keep the old workers.
            timeout_worker_healthcheck=WORKER_READY_SECONDS,
            loop=LOOP_SETTING,
            **_listener_options(serving, limits),
        )
        # metrics and quotas across the workers; connections handed to them in turn
        with shared_directory() as directory, Dispatcher(listener) as dispatcher:
            supervisor = Supervisor(config, [dispatcher.for_workers], directory / "metrics")
            dispatcher.start(on_failure=supervisor.should_exit.set)
            try:
                supervisor.run()
            finally:  # after an error in run(), its workers must not outlive it
                supervisor.terminate_all()
        return
    assert app is not None
    build_server(app, serving, limits).run(sockets=[listener])


SUBJECTS_ENV = "HSMKMS_SERVE_CLIENT_SUBJECTS"
WORKER_READY_SECONDS = 30


def follow_supervisor(interval: float = 1.0) -> None:
    """In a worker process: stop as on SIGTERM (drain, then exit) once the supervising
    process is gone (killed with SIGKILL, say), rather than serve on as an orphan that
    nothing replaces, stops or counts, holding the port and token sessions."""
    supervisor = os.getppid()

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(interval)
        log.error("the supervising process %d is gone: this worker stops", supervisor)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="hsmkms-supervisor-watch", daemon=True).start()


class Supervisor(Multiprocess):
    """uvicorn's supervisor (a worker that dies or hangs is replaced; SIGHUP replaces
    them one by one), which also drops the live gauges of a worker that is gone, so
    that `/metrics` sums the processes serving, not those that were."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], metrics: Path):
        super().__init__(config, sockets)
        self._metrics = metrics

    def keep_subprocess_alive(self) -> None:
        self._forgetting_departed(super().keep_subprocess_alive)

    def handle_signals(self) -> None:
        self._forgetting_departed(super().handle_signals)

    def _forgetting_departed(self, step: Callable[[], None]) -> None:
        before = {process.pid for process in self.processes}
        step()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                mark_process_dead(pid, str(self._metrics))  # type: ignore[no-untyped-call]


def __getattr__(name: str) -> object:
    """`worker_protocol`: the edge protocol a worker process builds for itself, from
    the same settings (uvicorn imports it by name in each process)."""
    if name != "worker_protocol":
        raise AttributeError(name)
    from hsmkms.config import load_settings

    protocol = guarded_protocol(load_settings().edge)
    subjects = [s for s in os.environ.get(SUBJECTS_ENV, "").split(",") if s]
    return subject_checked(protocol, subjects) if subjects else protocol
