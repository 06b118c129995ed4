"""The XKS proxy face of the edge: `POST /<prefix>/kms/xks/v1/health` and
`POST /<prefix>/kms/xks/v1/keys/<externalKeyId>/{metadata,encrypt,decrypt}`.

Each URI prefix is a logical key store with its own SigV4 credentials (service
`kms-xks-proxy`) and optional secondary-authorization policy. This face routes the
path, verifies the signature and parses the JSON body; the operation itself runs
through the proxy's operation table (xks/table.py). Errors are `{"errorName": ...,
"errorMessage": ...}` with the specification's statuses (api/xks_proxy_errors.py).
Like every request, the edge pipeline (api/edge.py) records the call before it answers.
"""

from __future__ import annotations

import base64
import json
import re

from hsmkms.api.edge import Headers, Seen
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.api.xks_proxy_errors import (
    InvalidUriPathException,
    MethodNotAllowed,
    ThrottlingException,
    error_json,
    xks_error,
    xks_names,
)
from hsmkms.audit.outcome import Outcome
from hsmkms.config import XksSettings
from hsmkms.errors import KMSError, ValidationException
from hsmkms.json_input import parse_json
from hsmkms.operations.context import OperationContext
from hsmkms.xks import table
from hsmkms.xks.credentials import XksCredentialStore, normalize_prefix
from hsmkms.xks.operations import HealthCheck, Response
from hsmkms.xks.policy import XksPolicies
from hsmkms.xks_spec import SERVICE

MAX_BODY = 64 * 1024  # the largest valid request (8 KiB AAD + 8 KiB data, base64) fits
_PATH = re.compile(
    r"^/(?:(?P<prefix>.*?)/)?kms/xks/v1/(?:(?P<health>health)|keys/(?P<key>[A-Za-z0-9._-]{1,128})"
    r"/(?P<op>metadata|encrypt|decrypt))\Z"
)
JSON = [(b"content-type", b"application/json")]
ALLOW_POST = [*JSON, (b"allow", b"POST")]


def _encode(response: Response) -> bytes:
    return json.dumps(
        {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
         for k, v in response.items()},
        separators=(",", ":"),
    ).encode()  # fmt: skip


class XksProxyFace:
    """The XKS routes of one server: key stores by URI prefix, in front of `ctx`."""

    protocol = "xks"
    max_body: int | None = MAX_BODY
    names = staticmethod(xks_names)

    def __init__(self, ctx: OperationContext, settings: XksSettings) -> None:
        self._ctx = ctx
        self._settings = settings
        self.credentials = XksCredentialStore(ctx.store, ctx.hsm)
        self.policies = XksPolicies(ctx.store)
        self._proxy = table.Proxy(
            self.policies,
            HealthCheck(min(settings.health_cache_seconds, 60.0)),
            settings.fleet_size,
        )
        self._verifiers = {
            prefix: SigV4Verifier(
                self.credentials.lookup_for(prefix), service=SERVICE, regions=settings.regions
            )
            for prefix in {normalize_prefix(p) for p in settings.uri_prefixes}
        }
        self.pending = 0

    @staticmethod
    def handles(path: str) -> bool:
        return "kms/xks/" in path

    def admit(self, seen: Seen) -> KMSError | None:
        if seen.method != "POST":
            return MethodNotAllowed("XKS API calls are POST requests.")
        if seen.body_bytes > MAX_BODY:
            return ValidationException(f"The request body is larger than {MAX_BODY} bytes.")
        if self.pending > self._settings.max_pending:
            return ThrottlingException("Too many requests in progress; retry later.")
        return None

    def slow(self, seen: Seen) -> bool:
        return False

    def _route(self, path: str) -> tuple[str | None, str | None, str | None]:
        """(key store prefix if served here, route, externalKeyId) of a path."""
        match = _PATH.match(path)
        if match is None:
            return None, None, None
        prefix = normalize_prefix(match["prefix"] or "")
        route = "health" if match["health"] else match["op"]
        return (prefix if prefix in self._verifiers else None), route, match["key"]

    def handle(self, seen: Seen) -> Outcome:
        try:
            prefix, route, key_id = self._route(seen.path)
        except ValidationException:  # a prefix no key store could have
            prefix, route, key_id = None, None, None
        if prefix is None or route is None:
            unserved = InvalidUriPathException(f"{seen.path[:200]} is not an XKS API path here.")
            return table.proxy_outcome(route, None, key_id, error=unserved)
        try:
            verified = self._verifiers[prefix].verify(
                "POST", seen.path, seen.query, seen.headers, seen.body
            )
        except KMSError as exc:
            return table.proxy_outcome(route, prefix, key_id, error=exc)
        caller = table.ProxyCaller(verified.access_key_id, verified.region, prefix)
        try:
            body = parse_json(seen.body)
            if not isinstance(body, dict):
                raise ValidationException("The request body must be a JSON object.")
        except ValueError:  # ValidationException is no ValueError
            error = ValidationException("The request body is not valid JSON.")
            return table.proxy_outcome(route, prefix, key_id, caller=caller, error=error)
        except ValidationException as exc:
            return table.proxy_outcome(route, prefix, key_id, caller=caller, error=exc)
        return table.invoke(self._ctx, self._proxy, caller, route, key_id, body)

    def refused(self, seen: Seen, error: KMSError) -> Outcome:
        try:
            prefix, route, key_id = self._route(seen.path)
        except ValidationException:
            prefix, route, key_id = None, None, None
        return table.proxy_outcome(route, prefix, key_id, error=error)

    def respond(self, seen: Seen, outcome: Outcome) -> tuple[int, Headers, bytes]:
        if outcome.error is None:
            return 200, JSON, _encode(outcome.response)
        status, name, message = xks_error(outcome.error)
        return status, ALLOW_POST if status == 405 else JSON, error_json(name, message)
