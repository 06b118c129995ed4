"""A real `hsmkms serve` under attack, with its default limits.

Eight clients keep announcing and streaming 100 MB bodies (half with a
Content-Length, half chunked) and 200 connections trickle their headers one line
a second, for longer than the header deadline. The server's RSS, read from
/proc, must stay within 200 MB of idle, and signed requests must still be
answered within 2 s. Everything runs on 127.0.0.1 and every socket is closed.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from hsmkms.config import EdgeLimits
from hsmkms.policy.principals import ADMIN_POLICY
from tests.cli.test_cli import Cli, serve, stop, wait_healthy
from tests.support.parallel import serial

pytestmark = serial

MIB = 1024 * 1024
BODY_CLIENTS, BODY_BYTES = 8, 100 * MIB
SLOW_CLIENTS = 200
DURATION = EdgeLimits().header_timeout_seconds + 4  # the slow clients are cut off once, and return
MAX_GROWTH_KIB = 200 * 1024
MAX_LATENCY = 2.0


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    kms: Any


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("edge-attack")
    cli = Cli(directory / "data")
    cli.ok("init")
    arn = "arn:aws:iam::111122223333:user/under-attack"
    credential = cli.ok("principal", "add", "--arn", arn)
    (directory / "admin.json").write_text(ADMIN_POLICY)
    cli.ok("principal", "attach-policy", arn, str(directory / "admin.json"))
    # One process: the caps hold per process, and its memory is what is measured.
    process, port = serve(cli, "--workers", "1")
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        kms = boto3.client(
            "kms", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
            aws_access_key_id=credential["AccessKeyId"],
            aws_secret_access_key=credential["SecretAccessKey"],
            config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10),
        )  # fmt: skip
        yield Running(process, port, kms)
        kms.close()
    finally:
        stop(process)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def big_bodies(port: int, chunked: bool, stop: threading.Event, seen: Counter[str]) -> None:
    """Announce a 100 MB body and stream it; when cut off, come straight back."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BODY_BYTES}"
    head = (
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: TrentService.Encrypt\r\n"
        f"Content-Type: application/x-amz-json-1.1\r\n{framing}\r\n\r\n"
    ).encode()
    piece = b"x" * 65536
    if chunked:
        piece = b"%x\r\n%s\r\n" % (len(piece), piece)
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sent = 0
            try:
                sock.sendall(head)
                while sent < BODY_BYTES and not stop.is_set():
                    sock.sendall(piece)
                    sent += 65536
            except OSError:
                seen["cut off"] += 1
            else:
                seen["sent whole" if sent >= BODY_BYTES else "stopped"] += 1
            with suppress(OSError):
                sock.settimeout(0.5)
                if sock.recv(64).startswith(b"HTTP/1.1 413 "):
                    seen["413"] += 1


def slow_headers(port: int, stop: threading.Event, seen: Counter[str]) -> None:
    """SLOW_CLIENTS connections sending one header line a second, reopened when cut off."""

    def open_one() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.setblocking(False)
        return sock

    socks = [open_one() for _ in range(SLOW_CLIENTS)]
    seen["slow open"] = len(socks)
    try:
        while not stop.wait(1.0):
            for n, sock in enumerate(socks):
                try:
                    sock.send(b"X-Trickle: 1\r\n")
                    cut = sock.recv(4096, socket.MSG_DONTWAIT)  # b"" or a 408: closed
                except BlockingIOError:
                    continue  # still open, nothing from the server
                except OSError:
                    cut = b""
                seen["slow 408" if cut.startswith(b"HTTP/1.1 408 ") else "slow cut"] += 1
                sock.close()
                socks[n] = open_one()
    finally:
        for sock in socks:
            sock.close()


def test_memory_and_latency_under_attack(running: Running) -> None:
    pid = running.process.pid
    for _ in range(20):  # warm up: the idle figure includes a served request's allocations
        running.kms.generate_random(NumberOfBytes=32)
    key = running.kms.create_key()["KeyMetadata"]["KeyId"]
    running.kms.encrypt(KeyId=key, Plaintext=b"warm")
    time.sleep(0.5)
    idle = rss_kib(pid)

    stop, seen = threading.Event(), Counter[str]()
    threads = [
        threading.Thread(target=big_bodies, args=(running.port, n % 2 == 1, stop, seen))
        for n in range(BODY_CLIENTS)
    ]
    threads.append(threading.Thread(target=slow_headers, args=(running.port, stop, seen)))
    latencies: list[float] = []
    peak = idle
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + DURATION
        while time.monotonic() < deadline:
            started = time.monotonic()
            blob = running.kms.encrypt(KeyId=key, Plaintext=b"still served")["CiphertextBlob"]
            latencies.append(time.monotonic() - started)
            peak = max(peak, rss_kib(pid))
            time.sleep(0.1)
        assert running.kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"still served"
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)

    report = (
        f"idle {idle // 1024} MiB, peak {peak // 1024} MiB, {len(latencies)} signed requests, "
        f"slowest {max(latencies):.3f} s, attack: {dict(seen)}"
    )
    print(report)
    assert peak - idle <= MAX_GROWTH_KIB, report
    assert max(latencies) < MAX_LATENCY, report
    assert len(latencies) >= DURATION * 2, report  # answered all along, not once
    assert seen["sent whole"] == 0 and seen["cut off"] >= BODY_CLIENTS, report
    assert seen["slow 408"] + seen["slow cut"] >= SLOW_CLIENTS, report  # each cut off once
    assert running.process.poll() is None
