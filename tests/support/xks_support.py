"""An XKS client for the tests: requests signed by botocore's own SigV4 signer with
the service name `kms-xks-proxy`, as AWS KMS signs them."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from hsmkms.library import KeyManager
from hsmkms.xks.credentials import XksCredentialStore
from tests.support import loopback

SERVICE = "kms-xks-proxy"
PRINCIPAL = "arn:aws:iam::123456789012:user/Alice"
KMS_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# AWS KMS's format: ids of 20-30 [A-Z2-7], secrets of 43-64 [A-Za-z0-9+/=].
ACCESS_KEY_ID = "XKSTESTACCESSKEYIDAAAA"
SECRET = base64.b64encode(b"x" * 32).decode()
OTHER_ACCESS_KEY_ID = "XKSTESTOTHERSTOREBBBBBB"
OTHER_SECRET = base64.b64encode(b"y" * 32).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def metadata(operation: str = "Encrypt", **extra: str) -> dict[str, str]:
    return {
        "awsPrincipalArn": PRINCIPAL,
        "kmsKeyArn": KMS_KEY_ARN,
        "kmsOperation": operation,
        "kmsRequestId": str(uuid.uuid4()),
        **extra,
    }


@dataclass
class XksServer:
    url: str
    km: KeyManager
    credentials: XksCredentialStore
    audit: Any  # the AuditLog the server writes to

    def post(
        self,
        route: str,
        body: dict[str, Any] | bytes,
        *,
        prefix: str = "xks",
        access_key_id: str = ACCESS_KEY_ID,
        secret: str = SECRET,
        region: str = "us-east-1",
        service: str = SERVICE,
        signed_at: datetime | None = None,
        sign: bool = True,
        mutate: Callable[[AWSRequest], None] | None = None,
        method: str = "POST",
        path: str | None = None,
    ) -> httpx.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if path is None:
            path = f"/{prefix}/kms/xks/v1/{route}" if prefix else f"/kms/xks/v1/{route}"
        request = AWSRequest(
            method=method,
            url=self.url + path,
            data=data,
            headers={"Content-Type": "application/json"},
        )
        if sign:
            when = (signed_at or datetime.now(UTC)).replace(tzinfo=None)
            with mock.patch("botocore.auth.get_current_datetime", return_value=when):
                SigV4Auth(Credentials(access_key_id, secret), service, region).add_auth(request)
        if mutate is not None:
            mutate(request)
        return loopback.request(
            method, request.url, content=request.body, headers=dict(request.headers.items())
        )

    def encrypt(self, key: str, plaintext: bytes, aad: bytes | None = None, **extra: Any) -> Any:
        body: dict[str, Any] = {
            "requestMetadata": metadata("Encrypt"),
            "plaintext": b64(plaintext),
            "encryptionAlgorithm": "AES_GCM",
            **extra,
        }
        if aad is not None:
            body["additionalAuthenticatedData"] = b64(aad)
        return self.post(f"keys/{key}/encrypt", body)

    def decrypt(self, key: str, encrypted: dict[str, str], aad: bytes | None = None) -> Any:
        body: dict[str, Any] = {
            "requestMetadata": metadata("Decrypt"),
            "encryptionAlgorithm": "AES_GCM",
            **{k: v for k, v in encrypted.items() if k != "ciphertextDataIntegrityValue"},
        }
        if aad is not None:
            body["additionalAuthenticatedData"] = b64(aad)
        return self.post(f"keys/{key}/decrypt", body)


def error_name(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["errorName"]
