"""SigV4 negatives: every way a request can fail authentication."""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hsmkms.token import Hsm
from tests.conftest import Server
from tests.support import loopback
from tests.support.edge_support import edge_server

BODY = '{"NumberOfBytes": 8}'


def expect(response: object, code: str, status: int = 400) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.json()["__type"] == code  # type: ignore[attr-defined]


def test_a_good_signature_passes(server: Server) -> None:
    assert server.raw("GenerateRandom", BODY).status_code == 200


def test_wrong_secret(server: Server) -> None:
    expect(server.raw("GenerateRandom", BODY, secret="x" * 40), "InvalidSignatureException")


def test_unknown_access_key(server: Server) -> None:
    response = server.raw("GenerateRandom", BODY, access_key_id="AKIAUNKNOWNUNKNOWN12")
    expect(response, "UnrecognizedClientException")


def test_tampered_body(server: Server) -> None:
    response = server.raw("GenerateRandom", BODY, sent_body=b'{"NumberOfBytes": 9}')
    expect(response, "InvalidSignatureException")


def test_tampered_signed_header(server: Server) -> None:
    def retarget(request: AWSRequest) -> None:
        request.headers.replace_header("X-Amz-Target", "TrentService.CreateKey")

    expect(server.raw("GenerateRandom", BODY, mutate=retarget), "InvalidSignatureException")


@pytest.mark.parametrize("minutes", [-6, 6])
def test_stale_or_future_date(server: Server, minutes: int) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
    response = server.raw("GenerateRandom", BODY, signed_at=when)
    expect(response, "InvalidSignatureException")
    assert "Signature" in response.json()["message"]
    nearly = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes * 4 / 6)
    assert server.raw("GenerateRandom", BODY, signed_at=nearly).status_code == 200


def test_missing_authorization(server: Server) -> None:
    expect(server.raw("GenerateRandom", BODY, sign=False), "MissingAuthenticationTokenException")


@pytest.mark.parametrize(
    "header",
    [
        "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/kms/aws4_request, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/kms/aws4_request, SignedHeaders=host",
        "Basic dXNlcjpwYXNz",
    ],
)
def test_incomplete_authorization(server: Server, header: str) -> None:
    def replace(request: AWSRequest) -> None:
        request.headers.replace_header("Authorization", header)

    expect(server.raw("GenerateRandom", BODY, mutate=replace), "IncompleteSignatureException")


def test_date_must_be_signed(server: Server) -> None:
    def unsign_date(request: AWSRequest) -> None:
        auth = request.headers["Authorization"].replace(";x-amz-date", "")
        request.headers.replace_header("Authorization", auth)

    expect(server.raw("GenerateRandom", BODY, mutate=unsign_date), "IncompleteSignatureException")


def test_wrong_service_scope(server: Server) -> None:
    def rescope(request: AWSRequest) -> None:
        auth = request.headers["Authorization"].replace("/kms/aws4_request", "/s3/aws4_request")
        request.headers.replace_header("Authorization", auth)

    expect(server.raw("GenerateRandom", BODY, mutate=rescope), "InvalidSignatureException")


def test_session_tokens_are_refused(server: Server) -> None:
    response = server.raw("GenerateRandom", BODY, headers={"X-Amz-Security-Token": "token"})
    expect(response, "UnrecognizedClientException")


def test_a_session_token_left_in_the_environment_is_named(server: Server) -> None:
    """After `aws sso login` AWS_SESSION_TOKEN is set, and every client sends it."""
    kms = boto3.client(
        "kms", endpoint_url=server.url, region_name="us-east-1",
        aws_access_key_id=server.access_key_id, aws_secret_access_key=server.secret_access_key,
        aws_session_token="FwoGZXIvYXdzEXAMPLE",
    )  # fmt: skip
    with pytest.raises(ClientError) as refused:
        kms.generate_random(NumberOfBytes=8)
    error = refused.value.response["Error"]
    assert error["Code"] == "UnrecognizedClientException"
    assert error["Message"].startswith("The security token included in the request is invalid.")
    assert "unset AWS_SESSION_TOKEN" in error["Message"]


def test_metrics_count_the_failures(server: Server) -> None:
    server.raw("GenerateRandom", BODY, secret="y" * 40)
    text = loopback.get(server.url + "/metrics").text
    assert (
        'hsmkms_requests_total{error="InvalidSignatureException",operation="GenerateRandom"}'
        in text
    )
    assert "hsmkms_token_sessions_max" in text
    assert "hsmkms_request_seconds_bucket" in text


def test_healthz(server: Server) -> None:
    response = loopback.get(server.url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "token": "ok", "database": "ok"}


def test_regions_outside_hsmkms_regions_are_refused() -> None:
    from botocore.auth import SigV4Auth
    from botocore.credentials import Credentials

    from hsmkms.api.errors import InvalidSignatureException
    from hsmkms.api.sigv4 import Credential, SigV4Verifier

    secret = "s" * 40
    known = Credential("AKIAREGIONTEST000001", secret, "arn:aws:iam::111122223333:user/r")
    verifier = SigV4Verifier(lambda akid: known, regions=["eu-west-1"])

    def signed(region: str) -> tuple[dict[str, list[str]], bytes]:
        request = AWSRequest(method="POST", url="http://127.0.0.1:1/", data=b"{}")
        SigV4Auth(Credentials(known.access_key_id, secret), "kms", region).add_auth(request)
        request.headers["host"] = "127.0.0.1:1"
        headers = {k.lower(): [v] for k, v in request.headers.items()}
        return headers, b"{}"

    assert verifier.verify("POST", "/", "", *signed("eu-west-1")).region == "eu-west-1"
    with pytest.raises(InvalidSignatureException, match="valid region"):
        verifier.verify("POST", "/", "", *signed("us-east-1"))


def _sign_then_add(server: Server, target: str, added: dict[str, str]) -> httpx.Response:
    """A request whose signature does not cover `added` (headers put on after signing)."""

    def add_unsigned(request: AWSRequest) -> None:
        for name, value in added.items():
            request.headers[name] = value

    return server.raw(target, BODY, mutate=add_unsigned)


def test_an_unsigned_target_cannot_be_replayed_as_another_operation(server: Server) -> None:
    # Signed without X-Amz-Target and sent with one, the signature itself still
    # matches: a captured request could be re-aimed at any operation taking its body.
    from botocore.auth import SigV4Auth
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=BODY.encode(),
        headers={"Content-Type": "application/x-amz-json-1.1"},
    )
    credentials = Credentials(server.access_key_id, server.secret_access_key)
    SigV4Auth(credentials, "kms", "us-east-1").add_auth(request)
    assert "x-amz-target" not in request.headers["Authorization"]
    headers = {**dict(request.headers.items()), "X-Amz-Target": "TrentService.GenerateRandom"}
    response = loopback.post(request.url, content=request.body, headers=headers)
    expect(response, "IncompleteSignatureException")
    assert response.json()["message"] == (
        "There were headers present in the request which were not signed: x-amz-target"
    )


@pytest.mark.parametrize(
    "added",
    [{"X-Amz-Meta-Note": "later"}, {"X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD", "x-amz-z": "1"}],
)
def test_every_x_amz_header_must_be_signed(server: Server, added: dict[str, str]) -> None:
    response = _sign_then_add(server, "GenerateRandom", added)
    expect(response, "IncompleteSignatureException")
    for name in added:
        assert name.lower() in response.json()["message"]


def test_signed_extra_x_amz_headers_pass(server: Server) -> None:
    response = server.raw("GenerateRandom", BODY, headers={"X-Amz-Meta-Note": "signed"})
    assert response.status_code == 200, response.text


def test_other_unsigned_headers_are_allowed(server: Server) -> None:
    # User-Agent, X-Amzn-Trace-Id and the like are never signed by the SDKs.
    response = _sign_then_add(server, "GenerateRandom", {"X-Amzn-Trace-Id": "Root=1-abc"})
    assert response.status_code == 200, response.text


# -- garbage in the Authorization header and X-Amz-Date: a KMS error, never a 500 ------

AUTHENTICATION_ERRORS = {
    "IncompleteSignatureException",
    "InvalidSignatureException",
    "MissingAuthenticationTokenException",
    "UnrecognizedClientException",
}


def signed_headers(server: Server) -> dict[str, str]:
    """The headers of a good GenerateRandom request (Authorization parts by name)."""
    from botocore.auth import SigV4Auth
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
    return dict(request.headers.items())


def with_part(headers: dict[str, str], part: str, value: bytes) -> dict[bytes, bytes]:
    """`headers` as bytes, with one part of the Authorization header (or X-Amz-Date)
    replaced by `value`."""
    authorization = headers["Authorization"].encode()
    algorithm, _, rest = authorization.partition(b" ")
    parts = dict(p.strip().split(b"=", 1) for p in rest.split(b","))
    scope = parts[b"Credential"].split(b"/")
    raw = {k.encode(): v.encode() for k, v in headers.items()}
    if part == "X-Amz-Date":
        raw[b"X-Amz-Date"] = value
        return raw
    if part == "algorithm":
        algorithm = value
    elif part.startswith("scope"):
        scope[int(part[-1])] = value
        parts[b"Credential"] = b"/".join(scope)
    else:
        parts[part.encode()] = value
    raw[b"Authorization"] = algorithm + b" " + b", ".join(k + b"=" + v for k, v in parts.items())
    return raw


def send_raw(url: str, headers: dict[bytes, bytes], body: bytes) -> tuple[int, dict[str, Any]]:
    """POST / with exactly these header bytes (HTTP clients refuse some of them);
    the status and, for a KMS error, its JSON body."""
    host, port = url.removeprefix("http://").split(":")
    head = b"".join(k + b": " + v + b"\r\n" for k, v in headers.items() if k.lower() != b"host")
    request = (
        b"POST / HTTP/1.1\r\nHost: " + headers.get(b"host", host.encode()) + b"\r\n" + head
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head_bytes, _, payload = response.partition(b"\r\n\r\n")
    status = int(head_bytes.split()[1])
    is_json = b"application/x-amz-json-1.1" in head_bytes.lower()
    return status, json.loads(payload) if is_json and status != 200 else {}


def test_a_non_ascii_signature_is_a_bad_signature(server: Server) -> None:
    raw = with_part(signed_headers(server), "Signature", "éé".encode())
    status, error = send_raw(server.url, raw, BODY.encode())
    assert (status, error["__type"]) == (400, "InvalidSignatureException")


@pytest.fixture(scope="module")
def garbage_server(hsm: Hsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own: the refusals below must not use up the shared server's
    budget of audit records for refusals from 127.0.0.1."""
    with edge_server(hsm, tmp_path_factory.mktemp("sigv4-garbage")) as server:
        yield server


PARTS = ["algorithm", "Signature", "SignedHeaders", "Credential", "X-Amz-Date"] + [
    f"scope{n}" for n in range(5)
]
# Any byte HTTP carries in a header value (not CR, LF or NUL), ASCII or not.
HEADER_BYTES = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c not in b"\r\n\x00").strip(b" \t")
) | st.text(max_size=20).map(lambda t: t.encode(errors="ignore"))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(part=st.sampled_from(PARTS), value=HEADER_BYTES)
def test_garbage_in_any_part_gets_an_authentication_error(
    garbage_server: Server, part: str, value: bytes
) -> None:
    assume(all(c not in value for c in b"\r\n\x00"))
    raw = with_part(signed_headers(garbage_server), part, value)
    status, error = send_raw(garbage_server.url, raw, BODY.encode())
    assert status < 500, (part, value, error)
    if error:  # not the HTTP parser's own 400, nor a value that happens to be right
        assert error["__type"] in AUTHENTICATION_ERRORS, (part, value, error)
