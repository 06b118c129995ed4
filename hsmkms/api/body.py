"""Request bodies are bounded before they are buffered.

A body whose Content-Length is over the limit is refused at once, before a byte of
it is read; a chunked body is counted as it arrives and refused when it passes the
limit. The refusal is HTTP 413 with a KMS-shaped error and `Connection: close`, so
the server stops reading the rest of the body instead of draining it.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hsmkms.api.errors import RequestEntityTooLargeException, error_body
from hsmkms.api.refusals import refusals_of, scope_refusal

# The largest KMS request (PutKeyPolicy/CreateKey with a 32 KiB policy and 50 tags,
# or 6 KiB ciphertexts and 4 KiB messages base64-encoded) is far below this.
DEFAULT_MAX_REQUEST_BYTES = 300 * 1024


class _TooLarge(Exception):
    """Raised out of `receive` to stop the app reading a body past the limit."""


def too_large(max_bytes: int, scope: Scope) -> RequestEntityTooLargeException:
    target = b""
    for name, value in scope["headers"]:
        if name.lower() == b"x-amz-target":
            target = value
    operation = target.decode("latin-1").removeprefix("TrentService.")[:64] or "this"
    return RequestEntityTooLargeException(
        f"Request must be smaller than {max_bytes} bytes for the {operation} operation."
    )


def declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:  # the HTTP parser refuses these; counting still applies
                return None
    return None


async def send_too_large(scope: Scope, send: Send, error: RequestEntityTooLargeException) -> None:
    """Answer 413 and record the refusal (the app's recorder, in the lifespan state)."""
    recorder = refusals_of(scope.get("state"))
    if recorder is not None:
        recorder.record(scope_refusal(scope, error))
    payload = json.dumps(error_body(error)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/x-amz-json-1.1"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def limit_body(app: ASGIApp, max_bytes: int) -> ASGIApp:
    """Wrap an ASGI app so that no request body over `max_bytes` reaches it."""
    if max_bytes < 1:
        raise ValueError("max_bytes must be positive")

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > max_bytes:
            await send_too_large(scope, send, too_large(max_bytes, scope))
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await send_too_large(scope, send, too_large(max_bytes, scope))

    return guarded
