"""Unchanged real clients: aws-cli as a subprocess and the AWS Encryption SDK."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.exceptions import DecryptKeyError

from tests.conftest import Server


def aws(server: Server, *args: str) -> Any:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ACCESS_KEY_ID": server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    # pip puts console scripts beside the interpreter; PATH may not have them (pyenv).
    beside = Path(sys.executable).with_name("aws")
    executable = str(beside) if beside.exists() else shutil.which("aws")
    assert executable, "aws-cli is a test dependency"
    result = subprocess.run(
        [executable, "kms", *args, "--endpoint-url", server.url, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


def test_aws_cli(server: Server, tmp_path: Path) -> None:
    key = aws(server, "create-key", "--description", "from aws-cli")["KeyMetadata"]
    assert key["Description"] == "from aws-cli"
    plaintext = tmp_path / "plain.bin"
    plaintext.write_bytes(os.urandom(300))
    sealed = aws(
        server, "encrypt", "--key-id", key["KeyId"], "--plaintext", f"fileb://{plaintext}",
        "--encryption-context", "app=cli",
    )  # fmt: skip
    blob = tmp_path / "blob.bin"
    blob.write_bytes(base64.b64decode(sealed["CiphertextBlob"]))
    opened = aws(
        server, "decrypt", "--ciphertext-blob", f"fileb://{blob}", "--encryption-context", "app=cli"
    )
    assert base64.b64decode(opened["Plaintext"]) == plaintext.read_bytes()
    assert opened["KeyId"] == key["Arn"]
    listed = aws(server, "list-keys", "--page-size", "1")
    assert key["KeyId"] in {k["KeyId"] for k in listed["Keys"]}


@pytest.fixture
def esdk_session(server: Server, monkeypatch: pytest.MonkeyPatch) -> botocore.session.Session:
    # The SDK builds its own KMS clients from this session; the endpoint comes from
    # botocore's standard service-specific endpoint variable.
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_access_key)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return botocore.session.Session()


def test_aws_encryption_sdk(server: Server, esdk_session: botocore.session.Session) -> None:
    kms = server.client()
    key_arn = kms.create_key(Description="esdk")["KeyMetadata"]["Arn"]
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
        key_ids=[key_arn], botocore_session=esdk_session
    )
    message = os.urandom(200_000)
    context = {"tenant": "esdk-test"}
    ciphertext, header = client.encrypt(
        source=message, key_provider=provider, encryption_context=context
    )
    assert header.encryption_context["tenant"] == "esdk-test"
    assert message not in ciphertext
    decrypted, decrypt_header = client.decrypt(source=ciphertext, key_provider=provider)
    assert decrypted == message
    assert decrypt_header.encryption_context["tenant"] == "esdk-test"

    # A provider for another key cannot open the message.
    other_arn = kms.create_key()["KeyMetadata"]["Arn"]
    stranger = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
        key_ids=[other_arn], botocore_session=esdk_session
    )
    with pytest.raises(DecryptKeyError):
        client.decrypt(source=ciphertext, key_provider=stranger)
