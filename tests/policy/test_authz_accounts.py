"""Another account is not ours (finding 5 of the trust issue): a principal of account
999988887777 with a kms:* identity policy listed account 111122223333's keys and
aliases, renamed and disconnected its custom key store, and created keys and aliases
in it.

As in AWS: keyless operations act only in the caller's own account (its listings, here
empty; changes in ours refused), and another account reaches a key of ours only where
the key policy names it, only for the operations AWS allows across accounts, and only
when its own identity policy allows too:
https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-modifying-external-accounts.html"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from hsmkms.token import Hsm
from tests.conftest import ACCOUNT, REGION, TokenEnv
from tests.support.authz_support import (
    ADMIN,
    EVE,
    OTHER_ACCOUNT,
    ROOT_STATEMENT,
    AuthzServer,
    allow,
    authz_server,
    cloudhsm_store,
    policy,
    refusal,
)
from tests.support.xks_support import XksServer

MALLORY = f"arn:aws:iam::{OTHER_ACCOUNT}:user/mallory"  # another account, no identity policy
OTHER_ROOT = f"arn:aws:iam::{OTHER_ACCOUNT}:root"


@pytest.fixture(scope="module")
def authz(
    hsm: Hsm,
    tmp_path_factory: pytest.TempPathFactory,
    token_env: TokenEnv,
    xks_server: XksServer,
) -> Iterator[AuthzServer]:
    with authz_server(hsm, tmp_path_factory.mktemp("authz-accounts"), token_env, xks_server) as s:
        s.client(MALLORY)
        yield s


@pytest.fixture(scope="module")
def ours(authz: AuthzServer, token_env: TokenEnv) -> dict[str, str]:
    """Account 111122223333's things: a key with an alias, a custom key store."""
    admin = authz.client()
    key = admin.create_key(Description="ours")["KeyMetadata"]["KeyId"]
    admin.create_alias(AliasName="alias/ours", TargetKeyId=key)
    store = cloudhsm_store(admin, token_env, "accounts-store")
    return {"key": key, "store": store}


@pytest.fixture(scope="module")
def shared(authz: AuthzServer) -> dict[str, str]:
    """A key whose policy gives account 999988887777 every permission, and one that
    names mallory herself (who has no identity policy in her account)."""
    admin = authz.client()
    to_account = admin.create_key(Policy=policy(ROOT_STATEMENT, allow(OTHER_ROOT)))["KeyMetadata"]
    to_mallory = admin.create_key(Policy=policy(ROOT_STATEMENT, allow(MALLORY)))["KeyMetadata"]
    admin.create_alias(AliasName="alias/shared", TargetKeyId=to_account["KeyId"])
    return {"key": to_account["KeyId"], "arn": to_account["Arn"], "mallory": to_mallory["Arn"]}


def state(authz: AuthzServer) -> dict[str, Any]:
    """What the admin sees of the account."""
    admin = authz.client()
    keys = sorted(k["KeyId"] for k in admin.list_keys()["Keys"])
    return {
        "keys": keys,
        "described": [admin.describe_key(KeyId=k)["KeyMetadata"] for k in keys],
        "aliases": admin.list_aliases()["Aliases"],
        "stores": admin.describe_custom_key_stores()["CustomKeyStores"],
    }


def test_another_account_lists_its_own_empty_account(
    authz: AuthzServer, ours: dict[str, str]
) -> None:
    eve = authz.client(EVE)
    assert authz.client().list_keys()["Keys"]  # ours are there
    assert eve.list_keys()["Keys"] == []
    assert eve.list_aliases()["Aliases"] == []
    assert eve.list_aliases(KeyId=ours["key"])["Aliases"] == []
    assert eve.describe_custom_key_stores()["CustomKeyStores"] == []
    assert eve.describe_custom_key_stores(CustomKeyStoreId=ours["store"])["CustomKeyStores"] == []
    # Its own identity policies still decide whether it may list at all.
    code, message, _ = refusal(authz.client(MALLORY).list_keys)
    assert code == "AccessDeniedException"
    assert message == (
        f"User: {MALLORY} is not authorized to perform: kms:ListKeys on resource: * "
        "because no identity-based policy allows the kms:ListKeys action"
    )


def test_another_account_changes_nothing_in_ours(
    authz: AuthzServer, ours: dict[str, str], shared: dict[str, str], token_env: TokenEnv
) -> None:
    eve = authz.client(EVE)
    before = state(authz)
    store = ours["store"]
    calls = {
        "CreateKey": lambda: eve.create_key(Description="eve's"),
        "CreateKey-in-our-store": lambda: eve.create_key(
            Origin="AWS_CLOUDHSM", CustomKeyStoreId=store
        ),
        # Even onto a key whose policy gives her account every permission.
        "CreateAlias": lambda: eve.create_alias(
            AliasName="alias/payments-prod", TargetKeyId=shared["arn"]
        ),
        "UpdateAlias": lambda: eve.update_alias(AliasName="alias/ours", TargetKeyId=shared["arn"]),
        "DeleteAlias": lambda: eve.delete_alias(AliasName="alias/shared"),
        "GenerateRandom": lambda: eve.generate_random(NumberOfBytes=8),
        "CreateCustomKeyStore": lambda: eve.create_custom_key_store(
            CustomKeyStoreName="eve",
            CloudHsmClusterId="cluster-abcdefghijk2",
            TrustAnchorCertificate="x",
            KeyStorePassword=token_env.cluster_pin,
        ),
        "UpdateCustomKeyStore": lambda: eve.update_custom_key_store(
            CustomKeyStoreId=store, NewCustomKeyStoreName="renamed-by-eve"
        ),
        "DisconnectCustomKeyStore": lambda: eve.disconnect_custom_key_store(CustomKeyStoreId=store),
        "ConnectCustomKeyStore": lambda: eve.connect_custom_key_store(CustomKeyStoreId=store),
        "DeleteCustomKeyStore": lambda: eve.delete_custom_key_store(CustomKeyStoreId=store),
    }
    records = []
    for name, call in calls.items():
        code, message, request_id = refusal(call)
        assert code == "AccessDeniedException", (name, message)
        action = "kms:" + name.split("-")[0]
        assert message.startswith(f"User: {EVE} is not authorized to perform: {action} on "), (
            name,
            message,
        )
        records.append(request_id)
    assert state(authz) == before
    trail = authz.records()
    assert all(trail[r]["errorCode"] == "AccessDeniedException" for r in records)


CROSS_ACCOUNT_OK = [
    "DescribeKey",
    "Encrypt",
    "GenerateDataKey",
    "ListGrants",
    "GetKeyRotationStatus",
]


def test_a_key_policy_opens_only_the_cross_account_operations(
    authz: AuthzServer, shared: dict[str, str]
) -> None:
    """The key policy gives account 999988887777 kms:*, eve's identity policy allows
    kms:*: she may use the key, not manage it."""
    eve, arn = authz.client(EVE), shared["arn"]
    assert eve.describe_key(KeyId=arn)["KeyMetadata"]["Arn"] == arn
    blob = eve.encrypt(KeyId=arn, Plaintext=b"x")["CiphertextBlob"]
    assert eve.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    assert eve.generate_data_key(KeyId=arn, KeySpec="AES_256")["KeyId"] == arn
    assert eve.re_encrypt(CiphertextBlob=blob, DestinationKeyId=arn)["KeyId"] == arn
    grant = eve.create_grant(KeyId=arn, GranteePrincipal=EVE, Operations=["Decrypt"])
    assert [g["GrantId"] for g in eve.list_grants(KeyId=arn)["Grants"]] == [grant["GrantId"]]
    eve.revoke_grant(KeyId=arn, GrantId=grant["GrantId"])
    assert "KeyRotationEnabled" in eve.get_key_rotation_status(KeyId=arn)
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/shared"
    assert eve.encrypt(KeyId=alias_arn, Plaintext=b"x")["KeyId"] == arn

    admin = authz.client()
    before = admin.describe_key(KeyId=arn)["KeyMetadata"], admin.get_key_policy(KeyId=arn)["Policy"]
    not_across = {
        "ScheduleKeyDeletion": lambda: eve.schedule_key_deletion(KeyId=arn),
        "DisableKey": lambda: eve.disable_key(KeyId=arn),
        "UpdateKeyDescription": lambda: eve.update_key_description(KeyId=arn, Description="e"),
        "PutKeyPolicy": lambda: eve.put_key_policy(
            KeyId=arn, PolicyName="default", Policy=policy(allow(EVE))
        ),
        "GetKeyPolicy": lambda: eve.get_key_policy(KeyId=arn),
        "TagResource": lambda: eve.tag_resource(KeyId=arn, Tags=[{"TagKey": "k", "TagValue": "v"}]),
        "ListResourceTags": lambda: eve.list_resource_tags(KeyId=arn),
        "EnableKeyRotation": lambda: eve.enable_key_rotation(KeyId=arn),
        "RotateKeyOnDemand": lambda: eve.rotate_key_on_demand(KeyId=arn),
    }
    for name, call in not_across.items():
        code, message, _ = refusal(call)
        assert code == "AccessDeniedException", (name, message)
        assert f"perform: kms:{name} on resource: {arn}" in message
    after = admin.describe_key(KeyId=arn)["KeyMetadata"], admin.get_key_policy(KeyId=arn)["Policy"]
    assert after == before


def test_the_other_accounts_identity_policy_must_allow_too(
    authz: AuthzServer, shared: dict[str, str]
) -> None:
    """A key policy naming mallory herself is not enough: her account's IAM policies
    must delegate it to her (she has none)."""
    arn = shared["mallory"]
    blob = authz.client().encrypt(KeyId=arn, Plaintext=b"for mallory")["CiphertextBlob"]
    mallory = authz.client(MALLORY)
    for call in (
        lambda: mallory.decrypt(CiphertextBlob=blob),
        lambda: mallory.describe_key(KeyId=arn),
        lambda: mallory.encrypt(KeyId=arn, Plaintext=b"x"),
    ):
        code, message, _ = refusal(call)
        assert code == "AccessDeniedException"
        assert "because no identity-based policy allows" in message, message
    # A grant is enough on its own, for another account as for ours.
    authz.client().create_grant(KeyId=arn, GranteePrincipal=MALLORY, Operations=["Decrypt"])
    assert mallory.decrypt(CiphertextBlob=blob)["Plaintext"] == b"for mallory"


def test_a_key_id_or_alias_name_means_the_callers_own_account(
    authz: AuthzServer, shared: dict[str, str]
) -> None:
    """To reach a key of another account, name it by key ARN or alias ARN: a bare key ID
    or alias name is looked up in the caller's own account (here: nothing)."""
    eve = authz.client(EVE)
    for key_id, shown in (
        (shared["key"], f"arn:aws:kms:{REGION}:{OTHER_ACCOUNT}:key/{shared['key']}"),
        ("alias/shared", f"arn:aws:kms:{REGION}:{OTHER_ACCOUNT}:alias/shared"),
    ):
        code, message, _ = refusal(eve.encrypt, KeyId=key_id, Plaintext=b"x")
        assert code == "NotFoundException" and shown in message, message
    assert eve.describe_key(KeyId=shared["arn"])["KeyMetadata"]["KeyId"] == shared["key"]


def test_retirable_grants_of_a_principal_of_the_callers_own_account(
    authz: AuthzServer, shared: dict[str, str]
) -> None:
    """ListRetirableGrants: "You must specify a principal in your AWS account", and the
    answer may hold grants on keys of other accounts:
    https://docs.aws.amazon.com/kms/latest/APIReference/API_ListRetirableGrants.html"""
    admin, eve = authz.client(), authz.client(EVE)
    made = admin.create_grant(
        KeyId=shared["key"], GranteePrincipal=ADMIN, RetiringPrincipal=EVE, Operations=["Decrypt"]
    )
    listed = eve.list_retirable_grants(RetiringPrincipal=EVE)["Grants"]
    assert [g["GrantId"] for g in listed] == [made["GrantId"]]
    for caller, other in ((eve, ADMIN), (admin, EVE)):
        code, message, _ = refusal(caller.list_retirable_grants, RetiringPrincipal=other)
        assert code == "AccessDeniedException" and other in message, message
    assert admin.list_retirable_grants(RetiringPrincipal=ADMIN)["Grants"] == []
    with pytest.raises(ClientError):
        eve.retire_grant(KeyId=shared["key"], GrantId=made["GrantId"])  # a bare key ID
    eve.retire_grant(KeyId=shared["arn"], GrantId=made["GrantId"])
    assert eve.list_retirable_grants(RetiringPrincipal=EVE)["Grants"] == []
