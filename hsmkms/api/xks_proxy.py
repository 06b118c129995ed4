"""The XKS proxy API over HTTP: `POST /<prefix>/kms/xks/v1/health` and
`POST /<prefix>/kms/xks/v1/keys/<externalKeyId>/{metadata,encrypt,decrypt}`.

Each URI prefix is a logical key store with its own SigV4 credentials (service
`kms-xks-proxy`) and optional secondary-authorization policy. Like the KMS API,
requests are served as a bare ASGI handler, with token work in the shared worker
threads, and every call lands in the audit trail with its requestMetadata (never
plaintext, ciphertext or AAD).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.types import Receive, Scope, Send

from hsmkms.api.refusals import EdgeRefusals
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.api.workers import WorkerPool
from hsmkms.api.xks_proxy_errors import (
    InvalidUriPathException,
    MethodNotAllowed,
    ThrottlingException,
    error_json,
    xks_error,
)
from hsmkms.audit.log import AuditLog
from hsmkms.config import XksSettings
from hsmkms.errors import (
    KMSError,
    KMSInternalException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.operations.context import OperationContext, Response
from hsmkms.xks import operations as xks
from hsmkms.xks.credentials import XksCredentialStore, normalize_prefix
from hsmkms.xks.policy import XksPolicies
from hsmkms.xks_spec import ALGORITHM, CDIV_ALGORITHM, SERVICE

MAX_BODY = 64 * 1024  # the largest valid request (8 KiB AAD + 8 KiB data, base64) fits
_PATH = re.compile(
    r"^/(?:(?P<prefix>.*?)/)?kms/xks/v1/(?:(?P<health>health)|keys/(?P<key>[A-Za-z0-9._-]{1,128})"
    r"/(?P<op>metadata|encrypt|decrypt))$"
)
_OPERATIONS = {
    "health": "GetHealthStatus",
    "metadata": "GetKeyMetadata",
    "encrypt": "Encrypt",
    "decrypt": "Decrypt",
}
_REQUIRED_METADATA = {
    "health": ("kmsRequestId", "kmsOperation"),
    "metadata": ("awsPrincipalArn", "kmsOperation", "kmsRequestId"),
    "encrypt": ("awsPrincipalArn", "kmsKeyArn", "kmsOperation", "kmsRequestId"),
    "decrypt": ("awsPrincipalArn", "kmsKeyArn", "kmsOperation", "kmsRequestId"),
}
_OPTIONAL_METADATA = ("awsSourceVpc", "awsSourceVpce", "kmsViaService")
JSON = b"application/json"
log = logging.getLogger("hsmkms.api.xks_proxy")


@dataclass(slots=True)
class _Call:
    path: str
    query: str
    headers: dict[str, list[str]]
    body: bytes
    client: str | None
    prefix: str | None = None
    route: str = ""
    external_key_id: str | None = None
    access_key_id: str | None = None
    region: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    key_arn: str | None = None


def _b64(body: dict[str, Any], name: str, *, required: bool) -> bytes:
    value = body.get(name)
    if value is None:
        if required:
            raise ValidationException(f"{name} is required.")
        return b""
    if not isinstance(value, str):
        raise ValidationException(f"{name} must be a Base64 string.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationException(f"{name} is not valid Base64.") from None


def _request_metadata(body: dict[str, Any], route: str) -> dict[str, str]:
    metadata = body.get("requestMetadata")
    if not isinstance(metadata, dict):
        raise ValidationException("requestMetadata is required.")
    for name in _REQUIRED_METADATA[route]:
        if not isinstance(metadata.get(name), str) or not metadata[name]:
            raise ValidationException(f"requestMetadata.{name} is required.")
    for name in _OPTIONAL_METADATA:
        if name in metadata and not isinstance(metadata[name], str):
            raise ValidationException(f"requestMetadata.{name} must be a string.")
    # Fields KMS may add later are kept for the audit trail, never refused.
    return {k: v for k, v in metadata.items() if isinstance(v, str) and len(v) <= 4096}


def _encode(response: Response) -> bytes:
    return json.dumps(
        {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
         for k, v in response.items()},
        separators=(",", ":"),
    ).encode()  # fmt: skip


class XksEndpoint:
    """The XKS routes of one server: key stores by URI prefix, in front of `ctx`."""

    def __init__(
        self,
        ctx: OperationContext,
        workers: WorkerPool,
        settings: XksSettings,
        audit: AuditLog | None = None,
        refusals: EdgeRefusals | None = None,
    ) -> None:
        """refusals: the app's recorder, which keeps floods of refusals out of the trail."""
        self._ctx = ctx
        self._workers = workers
        self._settings = settings
        self._audit = audit
        self._refusals = refusals
        self.credentials = XksCredentialStore(ctx.store, ctx.hsm)
        self.policies = XksPolicies(ctx.store)
        self._health = xks.HealthCheck(min(settings.health_cache_seconds, 60.0))
        self._verifiers = {
            prefix: SigV4Verifier(
                self.credentials.lookup_for(prefix),
                service=SERVICE,
                regions=settings.regions,
            )
            for prefix in {normalize_prefix(p) for p in settings.uri_prefixes}
        }
        self._pending = 0
        self._run_id, self._numbers = str(uuid.uuid4())[:23], itertools.count()

    @staticmethod
    def handles(path: str) -> bool:
        return "kms/xks/" in path

    def _handle(self, call: _Call) -> Response:
        match = _PATH.match(call.path)
        prefix = normalize_prefix(match["prefix"] or "") if match else None
        if match is None or prefix not in self._verifiers:
            raise InvalidUriPathException(f"{call.path[:200]} is not an XKS API path here.")
        call.prefix = prefix
        call.route = "health" if match["health"] else match["op"]
        call.external_key_id = match["key"]
        verifier = self._verifiers[prefix]
        caller = verifier.verify("POST", call.path, call.query, call.headers, call.body)
        call.access_key_id, call.region = caller.access_key_id, caller.region
        try:
            body = json.loads(call.body)
        except ValueError:
            raise ValidationException("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ValidationException("The request body must be a JSON object.")
        call.metadata = _request_metadata(body, call.route)
        if call.route == "health":
            return xks.get_health_status(
                self._ctx, check=self._health, fleet_size=self._settings.fleet_size
            )
        return self._key_operation(call, body)

    def _key_operation(self, call: _Call, body: dict[str, Any]) -> Response:
        ctx, key_id, route = self._ctx, call.external_key_id, call.route
        ctx.keys.refresh()  # see writes committed on any node before this request
        assert key_id is not None and call.prefix is not None
        if route != "metadata":
            algorithm = body.get("encryptionAlgorithm")
            call.parameters["encryptionAlgorithm"] = algorithm
            if not isinstance(algorithm, str):
                raise ValidationException("encryptionAlgorithm is required.")
            if algorithm != ALGORITHM:
                raise UnsupportedOperationException(
                    f"encryptionAlgorithm {algorithm[:64]} is not supported; use AES_GCM."
                )
        key = xks.external_key(ctx, key_id)
        call.key_arn = key.record.arn
        self.policies.require(call.prefix, _OPERATIONS[route], key.record.arn, key_id,
                              call.metadata)  # fmt: skip
        if route == "metadata":
            return xks.get_key_metadata(ctx, external_key_id=key_id)
        aad = _b64(body, "additionalAuthenticatedData", required=False)
        call.parameters["additionalAuthenticatedDataLength"] = len(aad)
        if route == "encrypt":
            cdiv = body.get("ciphertextDataIntegrityValueAlgorithm")
            call.parameters["ciphertextDataIntegrityValueAlgorithm"] = cdiv
            if cdiv is not None and cdiv != CDIV_ALGORITHM:
                raise ValidationException("ciphertextDataIntegrityValueAlgorithm must be SHA_256.")
            return xks.encrypt(
                ctx,
                external_key_id=key_id,
                plaintext=_b64(body, "plaintext", required=True),
                additional_authenticated_data=aad,
                with_integrity_value=cdiv is not None,
            )
        return xks.decrypt(
            ctx,
            external_key_id=key_id,
            ciphertext=_b64(body, "ciphertext", required=True),
            initialization_vector=_b64(body, "initializationVector", required=True),
            authentication_tag=_b64(body, "authenticationTag", required=True),
            additional_authenticated_data=aad,
            ciphertext_metadata=_b64(body, "ciphertextMetadata", required=False),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= MAX_BODY:
                chunks.append(chunk)
            if not message.get("more_body"):
                break
        headers: dict[str, list[str]] = {}
        for raw_name, value in scope["headers"]:
            headers.setdefault(raw_name.decode("latin-1").lower(), []).append(
                value.decode("latin-1")
            )
        client = scope.get("client")
        call = _Call(
            scope["path"],
            scope["query_string"].decode("latin-1"),
            headers,
            b"".join(chunks),
            client[0] if client else None,
        )
        failure: KMSError | None = None
        payload = b""
        self._pending += 1
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed("XKS API calls are POST requests.")
            if size > MAX_BODY:
                raise ValidationException(f"The request body is larger than {MAX_BODY} bytes.")
            if self._pending > self._settings.max_pending:
                raise ThrottlingException("Too many requests in progress; retry later.")
            payload = _encode(await self._workers.run(lambda: self._handle(call)))
        except KMSError as exc:
            failure = exc
        except Exception:  # a real fault: logged here, a clean 500 to the client
            log.exception("internal error in XKS %s", call.route or call.path[:100])
            failure = KMSInternalException("An internal error occurred.")
        finally:
            self._pending -= 1
        status = 200
        if failure is not None:
            status, error_name, error_message = xks_error(failure)
            payload = error_json(error_name, error_message)
        request_id = f"{self._run_id}-{next(self._numbers):012x}"
        response_headers = [
            (b"content-type", JSON),
            (b"content-length", str(len(payload)).encode()),
            (b"x-amzn-requestid", request_id.encode()),
        ]
        if status == 405:
            response_headers.append((b"allow", b"POST"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})
        if self._audit is not None and (
            self._refusals is None or self._refusals.should_record(call.client, failure)
        ):
            self._audit.record(self._event(call, request_id, failure, started))

    def _event(
        self, call: _Call, request_id: str, failure: KMSError | None, started: float
    ) -> dict[str, Any]:
        """A CloudTrail-shaped record; requestMetadata in full, never data or AAD."""
        operation = _OPERATIONS.get(call.route, "Unknown")
        parameters: dict[str, Any] = {
            "uriPrefix": call.prefix,
            "requestMetadata": call.metadata,
            **{k: v for k, v in call.parameters.items() if v is not None},
        }
        if call.external_key_id is not None:
            parameters["externalKeyId"] = call.external_key_id
        event: dict[str, Any] = {
            "eventVersion": "1.08",
            "eventTime": datetime.now(UTC).isoformat(),
            "eventSource": SERVICE,
            "eventName": operation,
            "awsRegion": call.region,
            "sourceIPAddress": call.client,
            "userIdentity": None
            if call.access_key_id is None
            else {
                "type": "XksProxyCredential",
                "accessKeyId": call.access_key_id,
                "keyStore": f"/{call.prefix}/kms/xks/v1",
            },
            "requestParameters": parameters,
            "requestID": request_id,
            "readOnly": operation in ("GetHealthStatus", "GetKeyMetadata"),
            "processingMillis": round((time.perf_counter() - started) * 1000, 3),
        }
        if call.key_arn is not None:
            event["resources"] = [{"ARN": call.key_arn, "type": "AWS::KMS::Key"}]
        if failure is not None:
            _, name, message = xks_error(failure)
            event["errorCode"] = name
            event["errorMessage"] = message
        return event
