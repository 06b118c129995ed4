"""Edge limits of the real app behind `hsmkms.api.server`, probed with raw sockets.

Short timeouts and a small connection cap keep the tests quick; the defaults are
exercised under attack in test_edge_attack.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from hsmkms.api.app import create_app
from hsmkms.api.server import build_server
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.config import EdgeLimits, ServingSettings
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.policy.principals import ADMIN_POLICY, CredentialStore
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm
from tests.conftest import ACCOUNT, REGION, free_port
from tests.support import loopback
from tests.support.parallel import serial

pytestmark = serial

LIMITS = EdgeLimits(
    header_timeout_seconds=1.5, body_timeout_seconds=1.5, max_connections=12, max_header_count=30,
    max_header_bytes=4096, keep_alive_seconds=5,
)  # fmt: skip
MIB = 1024 * 1024


@dataclass(frozen=True)
class Edge:
    port: int
    access_key_id: str
    secret: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def client(self, **config: object) -> object:
        return boto3.client(
            "kms", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret,
            config=Config(retries={"max_attempts": 1}, **config),  # type: ignore[arg-type]
        )  # fmt: skip


@pytest.fixture(scope="module")
def edge(hsm: Hsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    store = SqliteStore(tmp_path_factory.mktemp("edge") / "hsmkms.db")
    km = KeyManager(Deployment(store, hsm, account_id=ACCOUNT), REGION)
    credentials = CredentialStore(store, hsm)
    arn = f"arn:aws:iam::{ACCOUNT}:user/edge"
    credential = credentials.add(arn)
    credentials.attach_policy(arn, "admin", ADMIN_POLICY)
    app = create_app(km.context, SigV4Verifier(credentials.lookup), maintenance_seconds=0)
    port = free_port()
    server = build_server(app, ServingSettings(port=port), LIMITS)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield Edge(port, credential.access_key_id, credential.secret_access_key)
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response off a raw socket; the body as much as Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed without a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def request_head(extra: str = "", target: str = "Encrypt") -> bytes:
    return (
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-amz-json-1.1\r\n"
        f"X-Amz-Target: TrentService.{target}\r\n{extra}\r\n"
    ).encode()


def test_a_body_announced_too_large_is_refused_before_it_is_sent(edge: Edge) -> None:
    with edge.connect() as sock:
        sock.sendall(request_head(f"Content-Length: {100 * MIB}\r\n"))
        status, headers, body = read_response(sock)  # not one body byte sent
        assert status == 413 and headers["connection"] == "close"
        assert json.loads(body) == {
            "__type": "RequestEntityTooLargeException",
            "message": "Request must be smaller than 307200 bytes for the Encrypt operation.",
        }
        assert closed_by_server(sock)


def test_a_chunked_body_is_counted_and_refused(edge: Edge) -> None:
    with edge.connect() as sock:
        sock.sendall(request_head("Transfer-Encoding: chunked\r\n", target="Sign"))
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
        sent = 0
        try:
            while sent < 100 * MIB:
                sock.sendall(chunk)
                sent += 64 * 1024
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < 16 * MIB  # cut off long before (the rest is socket buffers)
        status, _, body = read_response(sock)
        assert status == 413 and json.loads(body)["__type"] == "RequestEntityTooLargeException"


def test_boto3_reads_the_413_as_a_kms_error_and_smaller_bodies_pass(edge: Edge) -> None:
    kms = edge.client(parameter_validation=False)
    with pytest.raises(ClientError) as caught:
        kms.put_key_policy(KeyId="any", PolicyName="default", Policy="x" * (400 * 1024))  # type: ignore[attr-defined]
    assert caught.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    # Just under the limit the request reaches the API and fails validation there.
    with pytest.raises(ClientError) as caught:
        kms.put_key_policy(KeyId="any", PolicyName="default", Policy="x" * (290 * 1024))  # type: ignore[attr-defined]
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    kms.close()  # type: ignore[attr-defined]


def test_too_many_headers(edge: Edge) -> None:
    with edge.connect() as sock:
        many = "".join(f"X-Filler-{n}: {n}\r\n" for n in range(LIMITS.max_header_count + 1))
        sock.sendall(request_head(many + "Content-Length: 0\r\n"))
        status, _, body = read_response(sock)
        assert status == 431 and json.loads(body) == {
            "__type": "RequestHeaderFieldsTooLarge",
            "message": "A request may carry at most 30 headers.",
        }
        assert closed_by_server(sock)


def test_an_endless_header_line_is_cut_off(edge: Edge) -> None:
    with edge.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
        try:
            for _ in range(64):  # 4 MiB if the server kept reading
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = read_response(sock)
        assert status == 431
        assert json.loads(body)["message"] == "A request's headers may take at most 4096 bytes."


@pytest.mark.parametrize("trickle", [b"", b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
def test_clients_too_slow_with_their_headers_are_cut_off(edge: Edge, trickle: bytes) -> None:
    with edge.connect() as sock:
        started = time.monotonic()
        sock.sendall(trickle)
        sock.settimeout(0.3)
        response = b""
        while time.monotonic() - started < 10 and not response.endswith(b"}"):
            try:
                sock.sendall(b"X-Slow: 1\r\n" if trickle else b"")
                response += sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        elapsed = time.monotonic() - started
        assert response.startswith(b"HTTP/1.1 408 "), response
        assert LIMITS.header_timeout_seconds - 0.1 <= elapsed < LIMITS.header_timeout_seconds + 2


def test_bytes_that_begin_no_request_do_not_keep_a_connection_open(edge: Edge) -> None:
    """A bare CRLF after an answer stopped uvicorn's keep-alive timer and began no
    request (the parser skips it), so no deadline ran: one byte held a connection for
    good, and enough of them filled the connection caps."""
    with edge.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        sock.sendall(b"\r\n")
        started = time.monotonic()
        sock.settimeout(LIMITS.keep_alive_seconds + 5)
        response = b""
        while chunk := sock.recv(4096):
            response += chunk
        elapsed = time.monotonic() - started
        assert response.startswith(b"HTTP/1.1 408 "), response
        assert LIMITS.header_timeout_seconds - 0.1 <= elapsed < LIMITS.header_timeout_seconds + 2


@pytest.mark.parametrize(
    "junk",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",  # body
        b"NOT-HTTP\x00\r\n\r\n",  # request line
    ],
)
def test_bytes_that_are_no_request_are_answered_in_turn(edge: Edge, junk: bytes) -> None:
    """uvicorn wrote its 400 for unparsable bytes at once, ahead of the answer still due
    to the request before them on the connection (the client took it for that one)."""
    body = b'{"KeyId": "alias/nothing"}'
    first = request_head(f"Content-Length: {len(body)}\r\n", "DescribeKey") + body
    with edge.connect() as sock:
        sock.sendall(first + junk)
        received = b""
        while chunk := sock.recv(65536):  # until the server closes
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    answer, second = rest[:length], rest[length:]
    assert head.startswith(b"HTTP/1.1 400 ")  # before: uvicorn's text 400 came first
    assert json.loads(answer)["__type"] == "MissingAuthenticationTokenException"
    assert second.startswith(b"HTTP/1.1 400 ") and b"connection: close" in second
    assert second.endswith(b"\r\n\r\nInvalid HTTP request received.")


def test_a_body_that_is_no_body_is_answered_at_once(edge: Edge) -> None:
    with edge.connect() as sock:
        sock.sendall(request_head("Transfer-Encoding: chunked\r\n") + b"ZZ\r\n")
        status, _, answer = read_response(sock)
        assert (status, answer) == (400, b"Invalid HTTP request received.")
        assert closed_by_server(sock)


def test_clients_too_slow_with_their_body_are_cut_off(edge: Edge) -> None:
    with edge.connect() as sock:
        sock.sendall(request_head("Content-Length: 1000\r\n") + b'{"KeyId": ')
        started = time.monotonic()
        assert closed_by_server(sock)  # no answer: the app was still reading the body
        elapsed = time.monotonic() - started
        assert LIMITS.body_timeout_seconds - 0.1 <= elapsed < LIMITS.body_timeout_seconds + 2


def test_connections_over_the_cap_are_refused_and_the_cap_recovers(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    for _attempt in range(3):
        with ExitStack() as stack:
            started = time.monotonic()
            for _ in range(LIMITS.max_connections):
                stack.enter_context(edge.connect())  # held open, closed when the stack ends
            time.sleep(0.2)  # all accepted before the next one
            with edge.connect() as extra:
                status, _, body = read_response(extra)
            # On a machine too busy to open them all within the header timeout, the
            # first held ones were rightly cut (408) and freed a place: try again.
            if status != 503 and time.monotonic() - started > LIMITS.header_timeout_seconds:
                continue
            assert status == 503
            assert json.loads(body)["__type"] == "ServiceUnavailableException"
            assert "12 connections open: refusing more" in caplog.text
            break
    else:
        pytest.fail("the machine was too busy to hold the cap within the header timeout")
    time.sleep(0.2)  # the server notices the closes
    assert loopback.get(edge.url + "/healthz").status_code == 200


def test_kept_alive_connections_serve_later_requests(edge: Edge, tmp_path: Path) -> None:
    """The header deadline runs per request, not while a kept-alive connection idles."""
    kms = edge.client()
    key = kms.create_key()["KeyMetadata"]["KeyId"]  # type: ignore[attr-defined]
    time.sleep(LIMITS.header_timeout_seconds + 0.5)  # idle longer than the header deadline
    blob = kms.encrypt(KeyId=key, Plaintext=b"still here")["CiphertextBlob"]  # type: ignore[attr-defined]
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(edge.url + "/healthz").status_code == 200
            time.sleep(LIMITS.header_timeout_seconds / 2)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"still here"  # type: ignore[attr-defined]
    kms.close()  # type: ignore[attr-defined]


def test_limits_come_from_settings_by_name_and_must_be_positive() -> None:
    from hsmkms.config import load_settings

    assert load_settings({}).edge == EdgeLimits()  # nothing set: defaults
    given = {"HSMKMS_MAX_CONNECTIONS": "7", "HSMKMS_BODY_TIMEOUT_SECONDS": "2.5"}
    assert load_settings(given).edge == EdgeLimits(max_connections=7, body_timeout_seconds=2.5)
    with pytest.raises(ValueError, match="max_request_bytes"):
        EdgeLimits(max_request_bytes=0)
