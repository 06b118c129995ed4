"""Who may do what, end to end: boto3 clients of different principals against the
server, each call evaluated against the key policy and identity policies."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ACCOUNT, Server


def arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def denied(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    error = caught.value.response["Error"]
    assert error["Code"] == "AccessDeniedException", error
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    message: str = error["Message"]
    return message


ROOT_STATEMENT = {
    "Sid": "Enable IAM",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
    "Action": "kms:*",
    "Resource": "*",
}
KMS_ALL = policy({"Sid": "All of KMS", "Effect": "Allow", "Action": "kms:*", "Resource": "*"})


def names() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"alice-{tag}", f"bob-{tag}", f"carol-{tag}"


def test_key_policy_users_conditions_and_denies(server: Server) -> None:
    alice, bob, carol = names()
    admin = server.client()
    # The principals exist before a key policy names them: KMS refuses a policy naming
    # one that does not (MalformedPolicyDocumentException), see test_aws_authorization.py.
    as_alice = server.principal(alice)  # no identity policy: the key policy alone lets her in
    as_bob = server.principal(bob, KMS_ALL)  # IAM says yes, the key policy's Deny wins
    as_carol = server.principal(carol, KMS_ALL)  # delegated through the root statement
    key = admin.create_key(Policy=policy(
        ROOT_STATEMENT,
        {"Sid": "Alice decrypts finance data", "Effect": "Allow", "Principal": {"AWS": arn(alice)},
         "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringEquals": {"kms:EncryptionContext:Department": "Finance"}}},
        {"Sid": "Never Bob", "Effect": "Deny", "Principal": {"AWS": arn(bob)}, "Action": "kms:*", "Resource": "*"},
    ))["KeyMetadata"]["KeyId"]  # fmt: skip
    finance = {"Department": "Finance"}
    blob = admin.encrypt(KeyId=key, Plaintext=b"payroll", EncryptionContext=finance)[
        "CiphertextBlob"
    ]
    other = admin.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"Department": "IT"})[
        "CiphertextBlob"
    ]

    assert (
        as_alice.decrypt(CiphertextBlob=blob, EncryptionContext=finance)["Plaintext"] == b"payroll"
    )
    message = denied(as_alice.decrypt, CiphertextBlob=other, EncryptionContext={"Department": "IT"})
    assert message == (
        f"User: {arn(alice)} is not authorized to perform: kms:Decrypt on resource: "
        f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key} because no identity-based policy allows "
        "the kms:Decrypt action"
    )
    denied(as_alice.encrypt, KeyId=key, Plaintext=b"x")
    denied(as_alice.create_key)  # CreateKey needs an identity policy

    refusal = denied(as_bob.decrypt, CiphertextBlob=blob, EncryptionContext=finance)
    assert refusal.endswith("with an explicit deny in a resource-based policy"), refusal
    assert "Never Bob" not in refusal  # AWS names no statement of a policy bob cannot read
    assert as_bob.create_key()["KeyMetadata"]["KeyState"] == "Enabled"  # other keys are fine

    assert (
        as_carol.decrypt(CiphertextBlob=other, EncryptionContext={"Department": "IT"})["Plaintext"]
        == b"x"
    )


def test_default_policy_delegates_to_identity_policies(server: Server) -> None:
    alice, bob, _ = names()
    key = server.client().create_key()["KeyMetadata"]["KeyId"]
    as_alice = server.principal(alice)
    denied(as_alice.describe_key, KeyId=key)
    as_bob = server.principal(bob, policy(
        {"Sid": "Use only", "Effect": "Allow", "Action": ["kms:Encrypt", "kms:DescribeKey"], "Resource": "*"},
        {"Sid": "No deletion", "Effect": "Deny", "Action": "kms:ScheduleKeyDeletion", "Resource": "*"},
    ))  # fmt: skip
    assert as_bob.describe_key(KeyId=key)["KeyMetadata"]["KeyId"] == key
    as_bob.encrypt(KeyId=key, Plaintext=b"ok")
    refusal = denied(as_bob.schedule_key_deletion, KeyId=key)
    assert refusal.endswith("with an explicit deny in an identity-based policy"), refusal
    denied(as_bob.list_keys)


def test_abac_on_resource_tags(server: Server) -> None:
    alice, _, _ = names()
    admin = server.client()
    key = admin.create_key(Tags=[{"TagKey": "Project", "TagValue": "Alpha"}])["KeyMetadata"][
        "KeyId"
    ]
    as_alice = server.principal(alice, policy({
        "Sid": "Project Alpha keys", "Effect": "Allow", "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
        "Resource": "*", "Condition": {"StringEquals": {"aws:ResourceTag/Project": "Alpha"}},
    }))  # fmt: skip
    as_alice.encrypt(KeyId=key, Plaintext=b"alpha")
    admin.tag_resource(KeyId=key, Tags=[{"TagKey": "Project", "TagValue": "Beta"}])
    server.km._changed()  # the server's metadata cache, as a second passes
    denied(as_alice.encrypt, KeyId=key, Plaintext=b"alpha")


def test_key_policy_operations_and_lockout_check(server: Server) -> None:
    admin = server.client()
    key = admin.create_key()["KeyMetadata"]["KeyId"]
    assert admin.list_key_policies(KeyId=key)["PolicyNames"] == ["default"]
    current = json.loads(admin.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    assert current["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}

    server.principal("nobody")  # a key policy may name only principals that exist
    locks_out = policy({"Sid": "Only someone else", "Effect": "Allow", "Principal": {"AWS": arn("nobody")},
                        "Action": "kms:*", "Resource": "*"})  # fmt: skip
    with pytest.raises(ClientError) as caught:
        admin.put_key_policy(KeyId=key, PolicyName="default", Policy=locks_out)
    assert caught.value.response["Error"]["Code"] == "MalformedPolicyDocumentException"
    with pytest.raises(ClientError) as caught:
        admin.put_key_policy(KeyId=key, PolicyName="default", Policy='{"Statement": "nope"}')
    assert caught.value.response["Error"]["Code"] == "MalformedPolicyDocumentException"

    admin.put_key_policy(
        KeyId=key, PolicyName="default", Policy=locks_out, BypassPolicyLockoutSafetyCheck=True
    )
    server.km._changed()
    assert "no resource-based policy allows" in denied(admin.describe_key, KeyId=key)


def test_grants_end_to_end(server: Server) -> None:
    grantee, retirer, _ = names()
    admin = server.client()
    key = admin.create_key()["KeyMetadata"]["KeyId"]
    as_grantee = server.principal(grantee)
    as_retirer = server.principal(retirer)
    denied(as_grantee.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "billing"})

    grant = admin.create_grant(
        KeyId=key, GranteePrincipal=arn(grantee), RetiringPrincipal=arn(retirer),
        Operations=["Encrypt", "Decrypt"],
        Constraints={"EncryptionContextSubset": {"app": "billing"}},
    )  # fmt: skip
    billing = {"app": "billing", "tenant": "42"}
    blob = as_grantee.encrypt(
        KeyId=key,
        Plaintext=b"invoice",
        EncryptionContext=billing,
        GrantTokens=[grant["GrantToken"]],
    )
    assert (
        as_grantee.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext=billing)[
            "Plaintext"
        ]
        == b"invoice"
    )
    denied(as_grantee.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "payroll"})
    denied(as_grantee.encrypt, KeyId=key, Plaintext=b"x")  # no context: outside the constraint
    denied(as_grantee.generate_data_key, KeyId=key, KeySpec="AES_256", EncryptionContext=billing)
    denied(as_grantee.revoke_grant, KeyId=key, GrantId=grant["GrantId"])

    listed = admin.list_grants(KeyId=key)["Grants"]
    assert listed[0]["GrantId"] == grant["GrantId"]
    denied(as_retirer.list_retirable_grants, RetiringPrincipal=arn(retirer))  # needs IAM
    as_retirer.retire_grant(
        GrantToken=grant["GrantToken"]
    )  # no policy needed: the retiring principal
    denied(as_grantee.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext=billing)  # at once

    again = admin.create_grant(KeyId=key, GranteePrincipal=arn(grantee), Operations=["Encrypt"])
    as_grantee.encrypt(KeyId=key, Plaintext=b"x")
    admin.revoke_grant(KeyId=key, GrantId=again["GrantId"])
    denied(as_grantee.encrypt, KeyId=key, Plaintext=b"x")


def test_explicit_deny_beats_a_grant(server: Server) -> None:
    grantee, _, _ = names()
    admin = server.client()
    as_grantee = server.principal(grantee)  # exists before the key policy names it
    key = admin.create_key(Policy=policy(
        ROOT_STATEMENT,
        {"Sid": "No encryption for the grantee", "Effect": "Deny", "Principal": {"AWS": arn(grantee)}, "Action": "kms:Encrypt", "Resource": "*"},
    ))["KeyMetadata"]["KeyId"]  # fmt: skip
    admin.create_grant(
        KeyId=key, GranteePrincipal=arn(grantee), Operations=["Encrypt", "DescribeKey"]
    )
    assert as_grantee.describe_key(KeyId=key)["KeyMetadata"]["KeyId"] == key
    assert "explicit deny" in denied(as_grantee.encrypt, KeyId=key, Plaintext=b"x")
