"""Deny statements conditioned on every KMS condition key AWS sets for an operation:
a key hsmkms did not compute counted as missing, so the condition was false and the
Deny never applied (kms:GrantIsForAWSResource, kms:ReplicaRegion, kms:PrimaryRegion,
kms:GrantConstraintType, kms:WrappingAlgorithm, kms:MultiRegion on CreateKey). A key
AWS KMS does not define is refused when a policy is written."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.test_api_authorization import KMS_ALL, policy
from tests.conftest import ACCOUNT, Server

OTHER_REGION = "us-west-2"


def deny(action: str, operator: str, key: str, value: Any) -> str:
    return policy(
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
        {"Sid": "no", "Effect": "Deny", "Action": action, "Resource": "*",
         "Condition": {operator: {key: value}}},
    )  # fmt: skip


def grantee() -> str:
    return f"arn:aws:iam::{ACCOUNT}:root"


CASES: dict[str, tuple[str, Callable[[Any, dict[str, str]], object]]] = {
    "GrantIsForAWSResource": (
        deny("kms:CreateGrant", "Bool", "kms:GrantIsForAWSResource", "false"),
        lambda kms, keys: kms.create_grant(
            KeyId=keys["symmetric"], GranteePrincipal=grantee(), Operations=["Decrypt"]
        ),
    ),
    "GrantConstraintType": (
        deny("kms:CreateGrant", "ForAnyValue:StringEquals", "kms:GrantConstraintType",
             "EncryptionContextSubset"),
        lambda kms, keys: kms.create_grant(
            KeyId=keys["symmetric"], GranteePrincipal=grantee(), Operations=["Decrypt"],
            Constraints={"EncryptionContextSubset": {"team": "red"}},
        ),
    ),
    "MultiRegion on CreateKey": (
        deny("kms:CreateKey", "Bool", "kms:MultiRegion", "true"),
        lambda kms, keys: kms.create_key(MultiRegion=True),
    ),
    "MultiRegionKeyType on CreateKey": (
        deny("kms:CreateKey", "StringEquals", "kms:MultiRegionKeyType", "PRIMARY"),
        lambda kms, keys: kms.create_key(MultiRegion=True),
    ),
    "ReplicaRegion": (
        deny("kms:ReplicateKey", "StringEquals", "kms:ReplicaRegion", OTHER_REGION),
        lambda kms, keys: kms.replicate_key(KeyId=keys["primary"], ReplicaRegion=OTHER_REGION),
    ),
    "WrappingAlgorithm": (
        deny("kms:GetParametersForImport", "StringEquals", "kms:WrappingAlgorithm",
             "RSAES_OAEP_SHA_1"),
        lambda kms, keys: kms.get_parameters_for_import(
            KeyId=keys["external"], WrappingAlgorithm="RSAES_OAEP_SHA_1",
            WrappingKeySpec="RSA_2048",
        ),
    ),
    "WrappingKeySpec": (
        deny("kms:GetParametersForImport", "StringEquals", "kms:WrappingKeySpec", "RSA_2048"),
        lambda kms, keys: kms.get_parameters_for_import(
            KeyId=keys["external"], WrappingAlgorithm="RSAES_OAEP_SHA_1",
            WrappingKeySpec="RSA_2048",
        ),
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    admin = server.client()
    return {
        "symmetric": admin.create_key()["KeyMetadata"]["KeyId"],
        "primary": admin.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"],
        "external": admin.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"],
    }


@pytest.mark.parametrize("case", CASES)
def test_a_deny_on_the_condition_key_applies(
    server: Server, keys: dict[str, str], case: str
) -> None:
    document, call = CASES[case]
    allowed = server.principal(f"allowed-{uuid.uuid4().hex[:8]}", KMS_ALL)
    refused = server.principal(f"refused-{uuid.uuid4().hex[:8]}", document)
    with pytest.raises(ClientError) as caught:
        call(refused, keys)
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    call(allowed, keys)  # the same call without the Deny: the condition is what refused it


def test_a_condition_key_aws_kms_does_not_define_is_refused(server: Server) -> None:
    admin = server.client()
    key = admin.create_key()["KeyMetadata"]["KeyId"]
    root = {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    document = policy(
        {"Effect": "Allow", "Principal": root, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": root, "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringEquals": {"kms:EncryptionContextKey": "x"}}},  # a typo
    )  # fmt: skip
    with pytest.raises(ClientError) as caught:
        admin.put_key_policy(KeyId=key, PolicyName="default", Policy=document)
    assert caught.value.response["Error"]["Code"] == "MalformedPolicyDocumentException"
    assert "kms:EncryptionContextKey" in caught.value.response["Error"]["Message"]
    policies = json.loads(admin.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    assert "Deny" not in json.dumps(policies)  # the default policy stayed


def test_tags_given_to_create_key_need_tag_resource(server: Server) -> None:
    """AWS: "To tag a KMS key when you create it, you need kms:TagResource permission
    in an IAM policy". CreateKey stored the tags of a caller refused TagResource."""
    tags = [{"TagKey": "team", "TagValue": "red"}]
    no_tagging = server.principal(f"untagging-{uuid.uuid4().hex[:8]}", policy(
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "kms:TagResource", "Resource": "*"},
    ))  # fmt: skip
    with pytest.raises(ClientError) as caught:
        no_tagging.create_key(Tags=tags)
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "kms:TagResource" in caught.value.response["Error"]["Message"]
    no_tagging.create_key()  # without tags: CreateKey alone
    only_red = server.principal(f"red-{uuid.uuid4().hex[:8]}", policy(
        {"Effect": "Allow", "Action": ["kms:CreateKey", "kms:PutKeyPolicy"], "Resource": "*"},
        {"Effect": "Allow", "Action": "kms:TagResource", "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestTag/team": "red"}}},
    ))  # fmt: skip
    only_red.create_key(Tags=tags)
    with pytest.raises(ClientError) as caught:
        only_red.create_key(Tags=[{"TagKey": "team", "TagValue": "blue"}])
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"


def test_the_other_regions_checks_see_what_the_request_makes(server: Server) -> None:
    """ReplicateKey's kms:CreateKey check in the replica Region saw no request members,
    so CreateKey's defaults (MultiRegion false) stood for a multi-Region replica; and
    UpdatePrimaryRegion's check on the replica had no kms:PrimaryRegion."""
    admin = server.client()
    primary = admin.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    single_only = server.principal(f"single-{uuid.uuid4().hex[:8]}", policy(
        {"Effect": "Allow", "Action": ["kms:ReplicateKey", "kms:DescribeKey"], "Resource": "*"},
        {"Effect": "Allow", "Action": "kms:CreateKey", "Resource": "*",
         "Condition": {"Bool": {"kms:MultiRegion": "false"}}},
    ))  # fmt: skip
    with pytest.raises(ClientError) as caught:
        single_only.replicate_key(KeyId=primary, ReplicaRegion=OTHER_REGION,
                                  BypassPolicyLockoutSafetyCheck=True)  # fmt: skip
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    replicas_only = server.principal(f"replicas-{uuid.uuid4().hex[:8]}", policy(
        {"Effect": "Allow", "Action": ["kms:ReplicateKey", "kms:DescribeKey"], "Resource": "*"},
        {"Effect": "Allow", "Action": "kms:CreateKey", "Resource": "*",
         "Condition": {"StringEquals": {"kms:MultiRegionKeyType": "REPLICA"}}},
    ))  # fmt: skip
    replicas_only.replicate_key(KeyId=primary, ReplicaRegion=OTHER_REGION,
                                BypassPolicyLockoutSafetyCheck=True)  # fmt: skip
    mover = server.principal(f"mover-{uuid.uuid4().hex[:8]}", policy(
        {"Effect": "Allow", "Action": "kms:UpdatePrimaryRegion", "Resource": "*",
         "Condition": {"StringEquals": {"kms:PrimaryRegion": OTHER_REGION}}},
    ))  # fmt: skip
    mover.update_primary_region(KeyId=primary, PrimaryRegion=OTHER_REGION)
