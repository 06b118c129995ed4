"""Several `hsmkms serve` processes on one data dir and one SoftHSM2 token: rotation
races between processes, `--workers N`, and a shutdown that a stuck call cannot
block."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.cli.test_cli import Cli, admin, serve, stop, wait_healthy
from tests.conftest import ROOT, free_port
from tests.support import loopback
from tests.support.parallel import serial
from tests.support.resilience_helpers import client

pytestmark = serial


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, tuple[str, str]]:
    """An initialised data dir and an admin principal's key pair."""
    directory = tmp_path_factory.mktemp("multi")
    cli = Cli(directory / "data")
    cli.env["PYTHONPATH"] = str(ROOT)
    cli.ok("init")
    arn = "arn:aws:iam::111122223333:user/multi"
    credential = cli.ok("principal", "add", "--arn", arn)
    admin(cli, directory, arn)
    return cli, (credential["AccessKeyId"], credential["SecretAccessKey"])


def test_two_servers_rotating_one_key_make_one_object_per_version(
    data: tuple[Cli, tuple[str, str]],
) -> None:
    cli, keys = data
    servers: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        clients: list[Any] = []
        for _ in range(2):  # one after the other: SoftHSM2 can miss a token whose files
            process, port = serve(cli)  # another process rewrites while it logs in
            servers.append((process, port))
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, process)
            clients.append(client(url, *keys))
        key_id = clients[0].create_key()["KeyMetadata"]["KeyId"]
        blob = clients[0].encrypt(KeyId=key_id, Plaintext=b"v1")["CiphertextBlob"]
        outcomes: Counter[str] = Counter()
        start = threading.Barrier(4)

        def rotate(kms: Any) -> None:
            start.wait()
            for _ in range(3):
                try:
                    kms.rotate_key_on_demand(KeyId=key_id)
                    outcomes["ok"] += 1
                except ClientError as exc:
                    outcomes[exc.response["Error"]["Code"]] += 1

        threads = [threading.Thread(target=rotate, args=(kms,)) for kms in clients * 2]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert outcomes == {"ok": 10, "LimitExceededException": 2}
        time.sleep(1.1)  # the other server's metadata cache
        for kms in clients:
            fresh = kms.encrypt(KeyId=key_id, Plaintext=b"now")["CiphertextBlob"]
            assert fresh[17:21] == (11).to_bytes(4, "big")
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"v1"
    finally:
        for process, _ in servers:
            stop(process)
    report = cli.ok("maintain")
    assert report["DuplicateObjectsDestroyed"] == [] == report["DuplicateObjectsUnresolved"]
    assert len(cli.ok("key", "list-rotations", key_id)["Rotations"]) == 10


def test_serve_with_worker_processes(data: tuple[Cli, tuple[str, str]]) -> None:
    cli, keys = data
    process, port = serve(cli, "--workers", "2")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        kms = client(url, *keys)
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        time.sleep(1.1)  # a key made by one worker is seen by the other within a second
        for n in range(20):  # new connections: both workers answer
            kms = client(url, *keys)
            blob = kms.encrypt(KeyId=key_id, Plaintext=b"%d" % n)["CiphertextBlob"]
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"%d" % n
        assert len(children_of(process.pid)) >= 2
    finally:
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        assert time.monotonic() - started < 20


def children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


STUCK_SERVER = """
import sys
from hsmkms.api.server import serve
from hsmkms.bootstrap import build_app, build_key_manager
from hsmkms.config import load_settings
from tests.support.resilience_helpers import PoisonedSession

settings = load_settings()
km = build_key_manager(settings, audited=False)
app = build_app(settings, km, serving=True)
poison = PoisonedSession(km.hsm)  # the next token call never returns
serve(app, settings.serving.model_copy(update={"port": int(sys.argv[1])}), settings.edge)
"""


def test_sigterm_stops_a_server_whose_token_call_never_returns(
    data: tuple[Cli, tuple[str, str]],
) -> None:
    cli, keys = data
    port = free_port()
    env = {
        **cli.env,
        "HSMKMS_MAINTENANCE_SECONDS": "0",
        "HSMKMS_SHUTDOWN_DRAIN_SECONDS": "2",
        "HSMKMS_TOKEN_CALL_TIMEOUT_SECONDS": "600",  # no deadline to rescue the call
        "HSMKMS_WORKERS": "1",  # the poisoned session is in this process
    }
    process = subprocess.Popen(
        [sys.executable, "-c", STUCK_SERVER, str(port)], env=env, cwd=cli.cwd
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                loopback.get(url + "/metrics", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.2)
        answered: list[object] = []

        def call() -> None:
            with contextlib.suppress(Exception):  # the server goes away under it
                answered.append(client(url, *keys).generate_random(NumberOfBytes=8))

        stuck = threading.Thread(target=call, daemon=True)
        stuck.start()
        time.sleep(1.0)
        assert stuck.is_alive()  # the request is stuck in the token
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        # Drain (2 s), then the exit deadline (drain + 5 s) at the latest.
        assert time.monotonic() - started < 10
        assert answered == []
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert Path(cli.env["HSMKMS_DATA_DIR"]).exists()
