"""The console's request plumbing: the session behind each page, the CSRF check on every
form, the security headers on every response, and errors as pages (a KMS error shows
its code and AWS's message; an access-denied page shows no key data).

Pages run in worker threads (they call the token and the database); the event loop
only parses the form and sends the answer.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hsmkms.audit.checkpoint import Anchor
from hsmkms.config import ConsoleSettings, is_known_region
from hsmkms.console.calls import Calls, Visitor
from hsmkms.console.sessions import Session, Sessions
from hsmkms.console.signin import SignInThrottle
from hsmkms.errors import (
    AccessDeniedException,
    KMSError,
    KMSInternalException,
    ValidationException,
)
from hsmkms.policy.principals import CredentialStore
from hsmkms.token import Token

log = logging.getLogger("hsmkms.console")

PREFIX = "/console"
COOKIE = "hsmkms_console"
SIGNIN_COOKIE = "hsmkms_console_signin"  # the sign-in form's own CSRF token
MAX_FORM_FIELDS = 32
# No inline script or style anywhere: the chart is SVG with presentation attributes.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make Origin "null"
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
CSRF_REFUSED = "The form's CSRF token is missing or wrong: reload the page and try again."


@dataclass
class Console:
    """Everything the pages need, built once per process."""

    calls: Calls
    sessions: Sessions
    credentials: CredentialStore
    throttle: SignInThrottle
    settings: ConsoleSettings
    hsm: Token
    audit_dir: Path | None
    anchor: Anchor | None
    regions: tuple[str, ...]  # the regions served (empty: any); the console's is first
    templates: jinja2.Environment
    last_verification: dict[str, Any] = field(default_factory=dict)

    def region_of(self, request: Request) -> str:
        """The region a page asks for (?region=), one this server serves."""
        region = request.query_params.get("region") or self.calls.region
        if not is_known_region(region) or (self.regions and region not in self.regions):
            raise ValidationException(f"Region {region[:64]!r} is not served here.")
        return region


@dataclass
class Visit:
    """One signed-in request."""

    request: Request
    visitor: Visitor
    session: Session
    form: dict[str, str]

    def param(self, name: str, default: str = "") -> str:
        return self.form.get(name) or self.request.query_params.get(name, default)


Page = Callable[[Console, Visit], Response]


def render(console: Console, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = console.templates.get_template(template).render(prefix=PREFIX, **context)
    return HTMLResponse(html, status_code=status)


def page_context(visit: Visit) -> dict[str, Any]:
    return {"principal": visit.visitor.principal_arn, "csrf": visit.session.csrf}


def error_page(console: Console, error: KMSError, visit: Visit | None) -> HTMLResponse:
    status = 403 if isinstance(error, AccessDeniedException) else error.status
    if error.code == "NotFoundException":
        status = 404
    context = page_context(visit) if visit is not None else {}
    return render(console, "error.html", status, code=error.code, message=error.message, **context)


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def may_sign_in_here(request: Request) -> bool:
    """Secrets cross the wire only under TLS, or without leaving this machine."""
    if secure(request):
        return True
    client = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


def visitor_of(request: Request, principal_arn: str, access_key_id: str) -> Visitor:
    return Visitor(
        principal_arn,
        access_key_id,
        request.client.host if request.client else None,
        secure(request),
    )


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form (the body limit below the app bounds its size)."""
    if request.method != "POST":
        return {}
    body = await request.body()
    if not body:
        return {}  # no fields: no CSRF token either, refused as such
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ValidationException("Forms are sent as application/x-www-form-urlencoded.")
    try:
        fields = urllib.parse.parse_qs(
            body.decode(), max_num_fields=MAX_FORM_FIELDS, strict_parsing=False
        )
    except (UnicodeDecodeError, ValueError):
        raise ValidationException("The form could not be read.") from None
    return {name: values[0] for name, values in fields.items()}


def same_origin(request: Request) -> bool:
    """A browser names the page a form came from; another site's is refused."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def tokens_match(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


def to_signin(reason: str = "") -> RedirectResponse:
    query = f"?{urllib.parse.urlencode({'reason': reason})}" if reason else ""
    response = RedirectResponse(f"{PREFIX}/signin{query}", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


def signed_in(console: Console, page: Page) -> Callable[[Request], Any]:
    """A page for a signed-in principal: its session (expired: back to sign-in), its
    access key checked again (disabled or deleted: the session ends), the form's CSRF
    token on every POST, then the page in a worker thread."""

    async def endpoint(request: Request) -> Response:
        token = request.cookies.get(COOKIE, "")
        form: dict[str, str] = {}
        visit: Visit | None = None
        try:
            form = await read_form(request)
            session, ended = await anyio.to_thread.run_sync(lambda: _session(console, token))
            if session is None:
                return to_signin(ended)
            visit = Visit(
                request,
                visitor_of(request, session.principal_arn, session.access_key_id),
                session,
                form,
            )
            if request.method == "POST" and not (
                same_origin(request) and tokens_match(form.get("csrf"), session.csrf)
            ):
                raise AccessDeniedException(CSRF_REFUSED)
            current = visit
            return await anyio.to_thread.run_sync(lambda: page(console, current))
        except KMSError as exc:
            return error_page(console, exc, visit)
        except Exception:  # our fault: logged, a clean page without the details
            log.exception("console page %s failed", request.url.path)
            return error_page(console, KMSInternalException("An internal error occurred."), visit)

    return endpoint


def _session(console: Console, token: str) -> tuple[Session | None, str]:
    session = console.sessions.find(token)
    if session is None:
        return None, "expired" if token else ""
    credential = console.credentials.lookup(session.access_key_id)
    if credential is None or credential.principal_arn != session.principal_arn:
        console.sessions.end(token)
        visitor = Visitor(session.principal_arn, session.access_key_id, None, False)
        console.calls.record_sign_out(visitor, "access key no longer active")
        return None, "revoked"
    return session, ""


def with_security_headers(app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                headers = [h for h in message.get("headers", []) if h[0].lower() not in names]
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped
