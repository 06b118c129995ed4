"""A scriptable XKS proxy for the failure tests: it answers health and metadata as
told, encrypts with AES-256-GCM in software (it stands for a customer's external key
manager, outside hsmkms; hsmkms's own layer still runs in the real token), and can
answer any route with a delay or with one of the specification's errors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.types import Receive, Scope, Send

# errorName -> the HTTP status the XKS specification gives it
STATUS = {
    "ValidationException": 400,
    "InvalidStateException": 400,
    "InvalidCiphertextException": 400,
    "InvalidKeyUsageException": 400,
    "AuthenticationFailedException": 401,
    "AccessDeniedException": 403,
    "KeyNotFoundException": 404,
    "InvalidUriPathException": 404,
    "ThrottlingException": 429,
    "UnsupportedOperationException": 501,
    "DependencyTimeoutException": 503,
    "InternalException": 500,
}
HEALTHY = {
    "xksProxyFleetSize": 1,
    "xksProxyVendor": "test",
    "xksProxyModel": "fake 1",
    "ekmVendor": "test",
    "ekmFleetDetails": [{"id": "ekm-1", "model": "fake", "healthStatus": "ACTIVE"}],
}


class FakeProxy:
    def __init__(self) -> None:
        self.key = AESGCM(os.urandom(32))
        self.errors: dict[str, str] = {}  # route (health|metadata|encrypt|decrypt) -> errorName
        self.delays: dict[str, float] = {}
        self.body_delays: dict[str, float] = {}  # between the headers and the body
        self.health: dict[str, Any] = dict(HEALTHY)
        self.metadata: dict[str, Any] = {
            "keySpec": "AES_256",
            "keyUsage": ["ENCRYPT", "DECRYPT"],
            "keyStatus": "ENABLED",
        }
        self.raw: dict[str, tuple[int, bytes]] = {}  # route -> a literal answer
        self.corrupt_cdiv = False
        self.requests: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].split(".")[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        route = scope["path"].rsplit("/", 1)[-1]
        request = json.loads(body)
        self.requests.append({"route": route, "path": scope["path"], **request})
        await asyncio.sleep(self.delays.get(route, 0.0))
        if route in self.raw:
            status, content = self.raw[route]
        elif route in self.errors:
            name = self.errors[route]
            status = STATUS[name]
            content = json.dumps({"errorName": name, "errorMessage": "scripted"}).encode()
        else:
            status, content = 200, json.dumps(self._answer(route, request)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await asyncio.sleep(self.body_delays.get(route, 0.0))
        await send({"type": "http.response.body", "body": content})

    def _answer(self, route: str, request: dict[str, Any]) -> dict[str, Any]:
        if route == "health":
            return self.health
        if route == "metadata":
            return self.metadata
        aad = base64.b64decode(request.get("additionalAuthenticatedData", ""))
        gcm_aad = struct.pack(">H", len(aad)) + aad + b"\0"
        if route == "encrypt":
            iv = os.urandom(12)
            sealed = self.key.encrypt(iv, base64.b64decode(request["plaintext"]), gcm_aad)
            ciphertext, tag = sealed[:-16], sealed[-16:]
            cdiv = hashlib.sha256(aad + iv + ciphertext + tag).digest()
            if self.corrupt_cdiv:
                cdiv = bytes(32)
            return {
                "ciphertext": _b64(ciphertext),
                "initializationVector": _b64(iv),
                "authenticationTag": _b64(tag),
                "ciphertextDataIntegrityValue": _b64(cdiv),
            }
        plaintext = self.key.decrypt(
            base64.b64decode(request["initializationVector"]),
            base64.b64decode(request["ciphertext"])
            + base64.b64decode(request["authenticationTag"]),
            gcm_aad,
        )
        return {"plaintext": _b64(plaintext)}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
