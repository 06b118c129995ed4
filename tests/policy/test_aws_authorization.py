"""Authorization that AWS documents (issue "Exactly AWS", section 5): decision tests
over the real HTTP API with boto3 clients, each citing the AWS page that decides it."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from hsmkms.policy.identity import principal_key
from hsmkms.policy.principals import CredentialStore
from tests.conftest import ACCOUNT, Server

_names = itertools.count()
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
KEYS = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/*"
ALIASES = f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/*"


def name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def arn(user: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{user}"


def identity(*statements: dict[str, Any], version: str = "2012-10-17") -> str:
    return json.dumps({"Version": version, "Statement": list(statements)})


def allow(action: Any, resource: Any = "*", **condition: Any) -> dict[str, Any]:
    statement = {"Effect": "Allow", "Action": action, "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return statement


def code(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    result: str = caught.value.response["Error"]["Code"]
    return result


@pytest.fixture
def admin(server: Server) -> Any:
    return server.client()


def tagged_key(admin: Any, **tags: str) -> str:
    key: str = admin.create_key(Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()])[
        "KeyMetadata"
    ]["KeyId"]
    return key


# -- policy variables: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html


def test_username_variable_in_a_condition(server: Server, admin: Any) -> None:
    alice, bob = name("alice"), name("bob")
    document = identity(
        allow("kms:Encrypt", StringEquals={"aws:ResourceTag/owner": "${aws:username}"})
    )
    as_alice, as_bob = server.principal(alice, document), server.principal(bob, document)
    key = tagged_key(admin, owner=alice)
    assert as_alice.encrypt(KeyId=key, Plaintext=b"x")["KeyId"].endswith(key)
    assert code(as_bob.encrypt, KeyId=key, Plaintext=b"x") == "AccessDeniedException"


def test_variables_are_literal_text_in_version_2008(server: Server, admin: Any) -> None:
    user = name("literal")
    document = identity(
        allow("kms:Encrypt", StringEquals={"aws:ResourceTag/owner": "${aws:username}"}),
        version="2008-10-17",
    )
    client = server.principal(user, document)
    assert code(client.encrypt, KeyId=tagged_key(admin, owner=user), Plaintext=b"x") == (
        "AccessDeniedException"
    )
    literal = tagged_key(admin, owner="${aws:username}")
    assert client.encrypt(KeyId=literal, Plaintext=b"x")["KeyId"].endswith(literal)


def test_principal_tag_variable_and_default_value(server: Server, admin: Any) -> None:
    """${aws:PrincipalTag/team} from the principal's tags; ${key, 'default'} when the
    key has no value (the page's "Specifying default values")."""
    tagged, untagged = name("tagged"), name("untagged")
    document = identity(
        allow(
            "kms:Encrypt",
            StringEquals={"aws:ResourceTag/team": "${aws:PrincipalTag/team, 'nobody'}"},
        )
    )
    as_tagged = server.principal(tagged, document)
    as_untagged = server.principal(untagged, document)
    CredentialStore(server.km.store, server.km.hsm).tag_principal(arn(tagged), {"team": "blue"})
    blue, nobody = tagged_key(admin, team="blue"), tagged_key(admin, team="nobody")
    assert as_tagged.encrypt(KeyId=blue, Plaintext=b"x")
    assert code(as_tagged.encrypt, KeyId=nobody, Plaintext=b"x") == "AccessDeniedException"
    assert as_untagged.encrypt(KeyId=nobody, Plaintext=b"x")
    assert code(as_untagged.encrypt, KeyId=blue, Plaintext=b"x") == "AccessDeniedException"


def test_variable_with_no_value_matches_nothing(server: Server, admin: Any) -> None:
    """A variable with no value (no PrincipalTag here) matches no resource and no value;
    a negated operator then holds ("Policy variables with no value")."""
    user = name("novalue")
    client = server.principal(
        user,
        identity(
            allow("kms:Encrypt", StringEquals={"aws:ResourceTag/team": "${aws:PrincipalTag/team}"}),
            allow("kms:DescribeKey", KEYS,
                  StringNotEquals={"aws:ResourceTag/team": "${aws:PrincipalTag/team}"}),
        ),
    )  # fmt: skip
    key = tagged_key(admin, team="")
    assert code(client.encrypt, KeyId=key, Plaintext=b"x") == "AccessDeniedException"
    assert client.describe_key(KeyId=key)["KeyMetadata"]["KeyId"] == key


def test_username_variable_in_a_resource(server: Server, admin: Any) -> None:
    """Aliases named after the user: ${aws:username} in an alias ARN Resource."""
    user = name("aliaser")
    client = server.principal(
        user,
        identity(
            allow("kms:CreateAlias", f"arn:aws:kms:*:{ACCOUNT}:alias/${{aws:username}}-*"),
            allow("kms:CreateAlias", KEYS),
        ),
    )
    key = tagged_key(admin)
    client.create_alias(AliasName=f"alias/{user}-mine", TargetKeyId=key)
    assert code(client.create_alias, AliasName="alias/someone-else", TargetKeyId=key) == (
        "AccessDeniedException"
    )


# -- global condition keys:
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html


@pytest.mark.parametrize(
    ("condition", "allowed"),
    [
        ({"StringEquals": {"aws:PrincipalType": "User"}}, True),
        ({"StringEquals": {"aws:PrincipalType": "AssumedRole"}}, False),
        ({"StringEquals": {"aws:PrincipalAccount": ACCOUNT}}, True),
        ({"StringEquals": {"aws:RequestedRegion": "us-east-1"}}, True),
        ({"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}, False),
        ({"NumericGreaterThan": {"aws:EpochTime": "1700000000"}}, True),
        ({"NumericLessThan": {"aws:EpochTime": "1700000000"}}, False),
        ({"StringLike": {"aws:username": "globals-*"}}, True),
        ({"StringLike": {"aws:userid": "AIDA*"}}, True),
        ({"StringEquals": {"aws:PrincipalTag/level": "high"}}, True),
        ({"StringEquals": {"aws:PrincipalTag/level": "low"}}, False),
    ],
)
def test_global_condition_keys(
    server: Server, admin: Any, condition: dict[str, Any], allowed: bool
) -> None:
    user = name("globals")
    client = server.principal(user, identity({**allow("kms:Encrypt"), "Condition": condition}))
    CredentialStore(server.km.store, server.km.hsm).tag_principal(arn(user), {"level": "high"})
    key = tagged_key(admin)
    if allowed:
        assert client.encrypt(KeyId=key, Plaintext=b"x")["KeyId"].endswith(key)
    else:
        assert code(client.encrypt, KeyId=key, Plaintext=b"x") == "AccessDeniedException"


def test_principal_keys_of_root_and_roles() -> None:
    """aws:userid is the account ID for the root user; aws:username exists for IAM
    users only; aws:PrincipalType is Account / User / AssumedRole."""
    assert principal_key(ROOT, "aws:userid") == [ACCOUNT]
    assert principal_key(ROOT, "aws:principaltype") == ["Account"]
    assert principal_key(ROOT, "aws:username") is None
    role = f"arn:aws:iam::{ACCOUNT}:role/App"
    assert principal_key(role, "aws:principaltype") == ["AssumedRole"]
    assert principal_key(role, "aws:userid")[0].startswith("AROA")  # type: ignore[index]
    assert principal_key(arn("path/ann"), "aws:username") == ["ann"]


# -- KMS condition keys: https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html


def test_reencrypt_on_same_key(server: Server, admin: Any) -> None:
    """kms:ReEncryptOnSameKey: true when the source and destination key are the same."""
    user = name("reencrypt")
    client = server.principal(
        user,
        identity(
            allow("kms:Encrypt"),
            allow(["kms:ReEncryptFrom", "kms:ReEncryptTo"],
                  Bool={"kms:ReEncryptOnSameKey": "true"}),
        ),
    )  # fmt: skip
    key, other = tagged_key(admin), tagged_key(admin)
    blob = client.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    assert client.re_encrypt(CiphertextBlob=blob, DestinationKeyId=key)["KeyId"].endswith(key)
    assert code(client.re_encrypt, CiphertextBlob=blob, DestinationKeyId=other) == (
        "AccessDeniedException"
    )


def test_encryption_algorithm_applies_when_the_request_names_none(
    server: Server, admin: Any
) -> None:
    """ "This type of condition works even when the parameter doesn't appear in the
    request, such as when you use the parameter's default value" (SYMMETRIC_DEFAULT)."""
    user = name("algorithm")
    client = server.principal(
        user,
        identity(
            allow(["kms:GenerateDataKey", "kms:Encrypt"],
                  StringEquals={"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
            allow("kms:CreateKey", StringEquals={"kms:KeySpec": "SYMMETRIC_DEFAULT"}),
            allow("kms:PutKeyPolicy"),  # CreateKey's lockout safety check asks for it
        ),
    )  # fmt: skip
    key = tagged_key(admin)
    assert client.generate_data_key(KeyId=key, NumberOfBytes=16)["KeyId"].endswith(key)
    assert client.encrypt(KeyId=key, Plaintext=b"x")["EncryptionAlgorithm"] == ("SYMMETRIC_DEFAULT")
    assert client.create_key()["KeyMetadata"]["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert code(client.create_key, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC") == (
        "AccessDeniedException"
    )


# -- grants


def test_grant_constraints_do_not_apply_without_an_encryption_context(
    server: Server, admin: Any
) -> None:
    """Grant constraints "are not applied to operations that do not support an
    encryption context, such as ... DescribeKey or RetireGrant":
    https://docs.aws.amazon.com/kms/latest/APIReference/API_GrantConstraints.html"""
    user = name("constrained")
    client = server.principal(user)
    key = tagged_key(admin)
    admin.create_grant(
        KeyId=key,
        GranteePrincipal=arn(user),
        Operations=["Decrypt", "DescribeKey"],
        Constraints={"EncryptionContextEquals": {"app": "orders"}},
    )
    assert client.describe_key(KeyId=key)["KeyMetadata"]["KeyId"] == key
    blob = admin.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    assert code(client.decrypt, CiphertextBlob=blob) == "AccessDeniedException"


def test_a_child_grant_stays_within_its_parent(server: Server, admin: Any) -> None:
    """CreateGrant permission from a grant: the new grant may allow only some or all of
    the parent's operations, and its constraints must be at least as strict:
    https://docs.aws.amazon.com/kms/latest/developerguide/create-grant-overview.html#grant-creategrant"""
    parent_user, child_user = name("parent"), name("child")
    parent = server.principal(parent_user)
    server.principal(child_user)
    key = tagged_key(admin)
    admin.create_grant(
        KeyId=key,
        GranteePrincipal=arn(parent_user),
        Operations=["Decrypt", "CreateGrant"],
        Constraints={"EncryptionContextSubset": {"app": "orders"}},
    )
    ok = {"KeyId": key, "GranteePrincipal": arn(child_user)}
    parent.create_grant(
        **ok, Operations=["Decrypt"], Constraints={"EncryptionContextSubset": {"app": "orders"}}
    )
    parent.create_grant(  # stricter: more pairs
        **ok,
        Operations=["Decrypt"],
        Constraints={"EncryptionContextEquals": {"app": "orders", "env": "prod"}},
    )
    for operations, constraints in (
        (["Encrypt"], {"EncryptionContextSubset": {"app": "orders"}}),  # adds an operation
        (["Decrypt"], {}),  # drops the constraint
        (["Decrypt"], {"EncryptionContextSubset": {"app": "billing"}}),  # another context
    ):
        assert code(parent.create_grant, **ok, Operations=operations, Constraints=constraints) == (
            "AccessDeniedException"
        )
    # A policy-granted CreateGrant has no such limits.
    admin.create_grant(**ok, Operations=["Encrypt"])


def test_where_retire_grant_permission_is_effective(server: Server, admin: Any) -> None:
    """kms:RetireGrant "is not effective in a key policy"; the account in which the grant
    was created can delegate it in IAM policies; the retiring principal needs nothing:
    https://docs.aws.amazon.com/kms/latest/developerguide/grant-delete.html"""
    by_key_policy, by_iam, retiring = name("kp"), name("iam"), name("retiring")
    as_key_policy = server.principal(by_key_policy)
    as_iam = server.principal(by_iam, identity(allow("kms:RetireGrant", KEYS)))
    as_retiring = server.principal(retiring)
    key = admin.create_key(
        Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": arn(by_key_policy)},
             "Action": "kms:RetireGrant", "Resource": "*"}]})
    )["KeyMetadata"]["KeyId"]  # fmt: skip

    def grant(retiring_principal: str | None = None) -> str:
        extra = {"RetiringPrincipal": retiring_principal} if retiring_principal else {}
        made = admin.create_grant(KeyId=key, GranteePrincipal=ROOT, Operations=["Decrypt"], **extra)
        token: str = made["GrantToken"]
        return token

    assert code(as_key_policy.retire_grant, GrantToken=grant()) == "AccessDeniedException"
    as_iam.retire_grant(GrantToken=grant())
    as_retiring.retire_grant(GrantToken=grant(arn(retiring)))


# -- key policies


def test_key_policy_naming_a_principal_that_does_not_exist(admin: Any, server: Server) -> None:
    """ "Policy contains a statement with one or more invalid principals":
    https://docs.aws.amazon.com/kms/latest/APIReference/API_PutKeyPolicy.html#KMS-PutKeyPolicy-request-Policy"""
    ghost, real = name("ghost"), name("real")
    server.principal(real)

    def document(user: str) -> str:
        return json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": arn(user)}, "Action": "kms:Decrypt",
             "Resource": "*"}]})  # fmt: skip

    with pytest.raises(ClientError) as caught:
        admin.create_key(Policy=document(ghost))
    assert caught.value.response["Error"] == {
        "Code": "MalformedPolicyDocumentException",
        "Message": "Policy contains a statement with one or more invalid principals.",
    }
    key = admin.create_key(Policy=document(real))["KeyMetadata"]["KeyId"]
    assert code(admin.put_key_policy, KeyId=key, PolicyName="default", Policy=document(ghost)) == (
        "MalformedPolicyDocumentException"
    )


def test_key_policy_statement_needs_a_resource(admin: Any) -> None:
    """ "Resource (Required)": https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-overview.html"""
    document = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*"}]})  # fmt: skip
    assert code(admin.create_key, Policy=document) == "MalformedPolicyDocumentException"


# -- aliases: https://docs.aws.amazon.com/kms/latest/developerguide/alias-access.html


def test_alias_operations_need_permission_on_the_alias_and_the_keys(
    server: Server, admin: Any
) -> None:
    keys_only, both = name("keysonly"), name("both")
    as_keys_only = server.principal(
        keys_only, identity(allow(["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"], KEYS))
    )
    alias_actions = ["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"]
    as_both = server.principal(both, identity(allow(alias_actions, [KEYS, ALIASES])))
    first, second = tagged_key(admin), tagged_key(admin)
    alias = f"alias/{both}"
    assert code(as_keys_only.create_alias, AliasName=alias, TargetKeyId=first) == (
        "AccessDeniedException"
    )
    as_both.create_alias(AliasName=alias, TargetKeyId=first)
    assert code(as_keys_only.update_alias, AliasName=alias, TargetKeyId=second) == (
        "AccessDeniedException"
    )
    as_both.update_alias(AliasName=alias, TargetKeyId=second)
    assert code(as_keys_only.delete_alias, AliasName=alias) == "AccessDeniedException"
    as_both.delete_alias(AliasName=alias)


def test_update_alias_needs_permission_on_the_current_key(server: Server, admin: Any) -> None:
    """UpdateAlias: the alias, the key it points at now and the new key."""
    user = name("updater")
    first, second = tagged_key(admin, role="old"), tagged_key(admin, role="new")
    client = server.principal(
        user,
        identity(
            allow("kms:UpdateAlias", ALIASES),
            allow("kms:UpdateAlias", KEYS, StringEquals={"aws:ResourceTag/role": "new"}),
        ),
    )
    admin.create_alias(AliasName=f"alias/{user}", TargetKeyId=first)
    assert code(client.update_alias, AliasName=f"alias/{user}", TargetKeyId=second) == (
        "AccessDeniedException"
    )


def test_stored_key_policy_without_resource_still_evaluates() -> None:
    """A key policy accepted before Resource was required keeps working (read as "*")."""
    from hsmkms.policy.model import MalformedPolicyDocumentException, parse_policy

    document = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*"}]})  # fmt: skip
    with pytest.raises(MalformedPolicyDocumentException):
        parse_policy(document)
    assert parse_policy(document, stored=True).statements[0].resources == ("*",)


def test_special_character_variables_are_literal() -> None:
    """${*}, ${?} and ${$} stand for the characters themselves, not wildcards (the
    policy-variables page, "Special characters")."""
    from hsmkms.policy.engine import Request, evaluate
    from hsmkms.policy.model import parse_policy

    document = identity(allow("kms:Encrypt", StringLike={"aws:ResourceTag/p": "a${*}b${$}"}))
    policy = parse_policy(document, identity=True)

    def decide(tag: str) -> bool:
        context = {"aws:resourcetag/p": [tag]}
        return evaluate(Request(arn("x"), "kms:Encrypt", "k", context), None, [policy]).allowed

    assert decide("a*b$")
    assert not decide("axyzb$")


def test_variables_in_a_key_policy(server: Server, admin: Any) -> None:
    """Variables work in resource-based policies (key policies) too ("Where you can use
    policy variables")."""
    owner, other = name("kpowner"), name("kpother")
    as_owner, as_other = server.principal(owner), server.principal(other)
    key = admin.create_key(
        Tags=[{"TagKey": "owner", "TagValue": owner}],
        Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": [arn(owner), arn(other)]},
             "Action": "kms:Encrypt", "Resource": "*",
             "Condition": {"StringEquals": {"aws:ResourceTag/owner": "${aws:username}"}}}]}),
    )["KeyMetadata"]["KeyId"]  # fmt: skip
    assert as_owner.encrypt(KeyId=key, Plaintext=b"x")["KeyId"].endswith(key)
    assert code(as_other.encrypt, KeyId=key, Plaintext=b"x") == "AccessDeniedException"
