"""uvicorn's httptools protocol with the limits uvicorn lacks, per connection.

uvicorn bounds neither the header section (httptools hands over any number of
headers of any size) nor the time a client may take to send it, and it accepts
connections without limit. This subclass adds, at the transport level where a
request is still just bytes:

- a cap on open connections, and one per client address (trusted proxies exempt),
  so one client cannot take them all: one over a cap is answered 503 and closed;
- a header-section deadline, from the connection's start (or a later request's
  first byte) to the end of its headers, and a body deadline from there to the end
  of the body: a client too slow for either is disconnected (slowloris);
- bounds on the header count and on header bytes (request line included): 431.
  Bytes are counted as they arrive, so one endless header line is cut off too.

Only the parser callbacks and asyncio's protocol methods are overridden; each
one calls uvicorn's own, so requests that stay within the limits are untouched.
Idle keep-alive connections are closed by uvicorn's own `timeout_keep_alive`.
Each refusal goes to the app's refusal recorder (hsmkms.api.refusals), found in the
ASGI lifespan state, which keeps floods of them out of the audit trail.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hsmkms.api.errors import (
    BadRequestException,
    RequestHeaderFieldsTooLarge,
    RequestTimeoutException,
    ServiceUnavailableException,
)
from hsmkms.api.occasional import OccasionalWarning
from hsmkms.api.refusals import RECORDED_HEADERS, Refusal, client_of, refusals_of
from hsmkms.config import EdgeLimits
from hsmkms.errors import KMSError

log = logging.getLogger("hsmkms.api")
MAX_RECORDED_URL = 1024


@dataclass
class _Connections:
    open: int = 0
    by_client: dict[str, int] = field(default_factory=dict)  # client_of(peer) -> open ones


def refusal(status: int, code: str, message: str) -> bytes:
    """A whole HTTP response with a KMS-shaped body, written before closing."""
    body = json.dumps({"__type": code, "message": message}).encode()
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/x-amz-json-1.1\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


def is_trusted_proxy(
    host: str | None, proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return any(address in network for network in proxies)


def guarded_protocol(limits: EdgeLimits) -> type[asyncio.Protocol]:
    """A protocol class for `uvicorn.Config(http=...)` enforcing `limits`. Its trusted
    proxies (reverse proxies, whose connections carry many clients' requests) are exempt
    from the per-client connection cap."""
    connections = _Connections()
    warn = OccasionalWarning(log)  # a cap reached: once a minute, not per connection
    proxies = [ipaddress.ip_network(p, strict=False) for p in limits.trusted_proxies]

    class EdgeProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._edge_transport: asyncio.Transport | None = None
            self._counted = False
            self._refused = False
            self._in_headers = True  # until this request's headers are complete
            self._raw_bytes = 0  # bytes received while in the header section
            self._header_bytes = 0
            self._header_count = 0
            self._timer: asyncio.TimerHandle | None = None
            self._client: str | None = None  # the peer's address
            self._client_key = ""  # who the peer counts as (client_of)
            self._seen: dict[str, list[str]] = {}  # what a refusal's record reads
            self._url = b""  # the request's URL (capped), for the face shaping its record
            self._bad_request = ""  # a 400 due once the answers before it are written

        def _record(self, error: KMSError) -> None:
            recorder = refusals_of(self.app_state)
            if recorder is not None:
                target = (self._seen.get("x-amz-target") or [""])[0]
                path = self._url.split(b"?", 1)[0].decode("latin-1") or "/"
                recorder.record(Refusal(self._client, error, target, self._seen, path))

        # -- deadlines and refusals -------------------------------------------------

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._timer = asyncio.get_running_loop().call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            if self._in_headers:
                self._refuse(RequestTimeoutException("The headers came too slowly."))
            else:  # mid-body: the app is reading it, or already answered; just hang up
                self._refused = True
                if self._edge_transport is not None:
                    self._edge_transport.close()
                cycle = self.cycle
                if cycle is None or not cycle.response_complete:
                    self._record(RequestTimeoutException("The body came too slowly."))

        def _refuse(self, error: KMSError) -> None:
            """Answer (unless a response is already under way), close, and record it."""
            self._refused = True
            self._disarm()
            transport = self._edge_transport
            if transport is None or transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                transport.write(refusal(error.status, error.code, error.message))
            transport.close()
            self._record(error)

        def send_400_response(self, msg: str) -> None:
            """uvicorn's answer to bytes that are no HTTP request, kept in turn: it wrote it
            at once, ahead of the answers still due to the requests before them on the
            connection (the client took it for one of those). Now those are written
            first, then the 400, then the connection closes. Recorded as a refusal."""
            self._refused = True  # nothing more of this connection is parsed
            self._disarm()
            self._record(BadRequestException(msg))
            cycle = self.cycle
            due = cycle is not None and not cycle.response_complete
            if due and cycle.more_body:
                # The bytes that failed were this request's body: it is not run.
                queued = [entry for entry in self.pipeline if entry[0] is cycle]
                for entry in queued:
                    self.pipeline.remove(entry)
                if not queued:  # it is the one in progress: nothing before it is due
                    cycle.disconnected = True
                    cycle.message_event.set()
                    due = False
            if due:
                self._bad_request = msg  # after the answers due (on_response_complete)
            else:
                super().send_400_response(msg)

        def on_response_complete(self) -> None:
            pending = bool(self.pipeline)
            super().on_response_complete()
            if self._bad_request and not pending and not self.transport.is_closing():
                super().send_400_response(self._bad_request)

        def _check_headers(self, received: int = 0) -> None:
            """`received`: raw bytes of a header section not yet complete."""
            if self._header_count > limits.max_header_count:
                self._refuse(
                    RequestHeaderFieldsTooLarge(
                        f"A request may carry at most {limits.max_header_count} headers."
                    )
                )
            elif max(self._header_bytes, received) > limits.max_header_bytes:
                self._refuse(
                    RequestHeaderFieldsTooLarge(
                        f"A request's headers may take at most {limits.max_header_bytes} bytes."
                    )
                )

        # -- asyncio protocol -------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._edge_transport = transport
            peer = transport.get_extra_info("peername")
            self._client = str(peer[0]) if isinstance(peer, tuple) and peer else None
            self._client_key = client_of(self._client)
            self._counted = True
            connections.open += 1
            mine = connections.by_client[self._client_key] = (
                connections.by_client.get(self._client_key, 0) + 1
            )
            if connections.open > limits.max_connections:
                warn("%d connections open: refusing more", limits.max_connections)
                self._refuse(ServiceUnavailableException("Too many open connections."))
                return
            if mine > limits.max_connections_per_client and not is_trusted_proxy(
                self._client, proxies
            ):
                warn("%s has %d connections open: refusing more", self._client_key, mine - 1)
                self._refuse(
                    ServiceUnavailableException("Too many open connections from this client.")
                )
                return
            self._arm(limits.header_timeout_seconds)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted:
                self._counted = False
                connections.open -= 1
                connections.by_client[self._client_key] -= 1
                if not connections.by_client[self._client_key]:
                    del connections.by_client[self._client_key]
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # the connection is closing; its bytes are not ours to parse
            if self._in_headers:
                self._raw_bytes += len(data)
            super().data_received(data)  # uvicorn stops its keep-alive timer on any byte
            if self._refused:
                return
            if self._timer is None and (self.cycle is None or self.cycle.response_complete):
                # Bytes that began no request (a bare CRLF between requests, which the
                # parser skips): the header deadline runs from them, or an idle
                # connection would be held open for good by one byte.
                self._in_headers, self._raw_bytes = True, len(data)
                self._arm(limits.header_timeout_seconds)
            if self._in_headers:
                self._check_headers(self._raw_bytes)

        # -- parser callbacks -------------------------------------------------------

        def on_message_begin(self) -> None:
            if self._refused:
                return
            self._in_headers, self._header_bytes, self._header_count = True, 0, 0
            self._seen, self._url = {}, b""
            if self._timer is None:  # a later request on a kept-alive connection
                self._raw_bytes = 0
                self._arm(limits.header_timeout_seconds)
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            if self._refused:
                return
            self._header_bytes += len(url)
            self._check_headers()
            if not self._refused:
                self._url += url[: MAX_RECORDED_URL - len(self._url)]  # may come in parts
                super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            if self._refused:
                return
            self._header_count += 1
            self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
            lower = name.decode("latin-1").lower()
            if lower in RECORDED_HEADERS:
                self._seen.setdefault(lower, []).append(value.decode("latin-1"))
            self._check_headers()
            if not self._refused:
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            if self._refused:
                return
            self._in_headers = False
            self._arm(limits.body_timeout_seconds)
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refused:
                return
            self._disarm()
            super().on_message_complete()

    return EdgeProtocol
