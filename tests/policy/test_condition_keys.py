"""The condition keys a request carries (hsmkms/policy/context.py), for the keys AWS
sets on operations the end-to-end tests (tests/api/test_api_condition_keys.py) cannot
reach cheaply: ImportKeyMaterial's, UpdatePrimaryRegion's, a key's multi-Region type,
and the deprecated names."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from hsmkms.errors import AccessDeniedException
from hsmkms.policy.caller import CallerInfo
from hsmkms.policy.context import RequestContext
from hsmkms.policy.model import MalformedPolicyDocumentException, parse_policy
from hsmkms.store.model import KeyRecord, KeySpec, KeyState, KeyUsage, Origin
from hsmkms.store.sqlite import SqliteStore
from hsmkms.xks import policy as xks_policy

CALLER = CallerInfo("arn:aws:iam::111122223333:user/u")


def record(**changes: Any) -> KeyRecord:
    fields: dict[str, Any] = {"key_spec": KeySpec.SYMMETRIC_DEFAULT,
                              "key_usage": KeyUsage.ENCRYPT_DECRYPT, **changes}  # fmt: skip
    return KeyRecord("k", "us-east-1", "111122223333", datetime.now(UTC),
                     origin=Origin.AWS_KMS, state=KeyState.ENABLED, current_version=1,
                     **fields)  # fmt: skip


def context(action: str, members: dict[str, Any], key: KeyRecord | None = None) -> RequestContext:
    return RequestContext(CALLER, lambda: datetime.now(UTC), members, key, list,
                          "EncryptionContext", action=action)  # fmt: skip


def test_import_key_material() -> None:
    given = context("kms:ImportKeyMaterial",
                    {"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": 1900000000})  # fmt: skip
    assert given["kms:expirationmodel"] == ["KEY_MATERIAL_EXPIRES"]
    assert given["kms:validto"] == ["1900000000"]
    assert context("kms:ImportKeyMaterial", {})["kms:expirationmodel"] == ["KEY_MATERIAL_EXPIRES"]
    assert "kms:validto" not in context("kms:ImportKeyMaterial", {})


def test_regions_and_multi_region_types() -> None:
    assert context("kms:UpdatePrimaryRegion", {"PrimaryRegion": "eu-west-1"})[
        "kms:primaryregion"] == ["eu-west-1"]  # fmt: skip
    primary = record(multi_region=True, multi_region_config={"MultiRegionKeyType": "PRIMARY"})
    replica = record(multi_region=True, multi_region_config={"MultiRegionKeyType": "REPLICA"})
    assert context("kms:Decrypt", {}, primary)["kms:multiregionkeytype"] == ["PRIMARY"]
    assert context("kms:Decrypt", {}, replica)["kms:multiregionkeytype"] == ["REPLICA"]
    assert "kms:multiregionkeytype" not in context("kms:Decrypt", {}, record())
    assert context("kms:CreateKey", {})["kms:multiregion"] == ["false"]


def test_deprecated_names_and_grant_keys() -> None:
    key = record(key_spec=KeySpec.RSA_2048, key_usage=KeyUsage.SIGN_VERIFY)
    assert context("kms:Sign", {}, key)["kms:customermasterkeyspec"] == ["RSA_2048"]
    assert context("kms:Sign", {}, key)["kms:customermasterkeyusage"] == ["SIGN_VERIFY"]
    assert context("kms:ListGrants", {}, key)["kms:grantisforawsresource"] == ["false"]
    assert "kms:grantisforawsresource" not in context("kms:Decrypt", {}, key)


def denying_unless(key: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*",
         "Condition": {"Null": {key: "false"}}}]})  # fmt: skip


@pytest.mark.parametrize("key", ["kms:EncryptionContextKey", "kms:ViaServices", "kms:Nope"])
def test_kms_keys_aws_does_not_define_are_refused_in_new_policies_only(key: str) -> None:
    document = denying_unless(key)
    with pytest.raises(MalformedPolicyDocumentException):
        parse_policy(document)
    assert parse_policy(document, stored=True).statements  # kept as it was accepted


def test_keys_aws_defines_are_accepted() -> None:
    for key in (
        "kms:ViaService",
        "kms:EncryptionContext:team",
        "kms:RecipientAttestation:PCR0",
        "kms:ValidTo",
        "aws:SourceVpc",
        "kms:GranteeServicePrincipal",
        "kms:GrantConstraintSourceArn",
    ):
        assert parse_policy(denying_unless(key)).statements


def test_a_stored_xks_policy_is_read_as_stored(store: SqliteStore) -> None:
    """A policy accepted before a key was refused keeps loading (and deciding)."""
    with store.transaction() as tx:
        document = json.loads(denying_unless("kms:Nope"))
        del document["Statement"][0]["Principal"]  # an XKS policy is an identity policy
        tx.put_document(xks_policy.KIND, "xks", json.dumps(document))
    policies = xks_policy.XksPolicies(store)
    with pytest.raises(AccessDeniedException, match="nothing in the XKS policy"):
        policies.require("xks", "Encrypt", "arn:aws:kms:us-east-1:111122223333:key/k", "k",
                         {"awsPrincipalArn": "arn:aws:iam::111122223333:user/u"})  # fmt: skip
