"""`hsmkms serve`: the app as each server process builds it, and the uvicorn run.

With `--workers N`, uvicorn starts N processes on one socket; each imports
`app_factory` and opens its own token sessions and database connection (SoftHSM2
and SQLite both serve several processes; rotations claim their version in the
database, so processes never race on token objects).

The serving settings below are read from the environment until the settings
model carries them (names and defaults in ServeOptions.from_env).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp

from hsmkms.api.app import create_app
from hsmkms.api.ratelimit import RateLimiter
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.audit.log import AuditLog
from hsmkms.bootstrap import build_key_manager
from hsmkms.config import Settings, load_settings
from hsmkms.library import KeyManager
from hsmkms.policy.principals import CredentialStore

WORKERS_ENV = "HSMKMS_WORKERS"
EXIT_MARGIN = 5.0  # seconds past the drain for closing sessions and the module


@dataclass(frozen=True)
class ServeOptions:
    token_call_timeout: float = 30.0
    shutdown_drain: float = 10.0
    rate_limit: float = 0.0
    rate_burst: float = 0.0
    rate_limits: str = ""
    workers: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServeOptions:
        env = os.environ if env is None else env
        defaults = cls()

        def number(name: str, default: float) -> float:
            return float(env.get(f"HSMKMS_{name}") or default)

        return cls(
            token_call_timeout=number("TOKEN_CALL_TIMEOUT_SECONDS", defaults.token_call_timeout),
            shutdown_drain=number("SHUTDOWN_DRAIN_SECONDS", defaults.shutdown_drain),
            rate_limit=number("RATE_LIMIT", defaults.rate_limit),
            rate_burst=number("RATE_BURST", defaults.rate_burst),
            rate_limits=env.get("HSMKMS_RATE_LIMITS", defaults.rate_limits),
            workers=int(number("WORKERS", defaults.workers)),
        )


def build_serving_app(settings: Settings, km: KeyManager, options: ServeOptions) -> ASGIApp:
    """The HTTP app over a KeyManager, with deadlines, quotas and a bounded exit."""
    km.hsm.link.set_call_timeout(options.token_call_timeout or None)
    credentials = CredentialStore(km.store, km.hsm, km.clock)
    audit_dir = settings.data_dir / "audit"
    if options.workers > 1:
        # One hash chain per writer: the audit log is not yet shared between processes.
        audit_dir = audit_dir / f"worker-{os.getpid()}"
    return create_app(
        km.context,
        SigV4Verifier(credentials.lookup, regions=settings.regions),
        maintenance_seconds=settings.maintenance_seconds,
        audit=AuditLog(Path(audit_dir)),
        call_timeout=options.token_call_timeout or None,
        rate_limiter=RateLimiter.from_settings(
            options.rate_limit, options.rate_burst, options.rate_limits
        ),
        exit_deadline=options.shutdown_drain + EXIT_MARGIN,
    )


def app_factory() -> ASGIApp:
    """For uvicorn's worker processes (`hsmkms.api.factory:app_factory`, factory=True)."""
    settings = load_settings()
    return build_serving_app(settings, build_key_manager(settings), ServeOptions.from_env())


def serve(
    km: KeyManager,
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Run uvicorn: one process over `km`, or `workers` processes building their own.
    In-flight requests get `shutdown_drain` seconds after SIGTERM, then the process
    ends (at the latest EXIT_MARGIN seconds later, see arm_exit_deadline)."""
    import uvicorn

    options = ServeOptions.from_env()
    workers = options.workers if workers is None else workers
    common = {
        "host": host,
        "port": port,
        "ssl_certfile": tls_cert,
        "ssl_keyfile": tls_key,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": int(max(1, options.shutdown_drain)),
    }
    if workers <= 1:
        app = build_serving_app(settings, km, options)
        uvicorn.run(app, **common)  # type: ignore[arg-type]
        return
    km.close()  # each worker process opens its own sessions
    os.environ[WORKERS_ENV] = str(workers)
    uvicorn.run("hsmkms.api.factory:app_factory", factory=True, workers=workers, **common)  # type: ignore[arg-type]
