"""The operator CLI run as a subprocess against its own `hsmkms init` data dir."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hsmkms.config.defaults import available_cores
from hsmkms.policy.principals import ADMIN_POLICY
from tests.conftest import free_port
from tests.support import loopback

# `hsmkms init` makes its own SoftHSM2 token, and module initialisation parameters (NSS
# softokn's configdir) are not a setting yet: these tests are SoftHSM2-only.
pytestmark = pytest.mark.needs_token(
    "softhsm", reason="the CLI creates and uses its own SoftHSM2 token (hsmkms init)"
)


class Cli:
    def __init__(self, data_dir: Path) -> None:
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))
        }
        self.env["HSMKMS_DATA_DIR"] = str(data_dir)
        self.cwd = data_dir.parent

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hsmkms.cli", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, *args: str) -> Any:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else None

    def fails(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
        assert result.stderr.startswith("hsmkms: ")
        return result.stderr


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    runner = Cli(tmp_path_factory.mktemp("cli") / "data")
    first = runner.ok("init")
    assert first["token_created"] is True
    return runner


def test_init_is_idempotent_and_keeps_pins_private(cli: Cli) -> None:
    again = cli.ok("init")
    assert again["token_created"] is False
    data_dir = Path(cli.env["HSMKMS_DATA_DIR"])
    assert stat.S_IMODE((data_dir / "user.pin").stat().st_mode) == 0o600
    assert not (data_dir / "so.pin").exists()  # kept only with --keep-so-pin
    pin = (data_dir / "user.pin").read_text().strip()
    assert len(pin) >= 24
    assert pin not in again.__repr__()


def test_key_commands(cli: Cli) -> None:
    meta = cli.ok("key", "create", "--description", "from the cli")["KeyMetadata"]
    key_id = meta["KeyId"]
    assert meta["Description"] == "from the cli" and meta["KeyState"] == "Enabled"
    assert {"KeyId": key_id, "KeyArn": meta["Arn"]} in cli.ok("key", "list")["Keys"]
    cli.ok("key", "disable", key_id)
    assert cli.ok("key", "describe", key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    cli.ok("key", "enable", key_id)
    assert cli.ok("key", "rotate", key_id) == {"KeyId": meta["Arn"]}  # AWS answers the ARN
    assert len(cli.ok("key", "list-rotations", key_id)["Rotations"]) == 1
    cli.ok("key", "enable-rotation", key_id, "--period-days", "90")
    assert cli.ok("key", "rotation-status", key_id)["RotationPeriodInDays"] == 90
    scheduled = cli.ok("key", "schedule-deletion", key_id, "--days", "7")
    assert scheduled["KeyState"] == "PendingDeletion" and scheduled["PendingWindowInDays"] == 7
    cli.ok("key", "cancel-deletion", key_id)
    assert cli.ok("key", "describe", key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    assert "ValidationException" in cli.fails("key", "schedule-deletion", key_id, "--days", "3")
    report = cli.ok("maintain")
    assert report["Deleted"] == [] and report["OrphanObjectsDestroyed"] == []


def test_alias_commands(cli: Cli) -> None:
    key_id = cli.ok("key", "create")["KeyMetadata"]["KeyId"]
    assert cli.ok("alias", "create", "alias/cli-test", key_id) is None
    assert cli.ok("key", "describe", "alias/cli-test")["KeyMetadata"]["KeyId"] == key_id
    names = [a["AliasName"] for a in cli.ok("alias", "list")["Aliases"]]
    assert "alias/cli-test" in names
    assert "AlreadyExistsException" in cli.fails("alias", "create", "alias/cli-test", key_id)
    assert "NotAuthorizedException" in cli.fails("alias", "create", "alias/aws/x", key_id)
    cli.ok("alias", "delete", "alias/cli-test")
    assert "NotFoundException" in cli.fails("key", "describe", "alias/cli-test")


def test_file_round_trip_and_failures(cli: Cli, tmp_path: Path) -> None:
    key_id = cli.ok("key", "create")["KeyMetadata"]["KeyId"]
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(5 * 1024 * 1024 + 12345))
    sealed, opened = tmp_path / "big.enc", tmp_path / "big.out"
    cli.ok(
        "encrypt",
        "--key",
        key_id,
        "--context",
        "file=big",
        "--context",
        "team=ops",
        str(source),
        str(sealed),
    )
    assert sealed.stat().st_size > source.stat().st_size
    assert source.read_bytes()[:4096] not in sealed.read_bytes()
    cli.ok("decrypt", "--context", "team=ops", "--context", "file=big", str(sealed), str(opened))
    assert opened.read_bytes() == source.read_bytes()

    wrong = tmp_path / "wrong.out"
    assert "InvalidCiphertextException" in cli.fails(
        "decrypt", "--context", "file=other", "--context", "team=ops", str(sealed), str(wrong)
    )
    assert not wrong.exists()

    tampered = tmp_path / "tampered.enc"
    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(bytes(data))
    assert "InvalidCiphertextException" in cli.fails(
        "decrypt", "--context", "file=big", "--context", "team=ops", str(tampered), str(wrong)
    )
    assert not wrong.exists()

    assert "NotFoundException" in cli.fails(
        "encrypt", "--key", "alias/nobody", str(source), str(wrong)
    )
    assert "hsmkms: " in cli.fails("encrypt", "--key", key_id, str(tmp_path / "absent"), str(wrong))


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def serve(
    cli: Cli, *extra: str, stderr: Any = None, one_process: bool = True
) -> tuple[subprocess.Popen[bytes], int]:
    """`hsmkms serve` on a free port. one_process: one worker process (HSMKMS_WORKERS=1)
    unless `--workers` is given, for tests of what one process does (each worker process
    is a full start-up; tests/api/test_serve_workers.py tests the default of one per core)."""
    port = free_port()
    env = {**cli.env, "HSMKMS_MAINTENANCE_SECONDS": "0"}
    if one_process:
        env.setdefault("HSMKMS_WORKERS", "1")
    process = subprocess.Popen(
        [sys.executable, "-m", "hsmkms.cli", "serve", "--port", str(port), *extra],
        env=env,
        cwd=cli.cwd,
        stderr=stderr,
    )
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:  # a client's keep-alive connection held it open
        process.kill()
        process.wait(timeout=10)


def wait_healthy(url: str, process: subprocess.Popen[bytes], verify: object = True) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            status = loopback.get(url + "/healthz", verify=verify).json()  # type: ignore[arg-type]
        except httpx.HTTPError:
            status = {"status": "not listening yet"}
        if status["status"] == "ok":
            return
        # A server still starting may answer 503 while its first token probe is slow.
        assert time.monotonic() < deadline and process.poll() is None, status
        time.sleep(0.2)


def admin(cli: Cli, directory: Path, arn: str) -> None:
    policy = directory / "admin.json"
    policy.write_text(ADMIN_POLICY)
    assert cli.ok("principal", "attach-policy", arn, str(policy), "--name", "admin") == {
        "PrincipalArn": arn,
        "PolicyName": "admin",
    }
    policy.write_text('{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*"}]}')
    assert "MalformedPolicyDocumentException" in cli.fails(
        "principal", "attach-policy", arn, str(policy)
    )


def test_serve_with_tls(cli: Cli, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    credential = cli.ok("principal", "add", "--arn", "arn:aws:iam::111122223333:user/tls")
    admin(cli, tmp_path, "arn:aws:iam::111122223333:user/tls")
    process, port = serve(cli, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        url = f"https://127.0.0.1:{port}"
        wait_healthy(url, process, verify=ssl.create_default_context(cafile=str(cert)))
        kms = boto3.client(
            "kms", endpoint_url=url, region_name="us-east-1", verify=str(cert),
            aws_access_key_id=credential["AccessKeyId"],
            aws_secret_access_key=credential["SecretAccessKey"],
        )  # fmt: skip
        assert len(kms.generate_random(NumberOfBytes=16)["Plaintext"]) == 16
        kms.close()
    finally:
        stop(process)


def test_principal_add_and_serve(cli: Cli) -> None:
    generated = cli.ok("principal", "add", "--arn", "arn:aws:iam::111122223333:user/ops")
    admin(cli, Path(cli.env["HSMKMS_DATA_DIR"]), "arn:aws:iam::111122223333:user/ops")
    assert generated["AccessKeyId"].startswith("AKIA") and len(generated["SecretAccessKey"]) >= 40
    given = cli.ok(
        "principal", "add", "--arn", "arn:aws:iam::111122223333:role/app",
        "--access-key-id", "AKIAEXAMPLEGIVEN0001", "--secret-access-key", "s" * 40,
    )  # fmt: skip
    assert given == {
        "PrincipalArn": "arn:aws:iam::111122223333:role/app",
        "AccessKeyId": "AKIAEXAMPLEGIVEN0001",
    }
    assert "ValidationException" in cli.fails("principal", "add", "--arn", "not-an-arn")
    database = (Path(cli.env["HSMKMS_DATA_DIR"]) / "hsmkms.db").read_bytes()
    assert generated["SecretAccessKey"].encode() not in database and b"s" * 40 not in database

    server, port = serve(cli)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, server)
        kms = boto3.client(
            "kms", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id=generated["AccessKeyId"],
            aws_secret_access_key=generated["SecretAccessKey"],
        )  # fmt: skip
        created = kms.create_key(Description="via serve")
        assert created["KeyMetadata"]["KeyState"] == "Enabled"
        request_id = created["ResponseMetadata"]["RequestId"]
        kms.close()
    finally:
        stop(server)
    verified = cli.ok("audit", "verify")
    assert verified["Valid"] is True and verified["Records"] >= 1
    # The chain of the worker process that answered (one per process, one per core).
    (trail,) = [
        chain
        for chain in (Path(cli.env["HSMKMS_DATA_DIR"]) / "audit").glob("*.000001.jsonl")
        if request_id in chain.read_text()
    ]
    lines = trail.read_text().splitlines()
    (mine,) = [n for n, line in enumerate(lines) if request_id in line]
    assert '"CreateKey"' in lines[mine]
    lines[mine] = lines[mine].replace('"CreateKey"', '"DeleteKey"')
    trail.write_text("\n".join(lines) + "\n")
    assert f"{trail.name} record {mine + 1}:" in cli.fails("audit", "verify")


def test_policy_explain(cli: Cli, tmp_path: Path) -> None:
    key_id = cli.ok("key", "create")["KeyMetadata"]["KeyId"]
    alice = "arn:aws:iam::111122223333:user/explained"
    denied = cli.ok(
        "policy", "explain", "--principal", alice, "--action", "kms:Decrypt", "--key", key_id
    )
    assert denied["Decision"] == "Deny"
    assert denied["Reason"] == "no identity-based policy allows the kms:Decrypt action"
    assert denied["Message"].startswith(f"User: {alice} is not authorized to perform: kms:Decrypt")
    document = tmp_path / "p.json"
    document.write_text(json.dumps({"Statement": [{"Sid": "Only billing", "Effect": "Allow", "Action": "kms:Decrypt",
        "Resource": "*", "Condition": {"StringEquals": {"kms:EncryptionContext:app": "billing"}}}]}))  # fmt: skip
    cli.ok("principal", "attach-policy", alice, str(document))

    def explain(context: str) -> Any:
        return cli.ok("policy", "explain", "--principal", alice, "--action", "Decrypt",
                      "--key", key_id, "--context", context)  # fmt: skip

    allowed = explain("app=billing")
    assert allowed["Decision"] == "Allow" and "'Only billing'" in allowed["Reason"]
    assert explain("app=hr")["Decision"] == "Deny"


def test_principal_tags_feed_policies(cli: Cli, tmp_path: Path) -> None:
    """`principal tag` sets the tags policies read as aws:PrincipalTag/<key>:
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-principaltag"""
    key_id = cli.ok("key", "create")["KeyMetadata"]["KeyId"]
    bob = "arn:aws:iam::111122223333:user/tagged-bob"
    document = tmp_path / "team.json"
    document.write_text(json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": "kms:Decrypt", "Resource": "*",
        "Condition": {"StringEquals": {"aws:PrincipalTag/team": "blue"}}}]}))  # fmt: skip
    cli.ok("principal", "attach-policy", bob, str(document))
    explain = ("policy", "explain", "--principal", bob, "--action", "kms:Decrypt", "--key", key_id)
    assert cli.ok(*explain)["Decision"] == "Deny"
    assert cli.ok("principal", "tag", bob, "team=blue") == {
        "PrincipalArn": bob,
        "Tags": {"team": "blue"},
    }
    assert cli.ok(*explain)["Decision"] == "Allow"


def test_keystore_route(cli: Cli) -> None:
    routed = cli.ok("keystore", "route", "--host", "xks.example.com", "--url", "http://127.0.0.1:9")
    assert routed == {"Host": "xks.example.com", "Url": "http://127.0.0.1:9"}
    assert "ValidationException" in cli.fails(
        "keystore", "route", "--host", "xks.example.com", "--url", "ftp://elsewhere"
    )


def test_serve_takes_host_and_port_from_settings_and_checks_flags(cli: Cli) -> None:
    assert cli.fails("serve", "--port", "99999") == (
        "hsmkms: --port: Input should be less than or equal to 65535 (given: 99999)\n"
    )
    assert cli.fails("serve", "--workers", "0").startswith(
        "hsmkms: --workers: Input should be greater than or equal to 1 (given: 0)"
    )
    assert cli.fails("serve", "--workers", "-3").startswith("hsmkms: --workers: ")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hsmkms.cli", "serve"],
        env={**cli.env, "HSMKMS_MAINTENANCE_SECONDS": "0", "HSMKMS_PORT": str(port)},
        cwd=cli.cwd,
        stderr=subprocess.PIPE,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
    finally:
        stop(server)
    assert server.stderr is not None
    cores = available_cores()  # the default: one worker process per core
    shown = f"on http://127.0.0.1:{port}" + ("" if cores == 1 else f" ({cores} worker processes)")
    assert shown + "\n" in server.stderr.read().decode()
