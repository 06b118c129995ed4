"""The client side of the XKS Proxy API: what hsmkms, acting as AWS KMS, sends to an
external key store proxy.

Requests are JSON POSTs to `<UriEndpoint><UriPath>/health` and
`.../keys/<XksKeyId>/{metadata,encrypt,decrypt}`, signed with SigV4 (service
`kms-xks-proxy`) by botocore's signer, carrying `requestMetadata` as AWS KMS sends
it. Every call has KMS's 250 ms budget. A failure is an `XksProxyFailure` whose
`reason` is one row of the specification's "KMS Considerations" table; the
operations turn it into the exception AWS KMS returns for their operation.

The UriEndpoint is `https://host` (AWS's pattern, port 443). An operator may route a
host elsewhere (`register_route`: a test proxy on a loopback port, a proxy behind a
private name); the route is operator configuration kept in the database, never
something an API caller can set.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hsmkms.errors import ValidationException
from hsmkms.json_input import parse_json
from hsmkms.store.base import MetadataStore
from hsmkms.xks_spec import (
    ALGORITHM,
    CDIV_ALGORITHM,
    ERROR_NAMES,
    HEALTH_STATUSES,
    IV_BYTES,
    MAX_METADATA_BYTES,
    SERVICE,
    TAG_BYTES,
    XksCiphertext,
    cdiv,
)

if TYPE_CHECKING:
    import httpx

TIMEOUT_SECONDS = 0.25  # "If KMS does not receive a response ... within 250ms"
ROUTES = "xks-proxy-route"  # documents kind: host -> base URL the operator chose
# Failures on our side of the wire (the table's last rows).
UNREACHABLE = "Unreachable"  # no TCP connection
TLS = "Tls"  # no TLS connection
TIMED_OUT = "TimedOut"  # no answer within the budget
MALFORMED = "Malformed"  # an answer KMS cannot interpret
ALL_UNAVAILABLE = "AllUnavailable"  # health: every external key manager UNAVAILABLE
BAD_CIPHERTEXT = "InvalidCiphertextFromProxy"  # encrypt's answer failed its checks


class XksProxyFailure(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ProxyTarget:
    """Where and how to reach one external key store's proxy."""

    uri_endpoint: str
    uri_path: str
    access_key_id: str
    secret: str = field(repr=False)
    region: str
    base_url: str  # uri_endpoint, or the operator's route for its host


def register_route(store: MetadataStore, host: str, base_url: str) -> None:
    """Send requests for `https://host` to base_url instead (operator setting)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValidationException(f"A route goes to scheme://host[:port], not {base_url!r}.")
    with store.transaction() as tx:
        tx.put_document(ROUTES, host.lower(), json.dumps({"base_url": base_url.rstrip("/")}))


def base_url(reader: Any, uri_endpoint: str) -> str:
    host = urlsplit(uri_endpoint).hostname or ""
    text = reader.get_document(ROUTES, host.lower())
    if text is None:
        return uri_endpoint.rstrip("/")
    route: str = json.loads(text)["base_url"]
    return route


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(body: Mapping[str, Any], name: str, *, required: bool = True) -> bytes:
    value = body.get(name)
    if value is None and not required:
        return b""
    if not isinstance(value, str):
        raise XksProxyFailure(MALFORMED, f"{name} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise XksProxyFailure(MALFORMED, f"{name} is not base64") from None


@functools.cache
def _http() -> httpx.Client:
    """One client for the process (thread-safe; keeps connections warm), made on first use:
    httpx and botocore's signer are imported only where an external key store is called,
    which keeps every CLI command's start-up short."""
    import httpx

    return httpx.Client(follow_redirects=False)


class XksClient:
    def __init__(self, target: ProxyTarget, timeout: float = TIMEOUT_SECONDS) -> None:
        self.target = target
        self.timeout = timeout

    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        target = self.target
        url = f"{target.base_url}{target.uri_path}/{route}"
        data = json.dumps(body, separators=(",", ":")).encode()
        request = AWSRequest(
            method="POST", url=url, data=data, headers={"Content-Type": "application/json"}
        )
        credentials = Credentials(target.access_key_id, target.secret)
        SigV4Auth(credentials, SERVICE, target.region).add_auth(request)
        started = time.monotonic()
        try:
            response = _http().post(
                url,
                content=data,
                headers=dict(request.headers.items()),
                timeout=httpx.Timeout(self.timeout),
            )
        except httpx.TimeoutException:
            raise XksProxyFailure(TIMED_OUT) from None
        except httpx.ConnectError as exc:
            tls = isinstance(exc.__cause__, ssl.SSLError) or "SSL" in str(exc)
            raise XksProxyFailure(TLS if tls else UNREACHABLE) from None
        except httpx.HTTPError as exc:
            raise XksProxyFailure(UNREACHABLE, type(exc).__name__) from None
        # httpx times each phase; KMS's budget is for the whole exchange.
        if time.monotonic() - started > self.timeout:
            raise XksProxyFailure(TIMED_OUT, "late answer")
        return _answer(response)

    def health(self, metadata: dict[str, str]) -> dict[str, Any]:
        body = self._post("health", {"requestMetadata": metadata})
        fleet = body.get("ekmFleetDetails")
        size = body.get("xksProxyFleetSize")
        if not isinstance(fleet, list) or not 1 <= len(fleet) <= 10:
            raise XksProxyFailure(MALFORMED, "ekmFleetDetails")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise XksProxyFailure(MALFORMED, "xksProxyFleetSize")
        statuses = [e.get("healthStatus") if isinstance(e, dict) else None for e in fleet]
        if not set(statuses) <= HEALTH_STATUSES:
            raise XksProxyFailure(MALFORMED, "healthStatus")
        if all(status == "UNAVAILABLE" for status in statuses):
            raise XksProxyFailure(ALL_UNAVAILABLE)
        return body

    def key_metadata(self, key_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        body = self._post(f"keys/{key_id}/metadata", {"requestMetadata": metadata})
        usage = body.get("keyUsage")
        if (
            not isinstance(body.get("keySpec"), str)
            or not isinstance(usage, list)
            or not all(isinstance(u, str) for u in usage)
            or body.get("keyStatus") not in ("ENABLED", "DISABLED")
        ):
            raise XksProxyFailure(MALFORMED, "key metadata")
        return body

    def encrypt(
        self, key_id: str, metadata: dict[str, str], plaintext: bytes, aad: bytes
    ) -> XksCiphertext:
        body = self._post(
            f"keys/{key_id}/encrypt",
            {
                "requestMetadata": metadata,
                "plaintext": _b64(plaintext),
                "encryptionAlgorithm": ALGORITHM,
                "additionalAuthenticatedData": _b64(aad),
                "ciphertextDataIntegrityValueAlgorithm": CDIV_ALGORITHM,
            },
        )
        result = XksCiphertext(
            _unb64(body, "ciphertext"),
            _unb64(body, "initializationVector"),
            _unb64(body, "authenticationTag"),
            _unb64(body, "ciphertextMetadata", required=False),
        )
        check = _unb64(body, "ciphertextDataIntegrityValue")
        expected = cdiv(aad, result.metadata, result.iv, result.ciphertext, result.tag)
        shape_ok = (
            len(result.iv) == IV_BYTES
            and len(result.tag) == TAG_BYTES
            and len(result.metadata) <= MAX_METADATA_BYTES
            and len(result.ciphertext) == len(plaintext)
        )
        # KMS computes the CDIV itself and refuses a mismatch: such a ciphertext
        # might never decrypt.
        if not shape_ok or not hmac.compare_digest(check, expected):
            raise XksProxyFailure(BAD_CIPHERTEXT)
        return result

    def decrypt(
        self, key_id: str, metadata: dict[str, str], sealed: XksCiphertext, aad: bytes
    ) -> bytes:
        request: dict[str, Any] = {
            "requestMetadata": metadata,
            "encryptionAlgorithm": ALGORITHM,
            "additionalAuthenticatedData": _b64(aad),
            "ciphertext": _b64(sealed.ciphertext),
            "initializationVector": _b64(sealed.iv),
            "authenticationTag": _b64(sealed.tag),
        }
        if sealed.metadata:
            request["ciphertextMetadata"] = _b64(sealed.metadata)
        body = self._post(f"keys/{key_id}/decrypt", request)
        plaintext = _unb64(body, "plaintext")
        if len(plaintext) != len(sealed.ciphertext):
            raise XksProxyFailure(MALFORMED, "plaintext length")
        return plaintext


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        body = parse_json(response.content)
    except ValueError:
        body = None
    if response.status_code == 200:
        if not isinstance(body, dict):
            raise XksProxyFailure(MALFORMED, "not a JSON object")
        return body
    name = body.get("errorName") if isinstance(body, dict) else None
    if isinstance(name, str) and name in ERROR_NAMES:
        raise XksProxyFailure(name)
    raise XksProxyFailure(MALFORMED, f"HTTP {response.status_code}")
