"""Decision table for the policy engine, written from AWS's public documentation of
KMS key policies, IAM policies and condition keys. Each case states the decision and
the reason that must be given. (Grants join the engine with the grants work.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsmkms.policy.engine import Decision, Request, evaluate
from hsmkms.policy.model import (
    MalformedPolicyDocumentException,
    Policy,
    default_key_policy,
    parse_policy,
)

ACCOUNT = "111122223333"
OTHER = "444455556666"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:user/bob"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/KeyAdmin"
APP = f"arn:aws:iam::{ACCOUNT}:role/App"
OUTSIDER = f"arn:aws:iam::{OTHER}:user/mallory"


def key_policy(*statements: dict[str, Any]) -> Policy:
    return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))


def identity(*statements: dict[str, Any]) -> Policy:
    return parse_policy(
        json.dumps({"Version": "2012-10-17", "Statement": list(statements)}), identity=True
    )


def allow(principal: Any, actions: Any, sid: str = "", **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Principal": principal, "Action": actions,
            "Resource": "*", **extra}  # fmt: skip


def deny(principal: Any, actions: Any, sid: str = "", **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Deny", "Principal": principal, "Action": actions,
            "Resource": "*", **extra}  # fmt: skip


def iam_allow(actions: Any, sid: str = "", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resource, **extra}


def iam_deny(actions: Any, sid: str = "", **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Deny", "Action": actions, "Resource": "*", **extra}


DEFAULT = parse_policy(default_key_policy(ACCOUNT))
ADMINS_AND_USERS = key_policy(
    allow({"AWS": ROOT}, "kms:*", "Enable IAM User Permissions"),
    allow({"AWS": ADMIN}, ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*",
                           "kms:Put*", "kms:Update*", "kms:Revoke*", "kms:Disable*",
                           "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
                           "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"],
          "Allow access for Key Administrators"),
    allow({"AWS": [APP, ALICE]}, ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*",
                                 "kms:GenerateDataKey*", "kms:DescribeKey"],
          "Allow use of the key"),
)  # fmt: skip
NO_ROOT = key_policy(allow({"AWS": ALICE}, "kms:Decrypt", "Alice decrypts"))
CONTEXT_BOUND = key_policy(
    allow({"AWS": APP}, ["kms:Encrypt", "kms:Decrypt"], "App with its context",
          Condition={"StringEquals": {"kms:EncryptionContext:Department": "IT"}}),
    allow({"AWS": ALICE}, "kms:Decrypt", "Only known context keys",
          Condition={"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Department", "Project"]}}),
    allow({"AWS": BOB}, "kms:Encrypt", "Bob needs some context",
          Condition={"Null": {"kms:EncryptionContextKeys": "false"}}),
)  # fmt: skip
DENIES = key_policy(
    allow({"AWS": "*"}, "kms:*", "Everyone", Condition={"StringEquals": {"kms:CallerAccount": ACCOUNT}}),
    deny({"AWS": BOB}, "kms:Decrypt", "Bob never decrypts"),
    deny({"AWS": "*"}, "kms:ScheduleKeyDeletion", "Short windows denied",
         Condition={"NumericLessThan": {"kms:ScheduleKeyDeletionPendingWindowInDays": "30"}}),
    deny({"AWS": "*"}, ["kms:Encrypt", "kms:Decrypt"], "Only via S3",
         Condition={"StringNotEqualsIfExists": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}),
)  # fmt: skip
ABAC = key_policy(
    allow({"AWS": ROOT}, "kms:*", "Enable IAM"),
    deny({"AWS": "*"}, "kms:*", "Quarantine", Condition={"StringEquals": {"aws:ResourceTag/Quarantine": "true"}}),
)  # fmt: skip
ABAC_IAM = identity(
    iam_allow(["kms:Decrypt", "kms:Encrypt"], "Same project",
              Condition={"StringEquals": {"aws:ResourceTag/Project": "Alpha"}}),
    iam_allow("kms:TagResource", "Tag only Env",
              Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["Env"]}}),
    iam_allow("kms:CreateAlias", "Aliases under alias/alpha/",
              Condition={"StringLike": {"kms:RequestAlias": "alias/alpha/*"}}),
    iam_allow("kms:Sign", "Via alias",
              Condition={"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/signing-*"}}),
)  # fmt: skip
LIMITS_IAM = identity(
    iam_allow("kms:EnableKeyRotation", "Rotate often",
              Condition={"NumericLessThanEquals": {"kms:RotationPeriodInDays": "180"}}),
    iam_allow("kms:CreateKey", "Only symmetric or P-256 keys",
              Condition={"StringEquals": {"kms:KeySpec": ["SYMMETRIC_DEFAULT", "ECC_NIST_P256"]}}),
    iam_allow("kms:Sign", "PSS only", Condition={"StringEquals": {"kms:SigningAlgorithm": "RSASSA_PSS_SHA_256",
                                                               "kms:MessageType": "DIGEST"}}),
    iam_allow("kms:GenerateMac", "SHA-384 MACs", Condition={"StringEquals": {"kms:MacAlgorithm": "HMAC_SHA_384"}}),
    iam_allow("kms:Encrypt", "OAEP-256 only", Condition={"StringEquals": {"kms:EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}),
    iam_allow("kms:CreateGrant", "Grants for the app only",
              Condition={"StringEquals": {"kms:GranteePrincipal": APP},
                         "ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt", "Encrypt"]}}),
    iam_allow("kms:PutKeyPolicy", "No bypass", Condition={"Bool": {"kms:BypassPolicyLockoutSafetyCheck": "false"}}),
    iam_allow("kms:DescribeKey", "From the office", Condition={"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}),
    iam_allow("kms:ListAliases", "Until 2027", Condition={"DateLessThan": {"aws:CurrentTime": "2027-01-01T00:00:00Z"}}),
    iam_allow("kms:GetPublicKey", "TLS only", Condition={"Bool": {"aws:SecureTransport": "true"}}),
    iam_allow("kms:ListKeys", "Roles only", Condition={"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/*"}}),
    iam_allow("kms:Verify", "Imported only", Condition={"StringEquals": {"kms:KeyOrigin": "EXTERNAL"}}),
    iam_allow("kms:GenerateDataKey", "Encrypt keys", Condition={"StringEquals": {"kms:KeyUsage": "ENCRYPT_DECRYPT"}}),
    iam_allow("kms:RetireGrant", "Retirer", Condition={"StringEquals": {"kms:RetiringPrincipal": ALICE}}),
)  # fmt: skip
ALICE_IAM = identity(iam_allow(["kms:Decrypt", "kms:DescribeKey"], "Alice can decrypt"))
ALICE_IAM_OTHER_KEY = identity(
    iam_allow("kms:Decrypt", "Other key only", resource=KEY[:-4] + "ffff")
)
NOT_ACTION_IAM = identity(
    {
        "Sid": "Everything but deletion",
        "Effect": "Allow",
        "NotAction": ["kms:ScheduleKeyDeletion", "kms:Delete*"],
        "Resource": "*",
    }
)
IAM_DENY = identity(iam_allow("kms:*", "All"), iam_deny("kms:Decrypt", "But not decrypt"))
NOT_PRINCIPAL = key_policy(
    allow({"AWS": "*"}, "kms:*", "Account members", Condition={"StringEquals": {"kms:CallerAccount": ACCOUNT}}),
    {"Sid": "Deny all but admin", "Effect": "Deny", "NotPrincipal": {"AWS": [ADMIN]}, "Action": "kms:ScheduleKeyDeletion", "Resource": "*"},
)  # fmt: skip

CASES: list[Any] = []


def _key_name(argument: str) -> str:
    """kms_EncryptionContext__Dept -> kms:encryptioncontext:dept; _slash_ -> /."""
    prefix, _, rest = argument.partition("_")
    return f"{prefix}:{rest.replace('__', ':').replace('_slash_', '/')}".lower()


def case(name: str, policy: Policy | None, principal: str, action: str, ok: bool, reason: str,
         iam: tuple[Policy, ...] = (), **context: Any) -> None:  # fmt: skip
    values = {_key_name(k): (v if isinstance(v, list) else [v]) for k, v in context.items()}
    CASES.append(
        pytest.param(policy, iam, Request(principal, action, KEY, values), ok, reason, id=name)
    )


# The default key policy delegates to IAM.
case("default-root-no-iam", DEFAULT, ALICE, "kms:Decrypt", False, "no identity-based policy allows")
case("default-iam-allows", DEFAULT, ALICE, "kms:Decrypt", True, "'Alice can decrypt'", (ALICE_IAM,))
case(
    "default-iam-other-action",
    DEFAULT,
    ALICE,
    "kms:Encrypt",
    False,
    "no identity-based policy",
    (ALICE_IAM,),
)
case(
    "default-iam-other-resource",
    DEFAULT,
    ALICE,
    "kms:Decrypt",
    False,
    "no identity-based",
    (ALICE_IAM_OTHER_KEY,),
)
case(
    "default-root-itself",
    DEFAULT,
    ROOT,
    "kms:ScheduleKeyDeletion",
    True,
    "'Enable IAM User Permissions'",
)
case("default-outsider", DEFAULT, OUTSIDER, "kms:Decrypt", False, "no resource-based policy allows")
case(
    "default-outsider-with-iam",
    DEFAULT,
    OUTSIDER,
    "kms:Decrypt",
    False,
    "no resource-based",
    (ALICE_IAM,),
)
case(
    "default-notaction-allows",
    DEFAULT,
    BOB,
    "kms:Encrypt",
    True,
    "'Everything but deletion'",
    (NOT_ACTION_IAM,),
)
case(
    "default-notaction-excludes",
    DEFAULT,
    BOB,
    "kms:ScheduleKeyDeletion",
    False,
    "no identity",
    (NOT_ACTION_IAM,),
)
case(
    "default-notaction-wildcard",
    DEFAULT,
    BOB,
    "kms:DeleteAlias",
    False,
    "no identity",
    (NOT_ACTION_IAM,),
)
case("iam-explicit-deny", DEFAULT, BOB, "kms:Decrypt", False, "explicit", (IAM_DENY,))
case("iam-deny-other-action", DEFAULT, BOB, "kms:Encrypt", True, "'All'", (IAM_DENY,))
case("no-root-no-delegation", NO_ROOT, BOB, "kms:Decrypt", False, "no resource-based", (ALICE_IAM,))
case("no-root-direct", NO_ROOT, ALICE, "kms:Decrypt", True, "'Alice decrypts'")
case(
    "no-root-direct-other-action",
    NO_ROOT,
    ALICE,
    "kms:Encrypt",
    False,
    "no resource-based",
    (ALICE_IAM,),
)
case("no-key-iam-allows", None, ALICE, "kms:Decrypt", True, "'Alice can decrypt'", (ALICE_IAM,))
case("no-key-iam-silent", None, BOB, "kms:CreateKey", False, "no identity-based", (ALICE_IAM,))
case("no-key-no-iam", None, BOB, "kms:ListKeys", False, "no identity-based")

# Key administrators and key users.
for action, ok in (("kms:CreateAlias", True), ("kms:DescribeKey", True), ("kms:EnableKeyRotation", True),
                   ("kms:ListResourceTags", True), ("kms:PutKeyPolicy", True), ("kms:ScheduleKeyDeletion", True),
                   ("kms:TagResource", True), ("kms:Encrypt", False), ("kms:Decrypt", False),
                   ("kms:GenerateDataKey", False), ("kms:Sign", False)):  # fmt: skip
    case(f"admin-{action}", ADMINS_AND_USERS, ADMIN, action, ok,
         "'Allow access for Key Administrators'" if ok else "no identity-based")  # fmt: skip
for who in (APP, ALICE):
    for action, ok in (("kms:Encrypt", True), ("kms:Decrypt", True), ("kms:ReEncryptFrom", True),
                       ("kms:ReEncryptTo", True), ("kms:GenerateDataKeyWithoutPlaintext", True),
                       ("kms:GenerateDataKeyPair", True), ("kms:DescribeKey", True),
                       ("kms:ScheduleKeyDeletion", False), ("kms:PutKeyPolicy", False),
                       ("kms:CreateGrant", False)):  # fmt: skip
        case(f"user-{who.rsplit('/', 1)[1]}-{action}", ADMINS_AND_USERS, who, action, ok,
             "'Allow use of the key'" if ok else "no identity-based")  # fmt: skip
case("users-bob-not-listed", ADMINS_AND_USERS, BOB, "kms:Decrypt", False, "no identity-based")
case(
    "users-bob-iam", ADMINS_AND_USERS, BOB, "kms:Decrypt", True, "'Alice can decrypt'", (ALICE_IAM,)
)
case(
    "users-action-case-insensitive",
    ADMINS_AND_USERS,
    ALICE,
    "KMS:decrypt",
    True,
    "'Allow use of the key'",
)

# Encryption context conditions.
case(
    "ctx-right",
    CONTEXT_BOUND,
    APP,
    "kms:Encrypt",
    True,
    "'App with its context'",
    kms_EncryptionContext__department="IT",
)
case(
    "ctx-wrong-value",
    CONTEXT_BOUND,
    APP,
    "kms:Encrypt",
    False,
    "no resource-based",
    kms_EncryptionContext__department="HR",
)
case("ctx-missing", CONTEXT_BOUND, APP, "kms:Decrypt", False, "no resource-based")
case(
    "ctx-value-case-sensitive",
    CONTEXT_BOUND,
    APP,
    "kms:Decrypt",
    False,
    "no resource-based",
    kms_EncryptionContext__department="it",
)
case(
    "ctxkeys-subset",
    CONTEXT_BOUND,
    ALICE,
    "kms:Decrypt",
    True,
    "'Only known context keys'",
    kms_EncryptionContextKeys=["Department"],
)
case(
    "ctxkeys-all",
    CONTEXT_BOUND,
    ALICE,
    "kms:Decrypt",
    True,
    "'Only known context keys'",
    kms_EncryptionContextKeys=["Department", "Project"],
)
case(
    "ctxkeys-extra",
    CONTEXT_BOUND,
    ALICE,
    "kms:Decrypt",
    False,
    "no resource-based",
    kms_EncryptionContextKeys=["Department", "Owner"],
)
case(
    "ctxkeys-none-forall-true",
    CONTEXT_BOUND,
    ALICE,
    "kms:Decrypt",
    True,
    "'Only known context keys'",
)
case(
    "null-false-present",
    CONTEXT_BOUND,
    BOB,
    "kms:Encrypt",
    True,
    "'Bob needs some context'",
    kms_EncryptionContextKeys=["x"],
)
case("null-false-absent", CONTEXT_BOUND, BOB, "kms:Encrypt", False, "no resource-based")

# Explicit denies beat allows.
case(
    "callers-account",
    DENIES,
    ALICE,
    "kms:DescribeKey",
    True,
    "'Everyone'",
    kms_CallerAccount=ACCOUNT,
)
case(
    "callers-other-account",
    DENIES,
    OUTSIDER,
    "kms:DescribeKey",
    False,
    "no resource-based",
    kms_CallerAccount=OTHER,
)
case(
    "deny-bob-decrypt",
    DENIES,
    BOB,
    "kms:Decrypt",
    False,
    "statement 'Bob never decrypts'",
    kms_CallerAccount=ACCOUNT,
    kms_ViaService="s3.us-east-1.amazonaws.com",
)
case(
    "deny-bob-only-decrypt",
    DENIES,
    BOB,
    "kms:DescribeKey",
    True,
    "'Everyone'",
    kms_CallerAccount=ACCOUNT,
)
case(
    "deny-short-window",
    DENIES,
    ALICE,
    "kms:ScheduleKeyDeletion",
    False,
    "'Short windows denied'",
    kms_CallerAccount=ACCOUNT,
    kms_ScheduleKeyDeletionPendingWindowInDays="7",
)
case(
    "allow-long-window",
    DENIES,
    ALICE,
    "kms:ScheduleKeyDeletion",
    True,
    "'Everyone'",
    kms_CallerAccount=ACCOUNT,
    kms_ScheduleKeyDeletionPendingWindowInDays="30",
)
case(
    "deny-not-via-s3",
    DENIES,
    ALICE,
    "kms:Encrypt",
    False,
    "'Only via S3'",
    kms_CallerAccount=ACCOUNT,
    kms_ViaService="ec2.us-east-1.amazonaws.com",
)
case(
    "allow-via-s3",
    DENIES,
    ALICE,
    "kms:Encrypt",
    True,
    "'Everyone'",
    kms_CallerAccount=ACCOUNT,
    kms_ViaService="s3.us-east-1.amazonaws.com",
)
# IfExists: a missing key makes the condition true, so the Deny hits direct calls.
case(
    "ifexists-absent-denied",
    DENIES,
    ALICE,
    "kms:Encrypt",
    False,
    "'Only via S3'",
    kms_CallerAccount=ACCOUNT,
)
case(
    "deny-root-account-wide",
    key_policy(
        allow({"AWS": ALICE}, "kms:*", "Alice"),
        deny({"AWS": ROOT}, "kms:Decrypt", "Account denied"),
    ),
    ALICE,
    "kms:Decrypt",
    False,
    "'Account denied'",
)
case(
    "notprincipal-admin-exempt",
    NOT_PRINCIPAL,
    ADMIN,
    "kms:ScheduleKeyDeletion",
    True,
    "'Account members'",
    kms_CallerAccount=ACCOUNT,
)
case(
    "notprincipal-others-denied",
    NOT_PRINCIPAL,
    ALICE,
    "kms:ScheduleKeyDeletion",
    False,
    "'Deny all but admin'",
    kms_CallerAccount=ACCOUNT,
)
case(
    "notprincipal-other-actions",
    NOT_PRINCIPAL,
    ALICE,
    "kms:Encrypt",
    True,
    "'Account members'",
    kms_CallerAccount=ACCOUNT,
)

# ABAC on tags and aliases.
case(
    "abac-tag-match",
    ABAC,
    ALICE,
    "kms:Decrypt",
    True,
    "'Same project'",
    (ABAC_IAM,),
    aws_ResourceTag_slash_Project="Alpha",
)
case(
    "abac-tag-mismatch",
    ABAC,
    ALICE,
    "kms:Decrypt",
    False,
    "no identity-based",
    (ABAC_IAM,),
    aws_ResourceTag_slash_Project="Beta",
)
case("abac-tag-absent", ABAC, ALICE, "kms:Decrypt", False, "no identity-based", (ABAC_IAM,))
case(
    "abac-quarantine",
    ABAC,
    ALICE,
    "kms:Decrypt",
    False,
    "'Quarantine'",
    (ABAC_IAM,),
    aws_ResourceTag_slash_Project="Alpha",
    aws_ResourceTag_slash_Quarantine="true",
)
case(
    "abac-tagkeys-ok",
    ABAC,
    ALICE,
    "kms:TagResource",
    True,
    "'Tag only Env'",
    (ABAC_IAM,),
    aws_TagKeys=["Env"],
)
case(
    "abac-tagkeys-extra",
    ABAC,
    ALICE,
    "kms:TagResource",
    False,
    "no identity-based",
    (ABAC_IAM,),
    aws_TagKeys=["Env", "Owner"],
)
case(
    "abac-request-alias-ok",
    ABAC,
    ALICE,
    "kms:CreateAlias",
    True,
    "'Aliases under alias/alpha/'",
    (ABAC_IAM,),
    kms_RequestAlias="alias/alpha/orders",
)
case(
    "abac-request-alias-outside",
    ABAC,
    ALICE,
    "kms:CreateAlias",
    False,
    "no identity-based",
    (ABAC_IAM,),
    kms_RequestAlias="alias/beta/orders",
)
case(
    "abac-resource-aliases-any",
    ABAC,
    ALICE,
    "kms:Sign",
    True,
    "'Via alias'",
    (ABAC_IAM,),
    kms_ResourceAliases=["alias/x", "alias/signing-prod"],
)
case(
    "abac-resource-aliases-none",
    ABAC,
    ALICE,
    "kms:Sign",
    False,
    "no identity-based",
    (ABAC_IAM,),
    kms_ResourceAliases=["alias/x"],
)
case(
    "abac-resource-aliases-absent", ABAC, ALICE, "kms:Sign", False, "no identity-based", (ABAC_IAM,)
)

# Condition keys on the request.
for name, action, ok, ctx in (
    ("rotation-ok", "kms:EnableKeyRotation", True, {"kms_RotationPeriodInDays": "90"}),
    ("rotation-too-long", "kms:EnableKeyRotation", False, {"kms_RotationPeriodInDays": "365"}),
    ("keyspec-ok", "kms:CreateKey", True, {"kms_KeySpec": "ECC_NIST_P256"}),
    ("keyspec-rsa", "kms:CreateKey", False, {"kms_KeySpec": "RSA_4096"}),
    (
        "sign-pss-digest",
        "kms:Sign",
        True,
        {"kms_SigningAlgorithm": "RSASSA_PSS_SHA_256", "kms_MessageType": "DIGEST"},
    ),
    (
        "sign-pss-raw",
        "kms:Sign",
        False,
        {"kms_SigningAlgorithm": "RSASSA_PSS_SHA_256", "kms_MessageType": "RAW"},
    ),
    (
        "sign-pkcs1",
        "kms:Sign",
        False,
        {"kms_SigningAlgorithm": "RSASSA_PKCS1_V1_5_SHA_256", "kms_MessageType": "DIGEST"},
    ),
    ("mac-384", "kms:GenerateMac", True, {"kms_MacAlgorithm": "HMAC_SHA_384"}),
    ("mac-256", "kms:GenerateMac", False, {"kms_MacAlgorithm": "HMAC_SHA_256"}),
    ("oaep-256", "kms:Encrypt", True, {"kms_EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
    ("oaep-1", "kms:Encrypt", False, {"kms_EncryptionAlgorithm": "RSAES_OAEP_SHA_1"}),
    (
        "grant-app-ok",
        "kms:CreateGrant",
        True,
        {"kms_GranteePrincipal": APP, "kms_GrantOperations": ["Decrypt"]},
    ),
    (
        "grant-app-too-much",
        "kms:CreateGrant",
        False,
        {"kms_GranteePrincipal": APP, "kms_GrantOperations": ["Decrypt", "CreateGrant"]},
    ),
    (
        "grant-other-grantee",
        "kms:CreateGrant",
        False,
        {"kms_GranteePrincipal": BOB, "kms_GrantOperations": ["Decrypt"]},
    ),
    ("bypass-false", "kms:PutKeyPolicy", True, {"kms_BypassPolicyLockoutSafetyCheck": "false"}),
    ("bypass-true", "kms:PutKeyPolicy", False, {"kms_BypassPolicyLockoutSafetyCheck": "true"}),
    (
        "bool-case-insensitive",
        "kms:PutKeyPolicy",
        True,
        {"kms_BypassPolicyLockoutSafetyCheck": "False"},
    ),
    ("ip-inside", "kms:DescribeKey", True, {"aws_SourceIp": "203.0.113.77"}),
    ("ip-outside", "kms:DescribeKey", False, {"aws_SourceIp": "198.51.100.7"}),
    ("ip-garbage", "kms:DescribeKey", False, {"aws_SourceIp": "not-an-ip"}),
    ("time-before", "kms:ListAliases", True, {"aws_CurrentTime": "2026-11-25T00:00:00Z"}),
    ("time-after", "kms:ListAliases", False, {"aws_CurrentTime": "2027-06-01T00:00:00Z"}),
    ("tls", "kms:GetPublicKey", True, {"aws_SecureTransport": "true"}),
    ("no-tls", "kms:GetPublicKey", False, {"aws_SecureTransport": "false"}),
    ("origin-external", "kms:Verify", True, {"kms_KeyOrigin": "EXTERNAL"}),
    ("origin-aws", "kms:Verify", False, {"kms_KeyOrigin": "AWS_KMS"}),
    ("usage-encrypt", "kms:GenerateDataKey", True, {"kms_KeyUsage": "ENCRYPT_DECRYPT"}),
    ("usage-sign", "kms:GenerateDataKey", False, {"kms_KeyUsage": "SIGN_VERIFY"}),
    ("retiring-alice", "kms:RetireGrant", True, {"kms_RetiringPrincipal": ALICE}),
    ("retiring-bob", "kms:RetireGrant", False, {"kms_RetiringPrincipal": BOB}),
):
    case(
        f"cond-{name}",
        DEFAULT,
        BOB,
        action,
        ok,
        "statement" if ok else "no identity-based",
        (LIMITS_IAM,),
        **ctx,
    )
WILDCARDS = identity(
    iam_allow("kms:*", "Aliases like", Condition={"StringLike": {"kms:RequestAlias": ["alias/app-?", "alias/team/*"]}}),
    iam_deny("kms:Decrypt", "No prod contexts", Condition={"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "prod"}}),
    iam_deny("kms:Encrypt", "Tag keys must be lower-case", Condition={"ForAnyValue:StringNotLike": {"aws:TagKeys": "[a-z]*"}}),
)  # fmt: skip
case(
    "like-question-mark",
    DEFAULT,
    BOB,
    "kms:CreateAlias",
    True,
    "'Aliases like'",
    (WILDCARDS,),
    kms_RequestAlias="alias/app-1",
)
case(
    "like-question-mark-two",
    DEFAULT,
    BOB,
    "kms:CreateAlias",
    False,
    "no identity-based",
    (WILDCARDS,),
    kms_RequestAlias="alias/app-12",
)
case(
    "like-star-path",
    DEFAULT,
    BOB,
    "kms:CreateAlias",
    True,
    "'Aliases like'",
    (WILDCARDS,),
    kms_RequestAlias="alias/team/a/b",
)
case(
    "like-brackets-literal",
    DEFAULT,
    BOB,
    "kms:Encrypt",
    False,
    "'Tag keys must be lower-case'",
    (WILDCARDS,),
    kms_RequestAlias="alias/team/x",
    aws_TagKeys=["env"],
)
case(
    "like-brackets-literal-match",
    DEFAULT,
    BOB,
    "kms:Encrypt",
    True,
    "'Aliases like'",
    (WILDCARDS,),
    kms_RequestAlias="alias/team/x",
    aws_TagKeys=["[a-z]x"],
)
case(
    "foranyvalue-deny-hit",
    DEFAULT,
    BOB,
    "kms:Decrypt",
    False,
    "'No prod contexts'",
    (WILDCARDS,),
    kms_RequestAlias="alias/team/x",
    kms_EncryptionContextKeys=["dev", "prod"],
)
case(
    "foranyvalue-deny-miss",
    DEFAULT,
    BOB,
    "kms:Decrypt",
    True,
    "'Aliases like'",
    (WILDCARDS,),
    kms_RequestAlias="alias/team/x",
    kms_EncryptionContextKeys=["dev"],
)
case(
    "foranyvalue-deny-absent",
    DEFAULT,
    BOB,
    "kms:Decrypt",
    True,
    "'Aliases like'",
    (WILDCARDS,),
    kms_RequestAlias="alias/team/x",
)
case(
    "condition-key-names-case-insensitive",
    CONTEXT_BOUND,
    APP,
    "kms:Encrypt",
    True,
    "'App with its context'",
    KMS_ENCRYPTIONCONTEXT__DEPARTMENT="IT",
)
case(
    "resource-mismatch-key-policy",
    key_policy(
        {
            "Sid": "Other key",
            "Effect": "Allow",
            "Principal": {"AWS": ALICE},
            "Action": "kms:*",
            "Resource": KEY[:-4] + "ffff",
        }
    ),
    ALICE,
    "kms:Decrypt",
    False,
    "no resource-based",
)
case(
    "resource-glob-key-policy",
    key_policy(
        {
            "Sid": "Keys here",
            "Effect": "Allow",
            "Principal": {"AWS": ALICE},
            "Action": "kms:*",
            "Resource": "arn:aws:kms:us-east-1:111122223333:key/*",
        }
    ),
    ALICE,
    "kms:Decrypt",
    True,
    "'Keys here'",
)
case(
    "principal-arn-role",
    DEFAULT,
    APP,
    "kms:ListKeys",
    True,
    "'Roles only'",
    (LIMITS_IAM,),
    aws_PrincipalArn=APP,
)
case(
    "principal-arn-user",
    DEFAULT,
    BOB,
    "kms:ListKeys",
    False,
    "no identity-based",
    (LIMITS_IAM,),
    aws_PrincipalArn=BOB,
)


@pytest.mark.parametrize(("policy", "iam", "request_", "ok", "reason"), CASES)
def test_decision_table(
    policy: Policy | None, iam: tuple[Policy, ...], request_: Request, ok: bool, reason: str
) -> None:
    decision = evaluate(request_, policy, iam)
    assert decision.allowed is ok, decision.reason
    assert reason in decision.reason or reason in decision.message(request_), decision.reason


def test_table_size() -> None:
    assert len(CASES) >= 120


def test_access_denied_message_shape() -> None:
    request = Request(BOB, "kms:Decrypt", KEY)
    implicit = evaluate(request, DEFAULT)
    assert implicit.message(request) == (
        f"User: {BOB} is not authorized to perform: kms:Decrypt on resource: {KEY} "
        "because no identity-based policy allows the kms:Decrypt action"
    )
    explicit = evaluate(request, DENIES)
    assert explicit.message(request).endswith("with an explicit deny in a resource-based policy")
    assert "'Bob never decrypts'" in explicit.reason  # the statement: for operators only


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        json.dumps({"Statement": []}),
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "kms:*"}],
            }
        ),
        json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*"}]}
        ),
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::12:user/x"},
                        "Action": "kms:*",
                    }
                ],
            }
        ),
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Bogus": 1}],
            }
        ),
        json.dumps(
            {
                "Version": "1999-01-01",
                "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*"}],
            }
        ),
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "kms:*",
                        "Condition": {"StringMaybe": {"a": "b"}},
                    }
                ],
            }
        ),
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "kms:*",
                        "NotAction": "kms:Decrypt",
                    }
                ],
            }
        ),
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Sid": "x" * 10}
                ],
                "Extra": 1,
            }
        ),
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": "*", "Action": ["kms:" + "x" * 40000]}
                ],
            }
        ),
        "[" * 5000,  # nested deeper than json's recursion limit (RecursionError)
    ],
)
def test_malformed_documents(document: str) -> None:
    with pytest.raises(MalformedPolicyDocumentException):
        parse_policy(document)


def test_identity_policies_have_no_principal() -> None:
    with pytest.raises(MalformedPolicyDocumentException):
        parse_policy(
            json.dumps({"Version": "2012-10-17", "Statement": [allow("*", "kms:*")]}), identity=True
        )


def test_account_ids_mean_the_account_root() -> None:
    policy = key_policy(allow({"AWS": ACCOUNT}, "kms:*", "Account"))
    assert policy.statements[0].principal is not None
    assert policy.statements[0].principal.arns == (ROOT,)


statement_strategy = st.fixed_dictionaries({
    "Effect": st.just("Deny"),
    "Principal": st.sampled_from(["*", {"AWS": ALICE}, {"AWS": ROOT}, {"AWS": BOB}]),
    "Action": st.sampled_from(["kms:*", "kms:Decrypt", "kms:Encrypt", "kms:Gen*", ["kms:Decrypt", "kms:Sign"]]),
    "Resource": st.just("*"),
})  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    deny_statement=statement_strategy,
    principal=st.sampled_from([ALICE, BOB, ADMIN, APP, ROOT, OUTSIDER]),
    action=st.sampled_from(
        ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:Sign", "kms:DescribeKey"]
    ),
    base=st.sampled_from([DEFAULT, ADMINS_AND_USERS, NO_ROOT, DENIES]),
)
def test_adding_a_deny_never_turns_deny_into_allow(
    deny_statement: dict[str, Any], principal: str, action: str, base: Policy
) -> None:
    request = Request(principal, action, KEY, {"kms:calleraccount": [principal.split(":")[4]]})
    before: Decision = evaluate(request, base, (ALICE_IAM,))
    raw = json.loads(base.text)
    raw["Statement"] = [
        *([raw["Statement"]] if isinstance(raw["Statement"], dict) else raw["Statement"]),
        deny_statement,
    ]
    after = evaluate(request, parse_policy(json.dumps(raw)), (ALICE_IAM,))
    assert not (after.allowed and not before.allowed)
    if not before.allowed:
        assert not after.allowed
