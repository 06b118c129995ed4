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
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from hsmkms.api.body import DEFAULT_MAX_REQUEST_BYTES, limit_body
from hsmkms.api.mtls import client_tls_options, subject_checked
from hsmkms.api.protocol import guarded_protocol

log = logging.getLogger("hsmkms.api")


@dataclass(frozen=True)
class EdgeLimits:
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_header_count: int = 100
    max_header_bytes: int = 16 * 1024  # request line and headers
    header_timeout_seconds: float = 10.0  # connect (or a later request's first byte) to headers end
    body_timeout_seconds: float = 20.0  # headers end to body end
    max_connections: int = 512
    max_connections_per_client: int = 128  # per peer address; trusted proxies exempt
    keep_alive_seconds: int = 5

    def __post_init__(self) -> None:
        for field in fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"{field.name} must be positive")


def edge_limits(settings: object) -> EdgeLimits:
    """The limits a settings object names (HSMKMS_MAX_REQUEST_BYTES -> its
    `max_request_bytes`, ...); each one it lacks keeps its default."""
    given = {
        field.name: getattr(settings, field.name)
        for field in fields(EdgeLimits)
        if getattr(settings, field.name, None) is not None
    }
    return EdgeLimits(**given)


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


def build_server(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    limits: EdgeLimits = EdgeLimits(),
    log_level: str = "warning",
    client_ca: str | None = None,
    client_subjects: Sequence[str] = (),
    drain_seconds: float = 10.0,
    trusted_proxies: Sequence[str] = (),
) -> uvicorn.Server:
    """A uvicorn server for `app` with `limits`, not yet started (`.run()`).
    `client_ca`: require client certificates from that CA (mutual TLS); `client_subjects`:
    and one of these subject CNs (api/mtls.py); `trusted_proxies`: see the module."""
    _allow_descriptors(limits.max_connections)
    protocol = guarded_protocol(limits, trusted_proxies)
    if client_subjects:
        protocol = subject_checked(protocol, client_subjects)
    config = uvicorn.Config(
        limit_body(app, limits.max_request_bytes),
        host=host,
        port=port,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        http=protocol,
        ws="none",
        timeout_keep_alive=limits.keep_alive_seconds,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=int(max(1, drain_seconds)),
        **client_tls_options(client_ca),
        **proxy_options(trusted_proxies),
    )
    return uvicorn.Server(config)


def serve(
    app: ASGIApp | None,
    *,
    host: str,
    port: int,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    limits: EdgeLimits = EdgeLimits(),
    client_ca: str | None = None,
    client_subjects: Sequence[str] = (),
    drain_seconds: float = 10.0,
    workers: int = 1,
    trusted_proxies: Sequence[str] = (),
) -> None:
    """Serve `app` until interrupted; in-flight requests get `drain_seconds` after
    SIGTERM. With `workers` > 1, uvicorn runs that many processes on one socket, each
    building its own app (`hsmkms.bootstrap:app_factory`) and edge protocol
    (`hsmkms.api.server:worker_protocol`, from the same settings) — `app` is unused."""
    if workers > 1:
        _allow_descriptors(limits.max_connections)
        os.environ[SUBJECTS_ENV] = ",".join(client_subjects)  # for the worker processes
        uvicorn.run(
            "hsmkms.bootstrap:app_factory",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
            http="hsmkms.api.server:worker_protocol",
            ws="none",
            timeout_keep_alive=limits.keep_alive_seconds,
            timeout_graceful_shutdown=int(max(1, drain_seconds)),
            log_level="warning",
            access_log=False,
            **client_tls_options(client_ca),
            **proxy_options(trusted_proxies),
        )
        return
    assert app is not None
    build_server(
        app,
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        limits=limits,
        client_ca=client_ca,
        client_subjects=client_subjects,
        drain_seconds=drain_seconds,
        trusted_proxies=trusted_proxies,
    ).run()


SUBJECTS_ENV = "HSMKMS_SERVE_CLIENT_SUBJECTS"


def __getattr__(name: str) -> object:
    """`worker_protocol`: the edge protocol a worker process builds for itself, from
    the same settings (uvicorn imports it by name in each process)."""
    if name != "worker_protocol":
        raise AttributeError(name)
    from hsmkms.config import load_settings

    settings = load_settings()
    protocol = guarded_protocol(edge_limits(settings), settings.trusted_proxies)
    subjects = [s for s in os.environ.get(SUBJECTS_ENV, "").split(",") if s]
    return subject_checked(protocol, subjects) if subjects else protocol
