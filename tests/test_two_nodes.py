"""Two real `hsmkms serve` processes sharing one PostgreSQL database and one token: a
change made through one node is seen at once through the other, and the audit trail
(one chain per node) verifies afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import free_port
from tests.test_cli import Cli, stop, wait_healthy

pytestmark = pytest.mark.skipif(
    os.environ.get("HSMKMS_TEST_TOKEN", "softhsm") != "softhsm",
    reason="the nodes use their own SoftHSM2 token (hsmkms init)",
)
ARN = "arn:aws:iam::111122223333:user/two-nodes"


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[tuple[Cli, list[Any]]]:
    cli = Cli(tmp_path / "data")
    cli.env["HSMKMS_DATABASE_URL"] = pg_url
    assert cli.ok("init")["database"].startswith("postgresql://")
    credential = cli.ok("principal", "add", "--arn", ARN)
    policy = tmp_path / "admin.json"
    policy.write_text(
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", '
        '"Resource": "*"}]}'
    )
    cli.ok("principal", "attach-policy", ARN, str(policy))
    processes, clients = [], []
    try:
        for node in ("node-a", "node-b"):
            port = free_port()
            env = {**cli.env, "HSMKMS_MAINTENANCE_SECONDS": "0", "HSMKMS_AUDIT_NODE_ID": node}
            process = subprocess.Popen(
                [sys.executable, "-m", "hsmkms.cli", "serve", "--port", str(port)],
                env=env,
                cwd=cli.cwd,
            )
            processes.append(process)
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, process)
            clients.append(
                boto3.client(
                    "kms",
                    endpoint_url=url,
                    region_name="us-east-1",
                    aws_access_key_id=credential["AccessKeyId"],
                    aws_secret_access_key=credential["SecretAccessKey"],
                    config=Config(retries={"max_attempts": 1}),
                )
            )
        yield cli, clients
    finally:
        for process in processes:
            stop(process)


def code(caught: pytest.ExceptionInfo[ClientError]) -> str:
    return str(caught.value.response["Error"]["Code"])


def test_two_nodes_share_one_truth(cluster: tuple[Cli, list[Any]]) -> None:
    _, (a, b) = cluster
    key_id = a.create_key(Description="shared")["KeyMetadata"]["KeyId"]
    blob = a.encrypt(KeyId=key_id, Plaintext=b"one truth")["CiphertextBlob"]
    assert b.decrypt(CiphertextBlob=blob)["Plaintext"] == b"one truth"

    b.disable_key(KeyId=key_id)
    with pytest.raises(ClientError) as disabled:
        a.encrypt(KeyId=key_id, Plaintext=b"x")  # no waiting for a cache to expire
    assert code(disabled) == "DisabledException"
    b.enable_key(KeyId=key_id)

    second = b.create_key()["KeyMetadata"]["KeyId"]
    a.create_alias(AliasName="alias/shared", TargetKeyId=key_id)
    assert a.encrypt(KeyId="alias/shared", Plaintext=b"x")["KeyId"].endswith(key_id)
    b.update_alias(AliasName="alias/shared", TargetKeyId=second)
    assert a.encrypt(KeyId="alias/shared", Plaintext=b"x")["KeyId"].endswith(second)

    grant = b.create_grant(
        KeyId=key_id, GranteePrincipal="arn:aws:iam::111122223333:user/g", Operations=["Encrypt"]
    )
    listed = a.list_grants(KeyId=key_id)["Grants"]
    assert [g["GrantId"] for g in listed] == [grant["GrantId"]]
    a.revoke_grant(KeyId=key_id, GrantId=grant["GrantId"])
    assert b.list_grants(KeyId=key_id)["Grants"] == []


def test_audit_trail_of_two_nodes_verifies(cluster: tuple[Cli, list[Any]]) -> None:
    cli, (a, b) = cluster
    for client in (a, b, a, b):
        client.generate_random(NumberOfBytes=8)
    verified = cli.ok("audit", "verify")  # while both nodes run
    assert verified["Valid"] is True
    chains = verified["Chains"]
    assert any(name.startswith("node-a.") for name in chains)
    assert any(name.startswith("node-b.") for name in chains)
