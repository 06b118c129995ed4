"""The audit trail: every API call recorded, chained, verifiable, and free of secrets."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from hsmkms.audit.files import seal
from hsmkms.audit.log import AuditLog, verify
from tests.conftest import Server


def records(log: AuditLog) -> list[dict[str, object]]:
    log.flush()
    return [json.loads(line) for line in log.path.read_text().splitlines()]


def test_chain_verifies_and_survives_restarts(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    for n in range(5):
        log.record({"eventName": "Encrypt", "n": n})
    log.close()
    again = AuditLog(tmp_path)  # a restart continues the chain
    again.record({"eventName": "Decrypt"})
    again.close()
    result = verify(tmp_path)
    assert result.ok and result.records == 6


@pytest.mark.parametrize("damage", ["edit", "drop", "swap", "garbage"])
def test_tampering_is_found_and_named(tmp_path: Path, damage: str) -> None:
    log = AuditLog(tmp_path)
    for n in range(4):
        log.record({"eventName": "Encrypt", "n": n})
    log.close()
    path = log.path
    lines = path.read_text().splitlines()
    if damage == "edit":
        lines[2] = lines[2].replace('"n": 2', '"n": 9').replace('"n":2', '"n":9')
        assert '"n": 9' in lines[2] or '"n":9' in lines[2]
    elif damage == "drop":
        del lines[1]
    elif damage == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines[3] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    result = verify(tmp_path)
    assert not result.ok
    assert result.problem.startswith(
        f"{path.name} record {3 if damage in ('edit',) else 4 if damage == 'garbage' else 2}:"
    )


def test_every_call_is_audited_without_secrets(server: Server) -> None:
    kms = server.client()
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    secret = os.urandom(48)
    blob = kms.encrypt(KeyId=key, Plaintext=secret, EncryptionContext={"app": "audit"})
    kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"app": "audit"})
    outsider = server.principal("audited-outsider")
    with pytest.raises(ClientError) as caught:
        outsider.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"app": "audit"})
    reason = caught.value.response["Error"]["Message"]

    trail = records(server.audit)
    raw = server.audit.path.read_bytes()
    for form in (secret, base64.b64encode(secret), base64.b64encode(blob["CiphertextBlob"])):
        assert form not in raw
    mine = [r for r in trail if key in json.dumps(r.get("resources", ""))]
    names = [r["eventName"] for r in mine]
    assert names[-3:] == ["Encrypt", "Decrypt", "Decrypt"]
    encrypt = mine[-3]
    assert encrypt["requestParameters"] == {"KeyId": key, "EncryptionContext": {"app": "audit"}}
    assert encrypt["userIdentity"]["arn"] == server.principal_arn  # type: ignore[index]
    assert "errorCode" not in encrypt
    denial = mine[-1]
    assert denial["errorCode"] == "AccessDeniedException"
    assert denial["errorMessage"] == reason  # the same reason the caller saw
    assert verify(server.audit.path.parent).ok


def test_unauthenticated_calls_are_audited_too(server: Server) -> None:
    server.raw("GenerateRandom", '{"NumberOfBytes": 8}', secret="z" * 40)
    last = records(server.audit)[-1]
    assert last["eventName"] == "GenerateRandom"
    assert last["userIdentity"] is None and last["errorCode"] == "InvalidSignatureException"


def test_a_trail_from_before_chains_is_still_checked(tmp_path: Path) -> None:
    previous, lines = "0" * 64, []
    for n in range(3):  # the single-file format of earlier releases
        line, previous = seal({"eventName": "Encrypt", "n": n}, previous)
        lines.append(line)
    legacy = tmp_path / "hsmkms-audit.jsonl"
    legacy.write_text("".join(lines))
    assert verify(tmp_path).ok and verify(tmp_path).records == 3
    legacy.write_text("".join(lines).replace('"n":1', '"n":5'))
    assert verify(tmp_path).problem.startswith("hsmkms-audit.jsonl record 2:")
