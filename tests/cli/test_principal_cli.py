"""`hsmkms principal ...` and `hsmkms principal access-key ...` as an operator runs them
(subprocesses over an `hsmkms init` data dir), what a running `hsmkms serve` makes of a
disabled, re-enabled and deleted key, and what the audit trail keeps of it all."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.cli.test_cli import Cli, admin, serve, stop, wait_healthy
from tests.support.resilience_helpers import client

pytestmark = pytest.mark.skipif(
    os.environ.get("HSMKMS_TEST_TOKEN", "softhsm") != "softhsm",
    reason="the CLI creates and uses its own SoftHSM2 token (hsmkms init)",
)
ACCOUNT = "111122223333"
INVALID_TOKEN = "The security token included in the request is invalid."


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    runner = Cli(tmp_path_factory.mktemp("principals") / "data")
    runner.ok("init")
    return runner


def events(cli: Cli, name: str) -> list[dict[str, Any]]:
    found = cli.run("audit", "query", "--event", name).stdout.splitlines()
    return [json.loads(line) for line in found]


def test_principal_and_access_key_round_trip(cli: Cli, tmp_path: Path) -> None:
    arn = f"arn:aws:iam::{ACCOUNT}:user/rotating"
    first = cli.ok("principal", "add", "--arn", arn)  # the existing command, unchanged
    second = cli.ok("principal", "access-key", "create", arn)["AccessKey"]
    assert second["PrincipalArn"] == arn and second["Status"] == "Active"
    assert second["CreateDate"] and len(second["SecretAccessKey"]) >= 40
    assert cli.fails("principal", "access-key", "create", arn) == (
        "hsmkms: LimitExceeded: Cannot exceed quota for AccessKeysPerUser: 2\n"
    )
    ids = [first["AccessKeyId"], second["AccessKeyId"]]
    listed = cli.ok("principal", "access-key", "list", arn)["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in listed] == ids  # oldest first
    assert {k["Status"] for k in listed} == {"Active"}
    assert listed[0]["AccessKeyLastUsed"] == {"ServiceName": "N/A", "Region": "N/A"}

    assert cli.ok("principal", "access-key", "disable", ids[0]) is None  # as aws-cli: silent
    every = cli.ok("principal", "access-key", "list")["AccessKeyMetadata"]
    assert {k["AccessKeyId"]: k["Status"] for k in every}[ids[0]] == "Inactive"
    cli.ok("principal", "access-key", "enable", ids[0])
    assert cli.ok("principal", "access-key", "list", arn)["AccessKeyMetadata"][0]["Status"] == (
        "Active"
    )

    policy = tmp_path / "extra.json"
    policy.write_text(
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
        '"Action": "kms:Encrypt", "Resource": "*"}]}'
    )
    admin(cli, tmp_path, arn)
    cli.ok("principal", "attach-policy", arn, str(policy), "--name", "extra")
    cli.ok("principal", "tag", arn, "team=blue")
    shown = cli.ok("principal", "show", arn)["Principal"]
    assert [p["PolicyName"] for p in shown["Policies"]] == ["admin", "extra"]
    assert shown["Policies"][1]["PolicyDocument"]["Statement"][0]["Action"] == "kms:Encrypt"
    assert [k["AccessKeyId"] for k in shown["AccessKeys"]] == ids and shown["Tags"] == {
        "team": "blue"
    }
    cli.ok("principal", "detach-policy", arn, "extra")
    assert "NoSuchEntity: The user policy with name extra cannot be found." in cli.fails(
        "principal", "detach-policy", arn, "extra"
    )
    (entry,) = [p for p in cli.ok("principal", "list")["Principals"] if p["PrincipalArn"] == arn]
    assert entry == {
        "PrincipalArn": arn, "AccessKeyIds": ids, "PolicyNames": ["admin"],
        "Tags": {"team": "blue"},
    }  # fmt: skip

    cli.ok("principal", "access-key", "delete", ids[1])  # Active: IAM deletes it anyway
    assert f"NoSuchEntity: The Access Key with id {ids[1]} cannot be found." in cli.fails(
        "principal", "access-key", "delete", ids[1]
    )
    assert cli.ok("principal", "remove", arn) == {
        "PrincipalArn": arn, "DeletedAccessKeyIds": [ids[0]], "DeletedPolicyNames": ["admin"],
        "DeletedTags": {"team": "blue"}, "RevokedGrantIds": [], "KeyPoliciesNamingPrincipal": [],
    }  # fmt: skip
    for command in (("show", arn), ("remove", arn), ("access-key", "list", arn)):
        assert "NoSuchEntity: The user with name rotating cannot be found." in cli.fails(
            "principal", *command
        )

    # The audit trail names who changed what, failures too, and never a secret.
    (created,) = events(cli, "CreateAccessKey")[:1]
    assert created["requestParameters"] == {"PrincipalArn": arn, "AccessKeyId": ids[1]}
    assert created["userIdentity"]["type"] == "Operator" and created["readOnly"] is False
    refused = [e for e in events(cli, "CreateAccessKey") if "errorCode" in e]
    assert refused[0]["errorCode"] == "LimitExceeded"
    updates = [e["requestParameters"] for e in events(cli, "UpdateAccessKey")]
    assert updates[:2] == [
        {"PrincipalArn": arn, "AccessKeyId": ids[0], "Status": "Inactive"},
        {"PrincipalArn": arn, "AccessKeyId": ids[0], "Status": "Active"},
    ]
    assert events(cli, "DeletePrincipal")[0]["requestParameters"] == {
        "PrincipalArn": arn, "AccessKeyIds": [ids[0]], "PolicyNames": ["admin"], "GrantIds": [],
    }  # fmt: skip
    assert events(cli, "DeletePrincipalPolicy")[0]["requestParameters"]["PolicyName"] == "extra"
    assert events(cli, "ListAccessKeys")[0]["readOnly"] is True
    trail = b"".join(
        p.read_bytes()
        for p in (Path(cli.env["HSMKMS_DATA_DIR"]) / "audit").rglob("*")
        if p.is_file()
    )
    for secret in (first["SecretAccessKey"], second["SecretAccessKey"]):
        assert secret.encode() not in trail
    assert cli.ok("audit", "verify")["Valid"] is True


def outcome_within(kms: Any, seconds: float, *, refused: bool) -> tuple[str | None, float]:
    """Poll until a call is refused (or works): its error code and how long it took."""
    start = time.monotonic()
    while True:
        try:
            kms.generate_random(NumberOfBytes=8)
            if not refused:
                return None, time.monotonic() - start
        except ClientError as exc:
            if refused:
                error = exc.response["Error"]
                assert error["Message"] == INVALID_TOKEN, error
                return str(error["Code"]), time.monotonic() - start
        assert time.monotonic() - start < seconds, "the key's new status was not seen in time"
        time.sleep(0.1)


def test_serve_refuses_a_disabled_key_takes_it_back_and_refuses_a_deleted_one(
    cli: Cli, tmp_path: Path
) -> None:
    arn = f"arn:aws:iam::{ACCOUNT}:user/served"
    credential = cli.ok("principal", "add", "--arn", arn)
    admin(cli, tmp_path, arn)
    key_id = credential["AccessKeyId"]
    process, port = serve(cli)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        kms = client(url, key_id, credential["SecretAccessKey"])
        kms.generate_random(NumberOfBytes=8)  # the server has it cached now
        cli.ok("principal", "access-key", "disable", key_id)
        code, _ = outcome_within(kms, 3.0, refused=True)
        assert code == "UnrecognizedClientException"
        cli.ok("principal", "access-key", "enable", key_id)
        outcome_within(kms, 3.0, refused=False)
        (listed,) = cli.ok("principal", "access-key", "list", arn)["AccessKeyMetadata"]
        assert listed["AccessKeyLastUsed"]["Region"] == "us-east-1"
        assert listed["AccessKeyLastUsed"]["ServiceName"] == "kms"
        assert listed["AccessKeyLastUsed"]["LastUsedDate"]
        cli.ok("principal", "access-key", "delete", key_id)
        code, _ = outcome_within(kms, 3.0, refused=True)
        assert code == "UnrecognizedClientException"
        kms.close()
    finally:
        stop(process)
