"""Audit durability modes, `audit query` over rotated files, and operator records."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hsmkms.audit import log as audit_log
from hsmkms.audit.log import AuditLog, verify
from hsmkms.audit.operator import operator_event, operator_identity
from hsmkms.audit.query import INDEX_SUFFIX, Query, query
from tests.conftest import ROOT, Server

ARN = "arn:aws:kms:us-east-1:111122223333:key/"
ALICE = "arn:aws:iam::111122223333:user/alice"
BOB = "arn:aws:iam::111122223333:user/bob"


def test_sync_record_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, node_id="n")
    assert log.durability == "sync"
    for n in range(3):
        log.record({"eventName": "Encrypt", "n": n})
        assert json.loads(log.path.read_text().splitlines()[-1])["n"] == n  # no flush needed
    log.close()
    with pytest.raises(OSError, match="closed"):
        log.record({"eventName": "Encrypt"})


def test_concurrent_sync_records_share_fsyncs(tmp_path: Path, monkeypatch: Any) -> None:
    calls = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    log = AuditLog(tmp_path, node_id="n")
    monkeypatch.setattr(audit_log.os, "fsync", counting_fsync)  # observed, still real
    start = threading.Barrier(8)

    def client(n: int) -> None:
        start.wait()
        for i in range(25):
            log.record({"eventName": "Encrypt", "client": n, "i": i})

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert verify(tmp_path).records == 200
    assert len(calls) < 200  # group commit: one fsync served several records


def test_async_mode_only_queues(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, node_id="n", durability="async")
    assert log.submit({"eventName": "Encrypt"}) is None
    log.flush()
    assert verify(tmp_path).records == 1
    log.close()
    with pytest.raises(ValueError, match="durability"):
        AuditLog(tmp_path, durability="later")  # type: ignore[arg-type]


def test_http_response_waits_for_the_record(server: Server) -> None:
    kms = server.client()
    key = kms.create_key(Description="durable")["KeyMetadata"]["KeyId"]
    kms.describe_key(KeyId=key)
    last = json.loads(server.audit.path.read_text().splitlines()[-1])  # no flush
    assert last["eventName"] == "DescribeKey"
    assert last["requestParameters"] == {"KeyId": key}


def event(name: str, key: str, principal: str, when: str) -> dict[str, Any]:
    return {"eventName": name, "eventTime": when, "userIdentity": {"arn": principal},
            "requestParameters": {"KeyId": key}, "resources": [{"ARN": ARN + key}]}  # fmt: skip


@pytest.fixture
def rotated(tmp_path: Path) -> Path:
    """Three days, three files, two keys, two principals."""
    log = AuditLog(tmp_path, node_id="n", rotate_bytes=1)  # every batch a new file
    for day in (1, 2, 3):
        when = f"2026-01-0{day}T12:00:00+00:00"
        log.record(event("Encrypt", f"key-{day % 2}", ALICE, when))
        log.record(event("Decrypt", "key-1", BOB if day == 3 else ALICE, when))
    log.close()
    return tmp_path


def test_query_by_key_event_principal_and_time(rotated: Path) -> None:
    def ask(**what: Any) -> list[tuple[str, str]]:
        return [(r["eventName"], r["eventTime"][:10]) for r in query(rotated, Query(**what))]

    assert ask(key="key-0") == [("Encrypt", "2026-01-02")]
    assert ask(key=ARN + "key-1", event="Decrypt") == [
        ("Decrypt", "2026-01-01"), ("Decrypt", "2026-01-02"), ("Decrypt", "2026-01-03"),
    ]  # fmt: skip
    assert ask(principal=BOB) == [("Decrypt", "2026-01-03")]
    since = Query(since=datetime.fromisoformat("2026-01-02T00:00+00:00"))
    assert len(list(query(rotated, since))) == 4
    assert ask(key="key-9") == []
    indexes = sorted(rotated.glob(f"*{INDEX_SUFFIX}"))
    assert len(indexes) == len(list(rotated.glob("n.w0.*.jsonl"))) - 1  # all but the live file
    first = json.loads(indexes[0].read_text())
    assert "key-1" in first["keys"] and ALICE in first["principals"]


def test_a_stale_index_is_rebuilt(rotated: Path) -> None:
    list(query(rotated, Query(key="key-1")))
    index = next(rotated.glob(f"*{INDEX_SUFFIX}"))
    stale = json.loads(index.read_text())
    index.write_text(json.dumps({**stale, "keys": [], "size": stale["size"] - 1}))
    assert len(list(query(rotated, Query(key="key-1")))) == 5
    assert json.loads(index.read_text())["keys"] == stale["keys"]


def test_query_command_prints_json_lines(rotated: Path, tmp_path_factory: Any) -> None:
    data = tmp_path_factory.mktemp("querydata")
    rotated.rename(data / "audit")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))}
    env.update(HSMKMS_DATA_DIR=str(data), PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [sys.executable, "-m", "hsmkms.cli", "audit", "query", "--key", "key-1",
         "--principal", ALICE, "--since", "2026-01-02"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    found = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(r["eventName"], r["eventTime"][:10]) for r in found] == [
        ("Decrypt", "2026-01-02"), ("Encrypt", "2026-01-03"),
    ]  # fmt: skip


def test_operator_actions_join_the_trail(tmp_path: Path) -> None:
    identity = operator_identity()
    assert identity["userName"] == pwd.getpwuid(os.getuid()).pw_name
    assert identity["host"] == socket.gethostname() and identity["type"] == "Operator"
    log = AuditLog(tmp_path, node_id="cli")
    parameters = {"KeyId": "key-7", "Plaintext": "c2VjcmV0"}
    log.record(operator_event("ScheduleKeyDeletion", resources=["key-7"], parameters=parameters))
    failed = operator_event("DisableKey", parameters={"KeyId": "key-7"},
                            error_code="NotFoundException", error_message="no key")  # fmt: skip
    log.record(failed)
    log.close()
    found = list(query(tmp_path, Query(key="key-7")))
    assert [r["eventName"] for r in found] == ["ScheduleKeyDeletion", "DisableKey"]
    assert found[0]["userIdentity"]["userName"] == identity["userName"]
    assert found[0]["requestParameters"] == {"KeyId": "key-7"}  # the allow-list applies
    assert found[1]["errorCode"] == "NotFoundException"
    assert "c2VjcmV0" not in log.path.read_text()
    assert verify(tmp_path).ok


def test_query_takes_a_time_range_and_verify_names_each_chains_last_checkpoint(
    tmp_path: Path,
) -> None:
    log = AuditLog(tmp_path, node_id="n")
    for day in (1, 2, 3):
        log.record({"eventName": "Encrypt", "eventTime": f"2026-01-0{day}T12:00:00+00:00"})
    log.close()
    window = Query(since=datetime.fromisoformat("2026-01-02T00:00:00+00:00"),
                   until=datetime.fromisoformat("2026-01-03T00:00:00+00:00"))  # fmt: skip
    assert [r["eventTime"][:10] for r in query(tmp_path, window)] == ["2026-01-02"]
    status = verify(tmp_path).verdict()["ChainStatus"]
    assert status == {"n.w0": {"problems": [], "latestCheckpoint": None}}  # no token, none
