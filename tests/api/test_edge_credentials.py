"""Access keys that test suites written for local AWS emulators sign with."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from hsmkms.policy.principals import ADMIN_POLICY
from tests.cli.test_cli import Cli, serve, stop, wait_healthy

ACCOUNT = "111122223333"


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    runner = Cli(tmp_path_factory.mktemp("edge-credentials") / "data")
    runner.ok("init")
    return runner


def add(cli: Cli, name: str, key_id: str, secret: str) -> tuple[str, str]:
    result = cli.run(
        "principal", "add", "--arn", f"arn:aws:iam::{ACCOUNT}:user/{name}",
        "--access-key-id", key_id, "--secret-access-key", secret,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


@pytest.fixture(scope="module")
def emulator_keys(cli: Cli) -> dict[str, tuple[str, str]]:
    """moto's server mode signs with FOOBARKEY/FOOBARSECRET, LocalStack users with test/test."""
    return {
        key_id: add(cli, name, key_id, secret)
        for name, key_id, secret in (
            ("moto", "FOOBARKEY", "FOOBARSECRET"),
            ("localstack", "test", "test"),
        )
    }


@pytest.mark.parametrize("key_id", ["FOOBARKEY", "test"])
def test_emulator_keys_are_accepted_with_a_warning(
    emulator_keys: dict[str, tuple[str, str]], key_id: str
) -> None:
    stdout, stderr = emulator_keys[key_id]
    assert json.loads(stdout)["AccessKeyId"] == key_id
    assert "SecretAccessKey" not in json.loads(stdout)  # a chosen secret is not echoed
    assert stderr.startswith("hsmkms: warning: the secret access key is shorter than 16")
    assert stderr.count("\n") == 1


def test_a_strong_chosen_secret_gets_no_warning(cli: Cli) -> None:
    _, stderr = add(cli, "strong", "Strong_Key_01", "s" * 40)
    assert stderr == ""


@pytest.mark.parametrize("key_id", ["", "A" * 129, "AKIA-BAD", "key id", "ключ"])
def test_bad_access_key_ids_are_refused(cli: Cli, key_id: str) -> None:
    error = cli.fails(
        "principal", "add", "--arn", f"arn:aws:iam::{ACCOUNT}:user/bad",
        "--access-key-id", key_id, "--secret-access-key", "s" * 40,
    )  # fmt: skip
    assert "ValidationException: An access key id is 1-128 letters" in error


def test_an_empty_secret_is_refused(cli: Cli) -> None:
    error = cli.fails(
        "principal", "add", "--arn", f"arn:aws:iam::{ACCOUNT}:user/empty",
        "--access-key-id", "EMPTYSECRET", "--secret-access-key", "",
    )  # fmt: skip
    assert "ValidationException: A secret access key must not be empty." in error


def test_the_longest_id_is_accepted(cli: Cli) -> None:
    stdout, _ = add(cli, "longest", "A" * 128, "s" * 40)
    assert json.loads(stdout)["AccessKeyId"] == "A" * 128


def test_boto3_signed_with_foobarkey_works_end_to_end(
    cli: Cli, emulator_keys: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    add(cli, "suite", "FOOBARKEY2", "FOOBARSECRET")
    policy = tmp_path / "admin.json"
    policy.write_text(ADMIN_POLICY)
    cli.ok("principal", "attach-policy", f"arn:aws:iam::{ACCOUNT}:user/suite", str(policy))
    cli.ok("principal", "attach-policy", f"arn:aws:iam::{ACCOUNT}:user/moto", str(policy))
    process, port = serve(cli)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        for key_id in ("FOOBARKEY", "FOOBARKEY2"):
            kms = boto3.client(
                "kms", endpoint_url=url, region_name="us-east-1",
                aws_access_key_id=key_id, aws_secret_access_key="FOOBARSECRET",
                config=Config(retries={"max_attempts": 1}),
            )  # fmt: skip
            key = kms.create_key(Description=f"signed by {key_id}")["KeyMetadata"]["KeyId"]
            blob = kms.encrypt(KeyId=key, Plaintext=b"from a moto-style suite")["CiphertextBlob"]
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"from a moto-style suite"
            kms.close()
        wrong = boto3.client(
            "kms", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id="FOOBARKEY", aws_secret_access_key="FOOBARSECRET2",
            config=Config(retries={"max_attempts": 1}),
        )  # fmt: skip
        with pytest.raises(wrong.exceptions.ClientError, match="InvalidSignatureException"):
            wrong.list_keys()
        wrong.close()
    finally:
        stop(process)
