"""Two real `hsmkms serve` processes sharing one PostgreSQL database and one token: a
change made through one node is seen at once through the other, and the audit trail
(one chain per node) verifies afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.cli.test_cli import Cli, stop, wait_healthy
from tests.conftest import free_port
from tests.support.parallel import serial
from tests.support.processes import workers_of

pytestmark = [
    serial,
    pytest.mark.needs_token(
        "softhsm", reason="the nodes use their own SoftHSM2 token (hsmkms init)"
    ),
]
ARN = "arn:aws:iam::111122223333:user/two-nodes"


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[tuple[Cli, list[Any]]]:
    """Two nodes; the clients list carries the node processes after the clients."""
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
            env["HSMKMS_WORKERS"] = "1"  # two nodes of one process each
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
        yield cli, [*clients, *processes]
    finally:
        for process in processes:
            if process.poll() is None:
                stop(process)


def code(caught: pytest.ExceptionInfo[ClientError]) -> str:
    return str(caught.value.response["Error"]["Code"])


def test_two_nodes_share_one_truth(cluster: tuple[Cli, list[Any]]) -> None:
    _, (a, b, *_) = cluster
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
    cli, (a, b, *_) = cluster
    for client in (a, b, a, b):
        client.generate_random(NumberOfBytes=8)
    verified = cli.ok("audit", "verify")  # while both nodes run
    assert verified["Valid"] is True
    chains = verified["Chains"]
    assert any(name.startswith("node-a.") for name in chains)
    assert any(name.startswith("node-b.") for name in chains)


def test_a_node_killed_mid_work_leaves_nothing_half_made(cluster: tuple[Cli, list[Any]]) -> None:
    """kill -9 of one node while it creates, rotates and deletes keys: the other node
    serves on, every key it lists is whole (usable, or deliberately not), and the
    maintenance pass and the audit trail still work."""
    cli, (a, b, node_a, _) = cluster
    survivors = b.create_key()["KeyMetadata"]["KeyId"]
    blob = b.encrypt(KeyId=survivors, Plaintext=b"kept")["CiphertextBlob"]
    stop_work, working = threading.Event(), threading.Event()

    def work() -> None:
        while not stop_work.is_set():
            try:
                key_id = a.create_key()["KeyMetadata"]["KeyId"]
                working.set()
                a.rotate_key_on_demand(KeyId=key_id)
                doomed = a.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
                a.schedule_key_deletion(KeyId=doomed["KeyMetadata"]["KeyId"])
            except Exception:  # the node dies under us
                return

    workers = [threading.Thread(target=work) for _ in range(3)]
    for thread in workers:
        thread.start()
    time.sleep(2.0)
    # Killed mid-work, whatever the load: not before node a has made its first key.
    assert working.wait(timeout=120), "node a made no key"
    for pid in [node_a.pid, *workers_of(node_a.pid)]:  # the node: every process of it
        os.kill(pid, signal.SIGKILL)
    node_a.wait(timeout=10)
    stop_work.set()
    for thread in workers:
        thread.join(timeout=30)

    assert b.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"
    keys = [k["KeyId"] for k in b.list_keys(Limit=1000)["Keys"]]
    assert len(keys) > 1
    for key_id in keys:
        meta = b.describe_key(KeyId=key_id)["KeyMetadata"]
        if meta["KeyState"] != "Enabled":
            assert meta["KeyState"] == "PendingDeletion"
            continue
        if meta["KeyUsage"] == "ENCRYPT_DECRYPT":
            made = b.encrypt(KeyId=key_id, Plaintext=b"whole")["CiphertextBlob"]
            assert b.decrypt(CiphertextBlob=made)["Plaintext"] == b"whole"
        else:
            b.sign(KeyId=key_id, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    report = cli.ok("maintain")  # intents younger than the grace period are left alone
    assert report["MaterialMissing"] == [] and report["UnknownObjectsLeftAlone"] == []
    verified = cli.ok("audit", "verify")  # the killed node's uncovered tail is a note
    assert verified["Valid"] is True


def test_a_key_disabled_through_the_cli_is_refused_by_both_nodes(
    cluster: tuple[Cli, list[Any]],
) -> None:
    """Each node caches the credential; the CLI's write moves the shared generation."""
    cli, (a, b, *_) = cluster
    for client in (a, b):
        client.generate_random(NumberOfBytes=8)
    (key,) = cli.ok("principal", "access-key", "list", ARN)["AccessKeyMetadata"]
    cli.ok("principal", "access-key", "disable", key["AccessKeyId"])
    for client in (b, a):
        assert refused_within(client, 3.0) == "UnrecognizedClientException"
    cli.ok("principal", "access-key", "enable", key["AccessKeyId"])
    for client in (a, b):
        assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8


def refused_within(client: Any, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.generate_random(NumberOfBytes=8)
        except ClientError as exc:
            assert exc.response["Error"]["Message"] == (
                "The security token included in the request is invalid."
            )
            return str(exc.response["Error"]["Code"])
        assert time.monotonic() < deadline, "a disabled access key still authenticates"
        time.sleep(0.1)
