"""A KMS test suite written as suites for moto_server are: boto3 pointed at an endpoint
(KMS_TEST_ENDPOINT), every piece of state reset before each test (`POST
/moto-api/reset`), then fixed alias names reused and keys counted from zero in each test.
Not collected with hsmkms's own tests: tests/api/test_moto_style_suite.py copies it out
and runs it, twice, against `hsmkms serve --dev`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.support import loopback

ENDPOINT = os.environ.get("KMS_TEST_ENDPOINT", "http://127.0.0.1:5000")
ACCOUNT = os.environ.get("KMS_TEST_ACCOUNT", "123456789012")


@pytest.fixture(autouse=True)
def reset_state() -> None:
    response = loopback.post(f"{ENDPOINT}/moto-api/reset", timeout=30)
    assert response.status_code == 200, response.text


@pytest.fixture
def kms() -> Any:
    return boto3.client("kms", region_name="us-east-1", endpoint_url=ENDPOINT)


def test_starts_without_keys(kms: Any) -> None:
    assert kms.list_keys()["Keys"] == []


def test_create_key_is_counted_from_zero(kms: Any) -> None:
    key = kms.create_key(Description="my key")["KeyMetadata"]
    assert key["Arn"] == f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key['KeyId']}"
    assert key["AWSAccountId"] == ACCOUNT
    assert [k["KeyId"] for k in kms.list_keys()["Keys"]] == [key["KeyId"]]


def test_three_keys(kms: Any) -> None:
    for _ in range(3):
        kms.create_key()
    assert len(kms.list_keys()["Keys"]) == 3


def test_alias(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/my-alias", TargetKeyId=key_id)
    aliases = [
        a for a in kms.list_aliases()["Aliases"] if not a["AliasName"].startswith("alias/aws/")
    ]
    assert [(a["AliasName"], a["TargetKeyId"]) for a in aliases] == [("alias/my-alias", key_id)]


def test_alias_name_reused_in_the_next_test(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/my-alias", TargetKeyId=key_id)
    assert kms.describe_key(KeyId="alias/my-alias")["KeyMetadata"]["KeyId"] == key_id


def test_encrypt_decrypt_through_an_alias(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/my-alias", TargetKeyId=key_id)
    blob = kms.encrypt(KeyId="alias/my-alias", Plaintext=b"secret", EncryptionContext={"a": "b"})
    plain = kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"a": "b"})
    assert plain["Plaintext"] == b"secret" and plain["KeyId"].endswith(key_id)
    with pytest.raises(ClientError) as caught:
        kms.decrypt(CiphertextBlob=blob["CiphertextBlob"])
    assert caught.value.response["Error"]["Code"] == "InvalidCiphertextException"


def test_generate_data_key(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert len(data_key["Plaintext"]) == 32
    again = kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"]
    assert again == data_key["Plaintext"]


def test_disable_and_enable(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    kms.enable_key(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Enabled"] is True


def test_schedule_and_cancel_deletion(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    kms.cancel_key_deletion(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


def test_tags(kms: Any) -> None:
    key_id = kms.create_key(Tags=[{"TagKey": "project", "TagValue": "x"}])["KeyMetadata"]["KeyId"]
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "team", "TagValue": "y"}])
    tags = kms.list_resource_tags(KeyId=key_id)["Tags"]
    assert sorted((t["TagKey"], t["TagValue"]) for t in tags) == [("project", "x"), ("team", "y")]


def test_grants(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    grantee = f"arn:aws:iam::{ACCOUNT}:role/worker"
    grant = kms.create_grant(KeyId=key_id, GranteePrincipal=grantee, Operations=["Decrypt"])
    listed = kms.list_grants(KeyId=key_id)["Grants"]
    assert [g["GrantId"] for g in listed] == [grant["GrantId"]]
    kms.revoke_grant(KeyId=key_id, GrantId=grant["GrantId"])
    assert kms.list_grants(KeyId=key_id)["Grants"] == []


def test_key_policy(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert policy["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    assert kms.list_key_policies(KeyId=key_id)["PolicyNames"] == ["default"]


def test_rotation(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=key_id)
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True
    kms.rotate_key_on_demand(KeyId=key_id)
    assert len(kms.list_key_rotations(KeyId=key_id)["Rotations"]) == 1


def test_sign_and_verify(kms: Any) -> None:
    key_id = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    signature = kms.sign(KeyId=key_id, Message=b"msg", SigningAlgorithm="ECDSA_SHA_256")
    verified = kms.verify(
        KeyId=key_id,
        Message=b"msg",
        Signature=signature["Signature"],
        SigningAlgorithm="ECDSA_SHA_256",
    )
    assert verified["SignatureValid"] is True


def test_mac(kms: Any) -> None:
    key_id = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"][
        "KeyId"
    ]
    mac = kms.generate_mac(KeyId=key_id, Message=b"msg", MacAlgorithm="HMAC_SHA_256")["Mac"]
    checked = kms.verify_mac(KeyId=key_id, Message=b"msg", Mac=mac, MacAlgorithm="HMAC_SHA_256")
    assert checked["MacValid"] is True


def test_unknown_key(kms: Any) -> None:
    with pytest.raises(ClientError) as caught:
        kms.describe_key(KeyId="00000000-0000-0000-0000-000000000000")
    assert caught.value.response["Error"]["Code"] == "NotFoundException"


def test_ends_with_two_keys_and_aliases(kms: Any) -> None:
    first = kms.create_key()["KeyMetadata"]["KeyId"]
    second = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/my-alias", TargetKeyId=first)
    kms.create_alias(AliasName="alias/other", TargetKeyId=second)
    assert len(kms.list_keys()["Keys"]) == 2
    names = sorted(a["AliasName"] for a in kms.list_aliases()["Aliases"])
    assert [n for n in names if not n.startswith("alias/aws/")] == ["alias/my-alias", "alias/other"]
