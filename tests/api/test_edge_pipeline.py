"""The one edge pipeline: the call path the console shares with the KMS face
(`invoke` + `record`), the access log, 5xx causes in the server log only, and refusals
below the app recorded as the face of their path."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from hsmkms.api.audit_step import record
from hsmkms.api.invoke import Principal, invoke
from hsmkms.audit.log import AuditLog
from hsmkms.config import EdgeLimits, XksSettings
from hsmkms.library import KeyManager
from hsmkms.policy.principals import ADMIN_POLICY, CredentialStore
from hsmkms.token import Hsm
from tests.conftest import ACCOUNT, REGION
from tests.support import loopback
from tests.support.edge_support import edge_server, trail
from tests.support.xks_support import XksServer, b64, metadata

CONSOLE = "hsmkms-console"
_NUMBERS = itertools.count()
DENY_DISABLE = json.dumps(
    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Deny", "Action": "kms:DisableKey", "Resource": "*"}]}
)  # fmt: skip
DISABLE_ONLY = json.dumps(
    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow", "Action": "kms:DisableKey", "Resource": "*"}]}
)  # fmt: skip


def _run(km: KeyManager, audit: AuditLog, caller: Principal, name: str, members: Any) -> Any:
    """What the console does for one action: invoke, then the one audit step."""
    outcome = invoke(km.context, caller, name, members)
    asyncio.run(
        record(
            audit,
            outcome,
            request_id=f"console-{next(_NUMBERS)}",
            source_ip=caller.source_ip,
            user_agent=CONSOLE,
        )
    )
    return outcome


def test_the_console_call_path_authorizes_runs_and_records_once(
    km: KeyManager, tmp_path: Path
) -> None:
    credentials = CredentialStore(km.store, km.hsm)
    custodian = f"arn:aws:iam::{ACCOUNT}:user/custodian"
    credentials.add(custodian)
    credentials.attach_policy(custodian, "disable", DISABLE_ONLY)
    key = km.create_key()["KeyMetadata"]
    audit = AuditLog(tmp_path / "audit")
    as_custodian = Principal(custodian, REGION, "AKIACONSOLESESSION01", "192.0.2.7", True)
    outsider = Principal("arn:aws:iam::444455556666:user/mallory", REGION, None, "192.0.2.9")
    denier = f"arn:aws:iam::{ACCOUNT}:user/denied"
    credentials.add(denier)
    credentials.attach_policy(denier, "all", ADMIN_POLICY)
    credentials.attach_policy(denier, "but-disable", DENY_DISABLE)
    as_denied = Principal(denier, REGION, "AKIACONSOLESESSION02", "192.0.2.8")
    try:
        denied = _run(km, audit, as_custodian, "EnableKey", {"KeyId": key["KeyId"]})
        foreign = _run(km, audit, outsider, "DisableKey", {"KeyId": key["Arn"]})
        explicit = _run(km, audit, as_denied, "DisableKey", {"KeyId": key["KeyId"]})
        done = _run(km, audit, as_custodian, "DisableKey", {"KeyId": key["KeyId"]})
        invalid = _run(km, audit, as_custodian, "DisableKey", {"KeyId": 7})
        unknown = _run(km, audit, as_custodian, "MakeCoffee", {})
    finally:
        audit.close()
    assert denied.error is not None and denied.error.code == "AccessDeniedException"
    assert foreign.error is not None and foreign.error.code == "AccessDeniedException"
    assert explicit.error is not None and "explicit deny" in explicit.error.message
    assert (
        done.error is None
        and km.describe_key(key_id=key["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    )
    assert invalid.error is not None and invalid.error.code == "SerializationException"
    assert unknown.error is not None and unknown.error.code == "UnsupportedOperationException"
    records = [json.loads(line) for path in sorted((tmp_path / "audit").glob("*.jsonl"))
               for line in path.read_text().splitlines()]  # fmt: skip
    assert len(records) == len({r["requestID"] for r in records}) == 6  # one per call
    (enable,) = [r for r in records if r["eventName"] == "EnableKey"]
    assert enable["userAgent"] == CONSOLE and enable["sourceIPAddress"] == "192.0.2.7"
    assert enable["userIdentity"]["arn"] == custodian
    assert enable["errorCode"] == "AccessDeniedException"
    assert enable["resources"] == [{"ARN": key["Arn"], "type": "AWS::KMS::Key"}]
    assert [r.get("errorCode") for r in records if r["eventName"] == "DisableKey"] == [
        "AccessDeniedException",
        "AccessDeniedException",
        None,
        "SerializationException",
    ]


def test_every_request_gets_one_access_log_line(
    hsm: Hsm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with edge_server(hsm, tmp_path, access_log="json") as server:
        kms = server.client()
        kms.generate_random(NumberOfBytes=8)
        unsigned = loopback.post(server.url + "/", content=b"{}",
                              headers={"X-Amz-Target": "TrentService.ListKeys"})  # fmt: skip
        signed = server.raw("ListKeys", "{}")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()
             if line.startswith("{")]  # fmt: skip
    by_id = {line["requestId"]: line for line in lines}
    assert len(lines) == 3
    refused = by_id[unsigned.headers["x-amzn-requestid"]]
    assert refused["status"] == 400 and refused["principal"] == "-"
    assert refused["error"] == "MissingAuthenticationTokenException"
    listed = by_id[signed.headers["x-amzn-requestid"]]
    assert listed["principal"] == server.principal_arn
    assert (listed["protocol"], listed["operation"], listed["status"]) == ("kms", "ListKeys", 200)
    assert listed["error"] is None and 0 < listed["latencyMs"] < 30_000
    assert all(line["client"] == "127.0.0.1" for line in lines)


def test_text_access_log_and_off(
    hsm: Hsm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = "Fake 200 - 1.00ms\tx"  # a client's operation name posing as more fields
    with edge_server(hsm, tmp_path / "text") as server:  # text is the default
        response = server.raw("ListKeys", "{}")
        loopback.post(server.url + "/", content=b"{}",
                   headers={"X-Amz-Target": f"TrentService.{forged}"})  # fmt: skip
    lines = capsys.readouterr().err.splitlines()
    (line,) = [l for l in lines if "kms:ListKeys" in l]  # noqa: E741
    request_id, client, principal, _, status, error, latency = line.split()
    assert request_id == response.headers["x-amzn-requestid"]
    assert (client, principal, status, error) == ("127.0.0.1", server.principal_arn, "200", "-")
    assert latency.endswith("ms") and float(latency[:-2]) > 0
    (refused,) = [l for l in lines if "kms:Fake" in l]  # noqa: E741
    assert refused.split()[3] == "kms:Fake?200?-?1.00ms?x" and len(refused.split()) == 7
    with edge_server(hsm, tmp_path / "off", access_log="off") as server:
        server.raw("ListKeys", "{}")
    assert "kms:ListKeys" not in capsys.readouterr().err


def test_a_5xx_is_logged_with_its_cause_and_answered_without_it(
    hsm: Hsm, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with edge_server(hsm, tmp_path) as server:
        assert server.raw("GenerateRandom", '{"NumberOfBytes": 8}').status_code == 200
        server.audit.close()  # the trail's disk is gone: every answer is a 500 now
        with caplog.at_level(logging.ERROR, logger="hsmkms"):
            response = server.raw("GenerateRandom", '{"NumberOfBytes": 8}')
    assert response.status_code == 500
    assert response.json() == {
        "__type": "KMSInternalException",
        "message": "The audit record could not be written.",
    }
    assert "Traceback" not in response.text and "OSError" not in response.text
    request_id = response.headers["x-amzn-requestid"]
    mine = [r for r in caplog.records if request_id in r.getMessage()]
    assert any(r.exc_info for r in mine), "the cause's traceback is in the server log"
    assert any("cause: OSError" in r.getMessage() for r in mine)


def test_a_refusal_below_the_app_on_an_xks_path_is_recorded_as_an_xks_call(
    hsm: Hsm, tmp_path: Path
) -> None:
    limits = EdgeLimits(max_header_count=20)
    with edge_server(hsm, tmp_path, limits=limits, xks=XksSettings()) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            many = "".join(f"X-Filler-{n}: {n}\r\n" for n in range(30))
            request = f"POST /xks/kms/xks/v1/keys/k1/encrypt HTTP/1.1\r\nHost: x\r\n{many}\r\n"
            sock.sendall(request.encode())
            assert sock.recv(4096).split()[1] == b"431"
        audit = server.audit
    (refused,) = [r for r in trail(audit) if r.get("errorCode") == "RequestHeaderFieldsTooLarge"]
    assert refused["eventSource"] == "kms-xks-proxy"
    assert refused["eventName"] == "Encrypt"
    assert refused["requestParameters"]["uriPrefix"] == "xks"
    assert refused["requestParameters"]["externalKeyId"] == "k1"
    assert refused["userIdentity"] is None


def test_xks_calls_are_counted_in_the_metrics(xks_server: XksServer) -> None:
    key = xks_server.km.create_key()["KeyMetadata"]["KeyId"]
    body = {"requestMetadata": metadata("Encrypt"), "plaintext": b64(b"m"),
            "encryptionAlgorithm": "AES_GCM"}  # fmt: skip
    assert xks_server.post(f"keys/{key}/encrypt", body).status_code == 200
    unsigned = xks_server.post(f"keys/{key}/encrypt", body, sign=False)
    assert unsigned.status_code == 401
    text = loopback.get(xks_server.url + "/metrics").text
    assert 'hsmkms_xks_requests_total{error="",operation="Encrypt"}' in text
    assert (
        'hsmkms_xks_requests_total{error="AuthenticationFailedException",operation="Encrypt"}'
        in text
    )


def test_boto3_calls_carry_their_user_agent_into_the_trail(hsm: Hsm, tmp_path: Path) -> None:
    with edge_server(hsm, tmp_path) as server:
        kms = boto3.client("kms", endpoint_url=server.url, region_name=REGION,
                           aws_access_key_id=server.access_key_id,
                           aws_secret_access_key=server.secret_access_key,
                           config=Config(user_agent_extra="edge-test/1"))  # fmt: skip
        kms.list_keys()
        audit = server.audit
    (listed,) = [r for r in trail(audit) if r["eventName"] == "ListKeys"]
    assert "edge-test/1" in listed["userAgent"] and listed["userAgent"].startswith("Boto3")
