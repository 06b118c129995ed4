"""Decision table at the authorizer: real keys with policies, tags, aliases and grants,
and requests as the API passes them (wire member names). Each case states the decision
and the reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hsmkms.errors import AccessDeniedException
from hsmkms.library import KeyManager
from hsmkms.operations.table import OPERATIONS
from hsmkms.policy.caller import CallerInfo
from hsmkms.policy.principals import CredentialStore
from hsmkms.token import Hsm

ACCOUNT = "111122223333"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
USER = f"arn:aws:iam::{ACCOUNT}:user/"


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.fixture
def world(km: KeyManager, hsm: Hsm) -> dict[str, Any]:
    key = km.create_key(
        tags=[{"TagKey": "Project", "TagValue": "Alpha"}],
        policy=doc(
            {"Sid": "Enable IAM", "Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "Auditors describe", "Effect": "Allow", "Principal": {"AWS": USER + "auditor"}, "Action": ["kms:Describe*", "kms:List*", "kms:Get*"], "Resource": "*"},
            {"Sid": "No deleting", "Effect": "Deny", "Principal": "*", "Action": "kms:ScheduleKeyDeletion", "Resource": "*",
             "Condition": {"StringNotEquals": {"aws:PrincipalArn": USER + "admin"}}},
        ),
    )["KeyMetadata"]["KeyId"]  # fmt: skip
    km.create_alias(alias_name="alias/alpha/orders", target_key_id=key)
    credentials = CredentialStore(km.store, hsm)
    credentials.attach_policy(
        USER + "admin",
        "all",
        doc({"Sid": "Admin", "Effect": "Allow", "Action": "kms:*", "Resource": "*"}),
    )
    credentials.attach_policy(USER + "dev", "abac", doc(
        {"Sid": "Alpha by tag", "Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*",
         "Condition": {"StringEquals": {"aws:ResourceTag/Project": "Alpha"}}},
        {"Sid": "Sign via alias", "Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*",
         "Condition": {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/alpha/*"}}},
    ))  # fmt: skip
    grant = km.create_grant(key_id=key, grantee_principal=USER + "app", operations=["Encrypt", "Decrypt", "GenerateDataKey"],
                            constraints={"EncryptionContextEquals": {"tenant": "7"}})  # fmt: skip
    km.create_grant(key_id=key, grantee_principal=USER + "signer", operations=["DescribeKey"])
    blob = km.encrypt(key_id=key, plaintext=b"x")["CiphertextBlob"]
    return {"key": key, "grant": grant["GrantId"], "blob": blob}


def members(world: dict[str, Any], **extra: Any) -> dict[str, Any]:
    # Every Decrypt carries a blob, read before anything else; with KeyId given, the key
    # comes from KeyId.
    return {"KeyId": world["key"], "CiphertextBlob": world["blob"], **extra}


T7 = {"EncryptionContext": {"tenant": "7"}}
CASES = [
    ("admin-encrypt", "admin", "Encrypt", {}, True, "identity policy statement 'Admin'"),
    ("admin-delete", "admin", "ScheduleKeyDeletion", {"PendingWindowInDays": 7}, True, "'Admin'"),
    ("admin-create-key", "admin", "CreateKey", None, True, "'Admin'"),
    ("dev-delete-denied", "dev", "ScheduleKeyDeletion", {}, False, "statement 'No deleting'"),
    ("root-delete-denied", "root", "ScheduleKeyDeletion", {}, False, "statement 'No deleting'"),
    ("root-encrypt", "root", "Encrypt", {}, True, "key policy statement 'Enable IAM'"),
    ("root-create-key", "root", "CreateKey", None, True, "'Account root user'"),
    (
        "auditor-describe",
        "auditor",
        "DescribeKey",
        {},
        True,
        "key policy statement 'Auditors describe'",
    ),
    ("auditor-get-policy", "auditor", "GetKeyPolicy", {}, True, "'Auditors describe'"),
    ("auditor-list-grants", "auditor", "ListGrants", {}, True, "'Auditors describe'"),
    (
        "auditor-decrypt",
        "auditor",
        "Decrypt",
        {},
        False,
        "no identity-based policy allows the kms:Decrypt",
    ),
    ("dev-encrypt-by-tag", "dev", "Encrypt", {}, True, "'Alpha by tag'"),
    ("dev-sign-not-granted", "dev", "GenerateDataKey", {}, False, "no identity-based"),
    ("dev-describe-by-alias", "dev", "DescribeKey", {}, True, "'Sign via alias'"),
    ("dev-create-key", "dev", "CreateKey", None, False, "no identity-based"),
    ("app-grant-encrypt", "app", "Encrypt", T7, True, "grant"),
    ("app-grant-decrypt", "app", "Decrypt", T7, True, "grant"),
    ("app-grant-data-key", "app", "GenerateDataKey", T7, True, "grant"),
    (
        "app-grant-wrong-context",
        "app",
        "Encrypt",
        {"EncryptionContext": {"tenant": "8"}},
        False,
        "no identity-based",
    ),
    (
        "app-grant-extra-context",
        "app",
        "Encrypt",
        {"EncryptionContext": {"tenant": "7", "x": "y"}},
        False,
        "no identity-based",
    ),
    ("app-grant-no-context", "app", "Encrypt", {}, False, "no identity-based"),
    ("app-grant-not-listed", "app", "ReEncryptFrom", T7, False, "no identity-based"),
    ("app-delete", "app", "ScheduleKeyDeletion", {}, False, "statement 'No deleting'"),
    ("signer-grant-describe", "signer", "DescribeKey", {}, True, "grant"),
    ("signer-no-encrypt", "signer", "Encrypt", {}, False, "no identity-based"),
    ("stranger", "nobody", "DescribeKey", {}, False, "no identity-based"),
]


@pytest.mark.parametrize(("who", "operation", "extra", "ok", "reason"),
                         [pytest.param(*c[1:], id=c[0]) for c in CASES])  # fmt: skip
def test_authorizer_table(km: KeyManager, world: dict[str, Any], who: str, operation: str,
                          extra: dict[str, Any] | None, ok: bool, reason: str) -> None:  # fmt: skip
    principal = ROOT if who == "root" else USER + who
    caller = CallerInfo(principal)
    request = {} if extra is None else members(world, **extra)
    action = f"kms:{operation}"
    record = None if extra is None else km._cached(world["key"]).record
    _, decision = km.authorizer.decide(caller, action, record, request)
    assert decision.allowed is ok, decision.reason
    assert reason in decision.reason
    if ok:
        km.authorizer.require(
            caller, operation, OPERATIONS[operation].resource, request
        ) if extra is not None else None
    elif extra is not None and operation not in ("ReEncryptFrom",):
        with pytest.raises(AccessDeniedException):
            km.authorizer.require(caller, operation, OPERATIONS[operation].resource, request)


def test_total_decision_cases() -> None:
    from tests.policy.test_policy_engine import CASES as ENGINE_CASES

    assert len(ENGINE_CASES) + len(CASES) >= 150
