"""The browser console under /console/: pages for key custodians and auditors, built by
calling operations as the signed-in principal (calls.py), server-rendered, no script
but a small file of our own, no CDN.

Layout: calls.py (operations as the principal, their audit records), sessions.py and
signin.py (who is signed in), web.py (sessions per request, CSRF, headers, error
pages), pages.py (sign-in, inventory, a key, actions), records.py and evidence.py
(audit trail, security domain, evidence pack), inventory.py and usage.py (what the
pages show), templates/ and static/.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from hsmkms.api.ratelimit import RateLimiter
from hsmkms.audit.checkpoint import Anchor
from hsmkms.audit.log import AuditLog
from hsmkms.config import ConsoleSettings
from hsmkms.console import pages, records
from hsmkms.console.calls import Calls
from hsmkms.console.sessions import Sessions
from hsmkms.console.signin import SignInThrottle
from hsmkms.console.web import (
    PREFIX,
    Console,
    may_sign_in_here,
    read_form,
    render,
    signed_in,
    with_security_headers,
)
from hsmkms.errors import KMSError
from hsmkms.operations.context import OperationContext
from hsmkms.policy.principals import CredentialStore

__all__ = ["PREFIX", "build_console"]

HERE = Path(__file__).resolve().parent


def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # a missing record member renders as nothing (records vary)
    )
    environment.filters["when"] = lambda value: (
        value.strftime("%Y-%m-%d %H:%M UTC") if hasattr(value, "strftime") else (value or "")
    )
    environment.filters["day"] = lambda value: (
        value.strftime("%Y-%m-%d") if hasattr(value, "strftime") else (value or "")
    )
    environment.filters["stamp"] = lambda value: str(value or "")[:19].replace("T", " ")
    return environment


def build_console(
    ctx: OperationContext,
    credentials: CredentialStore,
    audit: AuditLog | None,
    anchor: Anchor | None,
    settings: ConsoleSettings,
    *,
    region: str,
    regions: tuple[str, ...] = (),
    rate_limiter: RateLimiter | None = None,
) -> ASGIApp:
    """The console's ASGI app, for `create_app(console=...)` to serve under PREFIX."""
    console = Console(
        calls=Calls(ctx, audit, region, rate_limiter),
        sessions=Sessions(ctx.store, settings),
        credentials=credentials,
        throttle=SignInThrottle(settings.signin_failures, settings.signin_window_seconds),
        settings=settings,
        hsm=ctx.hsm,
        audit_dir=None if audit is None else audit.directory,
        anchor=anchor,
        regions=(region, *(r for r in regions if r != region)) if regions else (),
        templates=_templates(),
    )

    async def signin(request: Request) -> Response:
        import anyio.to_thread

        if not may_sign_in_here(request):
            return render(console, "https_only.html", 403)
        if request.method == "GET":
            return pages.signin_form(console, request)
        try:
            form = await read_form(request)
        except KMSError as exc:
            return pages.signin_form(console, request, exc.message, 400)
        return await anyio.to_thread.run_sync(lambda: pages.sign_in(console, request, form))

    async def home(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/keys", status_code=303)

    routes = [
        Route(f"{PREFIX}", home),
        Route(f"{PREFIX}/", home),
        Route(f"{PREFIX}/signin", signin, methods=["GET", "POST"]),
        Route(f"{PREFIX}/signout", signed_in(console, pages.sign_out), methods=["POST"]),
        Route(f"{PREFIX}/keys", signed_in(console, pages.inventory)),
        Route(f"{PREFIX}/keys.csv", signed_in(console, pages.inventory_csv)),
        Route(f"{PREFIX}/keys/{{key_id}}", signed_in(console, pages.key_page)),
        Route(f"{PREFIX}/keys/{{key_id}}/schedule-deletion",
              signed_in(console, pages.confirm_deletion)),
        Route(f"{PREFIX}/keys/{{key_id}}/{{action}}", signed_in(console, pages.act),
              methods=["POST"]),
        Route(f"{PREFIX}/audit", signed_in(console, records.audit_page)),
        Route(f"{PREFIX}/audit/verify", signed_in(console, records.verify_page),
              methods=["POST"]),
        Route(f"{PREFIX}/security", signed_in(console, records.security_page)),
        Route(f"{PREFIX}/evidence", signed_in(console, records.evidence_form)),
        Route(f"{PREFIX}/evidence.zip", signed_in(console, records.evidence_download)),
        Mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]  # fmt: skip
    return with_security_headers(Starlette(routes=routes))
