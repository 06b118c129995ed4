"""No answer without its audit record, for both faces of the edge: the record of a call
is on disk (durability `sync`) before its response is sent, and waiting for the disk
never holds up the event loop.

The XKS face used to answer first and write the record afterwards, on the event loop:
a crash in between lost the record of an answered request, and every XKS request
blocked the loop for an fsync.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hsmkms.api.app import create_app
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.audit.log import AuditLog
from hsmkms.config import XksSettings
from hsmkms.library import KeyManager
from hsmkms.xks.credentials import XksCredentialStore
from tests.cli.test_cli import Cli, wait_healthy
from tests.conftest import free_port, running
from tests.support import loopback, xks_support
from tests.support.parallel import serial
from tests.support.xks_support import XksServer, b64, metadata

# A stalled disk and a crashed process are timed: alone on their worker.
pytestmark = serial

_Item = Any


class StalledDisk(AuditLog):
    """An audit log whose disk stops answering while `stalled` is clear: writes wait."""

    def __init__(self, directory: Path) -> None:
        self.moving = threading.Event()
        self.moving.set()
        super().__init__(directory)

    def _write(self, batch: list[_Item]) -> bool:
        self.moving.wait(timeout=30)
        return super()._write(batch)


@contextmanager
def xks_app(km: KeyManager, audit: AuditLog) -> Iterator[XksServer]:
    credentials = XksCredentialStore(km.store, km.hsm)
    credentials.add("durable", xks_support.ACCESS_KEY_ID, xks_support.SECRET)
    app = create_app(
        km.context,
        SigV4Verifier(lambda _: None),
        maintenance_seconds=0,
        audit=audit,
        xks=XksSettings(uri_prefixes=("durable",)),
    )
    with running(app) as url:
        yield XksServer(url, km, credentials, audit)


def _encrypt(server: XksServer, key: str, request_id: str) -> httpx.Response:
    body = {
        "requestMetadata": {**metadata("Encrypt"), "kmsRequestId": request_id},
        "plaintext": b64(os.urandom(16)),
        "encryptionAlgorithm": "AES_GCM",
    }
    return server.post(f"keys/{key}/encrypt", body, prefix="durable")


def _records(directory: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(directory.glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


def _request_ids(records: list[dict[str, Any]]) -> set[str]:
    return {
        r["requestParameters"]["requestMetadata"]["kmsRequestId"]
        for r in records
        if r.get("eventSource") == "kms-xks-proxy"
    }


def test_an_xks_answer_waits_for_its_record_without_holding_the_loop(
    km: KeyManager, tmp_path: Path
) -> None:
    audit = StalledDisk(tmp_path / "audit")
    key = km.create_key()["KeyMetadata"]["KeyId"]
    try:
        with xks_app(km, audit) as server, ThreadPoolExecutor(1) as pool:
            assert _encrypt(server, key, "warm-up").status_code == 200
            audit.moving.clear()  # the disk stops
            pending: Future[httpx.Response] = pool.submit(_encrypt, server, key, "stalled")
            time.sleep(0.5)
            # The loop serves others meanwhile; the XKS answer waits for the disk.
            started = time.monotonic()
            assert loopback.get(server.url + "/healthz", timeout=5).status_code == 200
            assert time.monotonic() - started < 2.0
            assert not pending.done(), "answered before its record was on disk"
            audit.moving.set()
            assert pending.result(timeout=10).status_code == 200
        assert {"warm-up", "stalled"} <= _request_ids(_records(tmp_path / "audit"))
    finally:
        audit.moving.set()
        audit.close()


def test_an_xks_call_whose_record_cannot_be_written_is_not_answered(
    km: KeyManager, tmp_path: Path
) -> None:
    audit = AuditLog(tmp_path / "audit")
    key = km.create_key()["KeyMetadata"]["KeyId"]
    with xks_app(km, audit) as server:
        assert _encrypt(server, key, "before").status_code == 200
        audit.close()  # the trail can no longer be written
        refused = _encrypt(server, key, "after")
    assert refused.status_code == 500
    assert refused.json() == {
        "errorName": "InternalException",
        "errorMessage": "The audit record could not be written.",
    }
    assert "ciphertext" not in refused.text


# The server process dies in its audit writer, before the record of an XKS call
# reaches the disk, once TRIGGER exists: as a power cut between handler and response.
_CRASHING_SERVER = """
import os, pathlib, sys
from hsmkms.audit import log
trigger = pathlib.Path(os.environ["HSMKMS_TEST_CRASH_TRIGGER"])
write = log.AuditLog._write
def crash_first(self, batch):
    if trigger.exists() and any(
        event is not None and event.get("eventSource") == "kms-xks-proxy" for event, _ in batch
    ):
        os._exit(17)
    return write(self, batch)
log.AuditLog._write = crash_first
from hsmkms.cli import main
sys.exit(main())
"""


@pytest.fixture
def crashing_cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "data")
    cli.ok("init")
    cli.env["HSMKMS_XKS_URI_PREFIX"] = "durable"
    cli.env["HSMKMS_TEST_CRASH_TRIGGER"] = str(tmp_path / "crash-now")
    cli.ok("xks", "credential", "add", "--access-key-id", xks_support.ACCESS_KEY_ID,
           "--secret-access-key", xks_support.SECRET)  # fmt: skip
    return cli


def test_a_crash_between_handler_and_response_answers_nothing_unrecorded(
    crashing_cli: Cli, tmp_path: Path
) -> None:
    key = crashing_cli.ok("key", "create")["KeyMetadata"]["KeyId"]
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_SERVER, "serve", "--port", str(port)],
        # One process: the crash is patched into this one, and its exit is the server's.
        env={**crashing_cli.env, "HSMKMS_MAINTENANCE_SECONDS": "0", "HSMKMS_WORKERS": "1"},
        cwd=crashing_cli.cwd,
    )
    url = f"http://127.0.0.1:{port}"
    server = XksServer(url, None, None, None)  # type: ignore[arg-type]
    answered: list[str] = []
    try:
        wait_healthy(url, process)
        for number in range(5):
            request_id = f"before-crash-{number}"
            assert _encrypt(server, key, request_id).status_code == 200
            answered.append(request_id)
        (tmp_path / "crash-now").touch()
        try:
            last = _encrypt(server, key, "at-the-crash")
            if last.status_code == 200:
                answered.append("at-the-crash")
        except httpx.HTTPError:
            pass  # no answer: the process died first, as it should
        assert process.wait(timeout=30) == 17
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    recorded = _request_ids(_records(Path(crashing_cli.env["HSMKMS_DATA_DIR"]) / "audit"))
    assert set(answered) <= recorded, f"answered without a record: {set(answered) - recorded}"
    assert "at-the-crash" not in answered
