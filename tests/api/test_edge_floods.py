"""Floods from clients that never authenticate, against the real HTTP server: nothing
keyed by what they send (operation names, regions) may grow without bound, the
audit trail records refusals at the edge but a flood of them only boundedly, and one
client's connections cannot starve another client."""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hsmkms.api.ratelimit import Quota, RateLimiter
from hsmkms.config import EdgeLimits
from hsmkms.token import Hsm
from tests.conftest import Server
from tests.support import loopback
from tests.support.edge_support import edge_server, trail
from tests.support.parallel import serial

# Answers within a bound, and a flood beside other work: alone on its worker.
pytestmark = serial

FLOOD = 5000
BODY = '{"NumberOfBytes": 8}'


@dataclass(frozen=True)
class Flooded:
    metrics_before: str
    metrics_after: str
    targets: list[str]
    records: list[dict[str, Any]]


@pytest.fixture(scope="module")
def flooded(hsm: Hsm, tmp_path_factory: pytest.TempPathFactory) -> Flooded:
    """5,000 unsigned POSTs, each naming a new 64-character operation."""
    targets = [secrets.token_hex(32) for _ in range(FLOOD)]
    with edge_server(hsm, tmp_path_factory.mktemp("flood")) as server:
        before = loopback.get(server.url + "/metrics").text
        with httpx.Client(base_url=server.url) as client:
            for target in targets:
                response = client.post(
                    "/", content=BODY, headers={"X-Amz-Target": f"TrentService.{target}"}
                )
                assert response.status_code == 400
        after = loopback.get(server.url + "/metrics").text
        audit = server.audit
    return Flooded(before, after, targets, trail(audit))


def test_made_up_operation_names_leave_the_metrics_small(flooded: Flooded) -> None:
    grown = len(flooded.metrics_after) - len(flooded.metrics_before)
    assert grown < 10_000, f"/metrics grew by {grown} bytes"
    assert 'operation="Unknown"' in flooded.metrics_after
    assert not any(target in flooded.metrics_after for target in flooded.targets[:100])


def test_an_unsigned_flood_leaves_a_bounded_trail_that_still_counts_it(flooded: Flooded) -> None:
    refusals = [
        r for r in flooded.records if r.get("errorCode") == "MissingAuthenticationTokenException"
    ]
    summaries = [r for r in flooded.records if r["eventName"] == "EdgeRefusalsSuppressed"]
    assert len(flooded.records) <= 200, len(flooded.records)
    assert refusals and summaries
    suppressed = sum(s["additionalEventData"]["suppressed"] for s in summaries)
    assert len(refusals) + suppressed == FLOOD  # every refusal is in the trail, or counted
    assert all(s["additionalEventData"]["bySource"].get("127.0.0.1") for s in summaries)
    assert refusals[0]["sourceIPAddress"] == "127.0.0.1"
    assert refusals[0]["userIdentity"] is None


def test_a_region_botocore_does_not_know_is_refused_and_not_cached(server: Server) -> None:
    contexts = set(server.km.deployment._regions)  # the per-region contexts built so far
    response = server.raw("CreateKey", "{}", region="a:b*")
    assert response.status_code == 400
    assert response.json() == {
        "__type": "InvalidSignatureException",
        "message": "Credential should be scoped to a valid region, not 'a:b*'.",
    }
    for n in range(30):
        assert server.raw("GenerateRandom", BODY, region=f"xx-bogus-{n}").status_code == 400
    assert set(server.km.deployment._regions) == contexts
    assert server.raw("GenerateRandom", BODY, region="eu-west-3").status_code == 200


def test_a_signed_request_refused_as_too_large_leaves_an_audit_record(
    hsm: Hsm, tmp_path: Path
) -> None:
    with edge_server(hsm, tmp_path) as server:
        plaintext = "A" * (400 * 1024)
        response = server.raw("Encrypt", json.dumps({"KeyId": "alias/x", "Plaintext": plaintext}))
        assert response.status_code == 413
        audit = server.audit
    (record,) = [r for r in trail(audit) if r.get("errorCode") == "RequestEntityTooLargeException"]
    assert record["eventName"] == "Encrypt"
    assert record["sourceIPAddress"] == "127.0.0.1"
    assert record["userIdentity"] is None  # the signature covers a body never read
    assert record["additionalEventData"] == {"claimedAccessKeyId": server.access_key_id}
    assert plaintext[:64] not in json.dumps(record)


def read_status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            return 0  # closed without an answer
        head += chunk
    return int(head.split()[1])


def test_refusals_below_the_app_and_throttling_are_recorded(hsm: Hsm, tmp_path: Path) -> None:
    limits = EdgeLimits(header_timeout_seconds=1.0, max_header_count=20)
    throttle = RateLimiter(Quota(rate=0.01, burst=1))
    with edge_server(hsm, tmp_path, limits=limits, rate_limiter=throttle) as server:
        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
            many = "".join(f"X-Filler-{n}: {n}\r\n" for n in range(30))
            sock.sendall(f"POST / HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
            assert read_status(sock) == 431
        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nX-Amz-Target: TrentService.Sign\r\nHost: x\r\n")
            assert read_status(sock) == 408
        assert server.raw("GenerateRandom", BODY).status_code == 200
        assert server.raw("GenerateRandom", BODY).json()["__type"] == "ThrottlingException"
        audit = server.audit
    codes = {r.get("errorCode"): r for r in trail(audit)}
    assert codes["RequestHeaderFieldsTooLarge"]["sourceIPAddress"] == "127.0.0.1"
    assert codes["RequestTimeoutException"]["eventName"] == "Sign"
    throttled = codes["ThrottlingException"]
    assert throttled["userIdentity"]["accessKeyId"] == server.access_key_id


@pytest.fixture
def crowded(hsm: Hsm, tmp_path: Path) -> Iterator[Server]:
    limits = EdgeLimits(max_connections=12, max_connections_per_client=4, header_timeout_seconds=8)
    with edge_server(hsm, tmp_path, limits=limits) as server:
        yield server


def test_one_client_cannot_take_every_connection(crowded: Server) -> None:
    port = int(crowded.url.rsplit(":", 1)[1])
    with ExitStack() as held:
        idle = [
            held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            for _ in range(12)
        ]
        time.sleep(0.3)  # the server has seen every connection
        other = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=other) as client:
            response = client.send(signed_request(crowded))
        assert response.status_code == 200, response.text
        refused = 0
        for sock in idle[4:]:
            sock.settimeout(2)
            refused += read_status(sock) == 503
        assert refused == 8
    # The client's connections are closed: it is served again.
    assert crowded.raw("GenerateRandom", BODY).status_code == 200


def signed_request(server: Server) -> httpx.Request:
    """A signed GenerateRandom, built the way Server.raw signs it."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=BODY.encode(),
        headers={
            "X-Amz-Target": "TrentService.GenerateRandom",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    credentials = Credentials(server.access_key_id, server.secret_access_key)
    SigV4Auth(credentials, "kms", "us-east-1").add_auth(request)
    return httpx.Request("POST", request.url, content=request.body, headers=dict(request.headers))


def test_unsigned_xks_calls_are_recorded_within_the_same_budget(hsm: Hsm, tmp_path: Path) -> None:
    from hsmkms.config import XksSettings

    with edge_server(hsm, tmp_path, xks=XksSettings()) as server:
        with httpx.Client(base_url=server.url) as client:
            for _ in range(300):
                response = client.post("/xks/kms/xks/v1/health", content=b"{}")
                assert response.status_code == 401  # XKS: AuthenticationFailedException
        audit = server.audit
    records = trail(audit)
    refused = [r for r in records if r.get("eventSource") == "kms-xks-proxy"]
    (summary,) = [r for r in records if r["eventName"] == "EdgeRefusalsSuppressed"]
    assert 0 < len(refused) <= 60
    assert len(refused) + summary["additionalEventData"]["suppressed"] == 300
