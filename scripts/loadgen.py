"""A small signing load generator for the KMS JSON API (used by scripts/bench.py).

N keep-alive connections, each sending its next request as soon as the last one
answered. Every request is SigV4-signed anew (fresh X-Amz-Date); the signing key
and the body hash are computed once per run, as a long-lived client would.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime

READ_TIMEOUT = 10.0  # a server that stops answering fails the run instead of hanging it
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"connection:\s*close", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"


@dataclass(frozen=True)
class Result:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")

    @property
    def p99_ms(self) -> float:
        return self.percentile(0.99) * 1000


class SigningKeys:
    """SigV4 signing keys of one secret, region and service, derived once per day."""

    def __init__(self, target: Target, service: str) -> None:
        self.target = target
        self.service = service
        self._keys: dict[str, bytes] = {}

    def __call__(self, date: str) -> bytes:
        key = self._keys.get(date)
        if key is None:
            key = f"AWS4{self.target.secret_access_key}".encode()
            for part in (date, self.target.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys[date] = key
        return key


class Signer:
    def __init__(self, target: Target, operation: str, body: bytes) -> None:
        self.target = target
        self.operation = operation
        self.body = body
        self.body_hash = hashlib.sha256(body).hexdigest()
        self.host = f"{target.host}:{target.port}"
        self._key = SigningKeys(target, "kms")

    def request(self) -> bytes:
        amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        target = f"TrentService.{self.operation}"
        signed = "content-type;host;x-amz-date;x-amz-target"
        canonical = (
            f"POST\n/\n\ncontent-type:application/x-amz-json-1.1\nhost:{self.host}\n"
            f"x-amz-date:{amz_date}\nx-amz-target:{target}\n\n{signed}\n{self.body_hash}"
        )
        scope = f"{date}/{self.target.region}/kms/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = hmac.new(self._key(date), to_sign.encode(), hashlib.sha256).hexdigest()
        head = (
            f"POST / HTTP/1.1\r\nHost: {self.host}\r\n"
            "Content-Type: application/x-amz-json-1.1\r\n"
            f"X-Amz-Date: {amz_date}\r\nX-Amz-Target: {target}\r\n"
            f"Authorization: AWS4-HMAC-SHA256 Credential={self.target.access_key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        return head.encode() + self.body


class PathSigner:
    """Signs POSTs of a JSON body to a path, for another SigV4 service (the XKS proxy
    API: service `kms-xks-proxy`, signed host and x-amz-date as AWS KMS signs)."""

    def __init__(self, target: Target, path: str, service: str, body: bytes) -> None:
        self.target = target
        self.path = path
        self.service = service
        self.body = body
        self.body_hash = hashlib.sha256(body).hexdigest()
        self.host = f"{target.host}:{target.port}"
        self._key = SigningKeys(target, service)

    def request(self) -> bytes:
        amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        signed = "host;x-amz-date"
        canonical = (
            f"POST\n{self.path}\n\nhost:{self.host}\nx-amz-date:{amz_date}\n\n"
            f"{signed}\n{self.body_hash}"
        )
        scope = f"{date}/{self.target.region}/{self.service}/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = hmac.new(self._key(date), to_sign.encode(), hashlib.sha256).hexdigest()
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nX-Amz-Date: {amz_date}\r\n"
            f"Authorization: AWS4-HMAC-SHA256 Credential={self.target.access_key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        return head.encode() + self.body


async def _connection(signer: Signer | PathSigner, stop_at: float, latencies: list[float]) -> int:
    """Requests one after another on a keep-alive connection; a server that answers
    without Content-Length or with Connection: close (moto) is read to EOF and the
    connection opened again, which is part of what that server costs."""
    host, port = signer.target.host, signer.target.port
    reader, writer = await asyncio.open_connection(host, port)
    errors = 0
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(signer.request())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            match = _LENGTH.search(head)
            closing = match is None or _CLOSE.search(head) is not None
            if match is None:
                await asyncio.wait_for(reader.read(), READ_TIMEOUT)
            else:
                await asyncio.wait_for(reader.readexactly(int(match.group(1))), READ_TIMEOUT)
            latencies.append(time.perf_counter() - started)
            if head[9:12] != b"200":
                errors += 1
            if closing:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()
    return errors


async def _run(signer: Signer | PathSigner, concurrency: int, seconds: float) -> Result:
    latencies: list[float] = []
    warm = time.perf_counter() + min(0.3, seconds / 4)
    await asyncio.gather(*(_connection(signer, warm, []) for _ in range(concurrency)))
    started = time.perf_counter()
    errors = await asyncio.gather(
        *(_connection(signer, started + seconds, latencies) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    return Result(len(latencies), sum(errors), elapsed, latencies)


def run(target: Target, operation: str, body: bytes, concurrency: int, seconds: float) -> Result:
    return asyncio.run(_run(Signer(target, operation, body), concurrency, seconds))


def run_signed(signer: PathSigner, concurrency: int, seconds: float) -> Result:
    return asyncio.run(_run(signer, concurrency, seconds))


CANNED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{}"
)


async def _canned_server(port: int) -> None:
    """The load generator's ceiling: a server that answers at once, no work."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                match = _LENGTH.search(head)
                await reader.readexactly(int(match.group(1)) if match else 0)
                writer.write(CANNED)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def serve_canned(port: int) -> None:
    asyncio.run(_canned_server(port))
