"""Grants at the library level: validation, idempotency, listing, retiring, revoking."""

from __future__ import annotations

import pytest

from hsmkms.errors import KMSInvalidStateException, NotFoundException, ValidationException
from hsmkms.library import KeyManager

ALICE = "arn:aws:iam::111122223333:user/alice"
BOB = "arn:aws:iam::111122223333:user/bob"


def test_create_list_retire_revoke(km: KeyManager, key_id: str) -> None:
    first = km.create_grant(key_id=key_id, grantee_principal=ALICE, operations=["Encrypt", "Decrypt"],
                            retiring_principal=BOB, constraints={"EncryptionContextSubset": {"app": "x"}})  # fmt: skip
    second = km.create_grant(key_id=key_id, grantee_principal=BOB, operations=["DescribeKey"])
    assert len(first["GrantId"]) == 64 and first["GrantToken"]
    listed = km.list_grants(key_id=key_id)["Grants"]
    assert [g["GrantId"] for g in listed] == [first["GrantId"], second["GrantId"]]
    entry = listed[0]
    assert entry["GranteePrincipal"] == ALICE and entry["RetiringPrincipal"] == BOB
    assert entry["Operations"] == ["Encrypt", "Decrypt"]
    assert entry["Constraints"] == {"EncryptionContextSubset": {"app": "x"}}
    assert entry["IssuingAccount"] == "arn:aws:iam::111122223333:root"
    assert (
        km.list_grants(key_id=key_id, grantee_principal=BOB)["Grants"][0]["GrantId"]
        == second["GrantId"]
    )
    retirable = km.list_retirable_grants(retiring_principal=BOB)["Grants"]
    assert [g["GrantId"] for g in retirable] == [first["GrantId"]]

    km.retire_grant(grant_token=first["GrantToken"])
    km.revoke_grant(key_id=key_id, grant_id=second["GrantId"])
    assert km.list_grants(key_id=key_id)["Grants"] == []
    with pytest.raises(NotFoundException):
        km.revoke_grant(key_id=key_id, grant_id=second["GrantId"])
    with pytest.raises(ValidationException):
        km.retire_grant(grant_id=second["GrantId"])  # needs KeyId too


def test_names_make_create_grant_idempotent(km: KeyManager, key_id: str) -> None:
    once = km.create_grant(
        key_id=key_id, grantee_principal=ALICE, operations=["Encrypt"], name="app"
    )
    again = km.create_grant(
        key_id=key_id, grantee_principal=ALICE, operations=["Encrypt"], name="app"
    )
    assert again["GrantId"] == once["GrantId"]
    different = km.create_grant(
        key_id=key_id, grantee_principal=ALICE, operations=["Decrypt"], name="app"
    )
    assert different["GrantId"] != once["GrantId"]
    assert len(km.list_grants(key_id=key_id)["Grants"]) == 2


@pytest.mark.parametrize(
    ("spec", "usage", "operations"),
    [
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", ["Sign"]),
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", []),
        ("ECC_NIST_P256", "SIGN_VERIFY", ["Encrypt"]),
        ("ECC_NIST_P256", "SIGN_VERIFY", ["GenerateDataKey"]),
        ("HMAC_256", "GENERATE_VERIFY_MAC", ["Verify"]),
    ],
)
def test_operations_must_fit_the_key(
    km: KeyManager, spec: str, usage: str, operations: list[str]
) -> None:
    key = km.create_key(key_spec=spec, key_usage=usage)["KeyMetadata"]["KeyId"]
    with pytest.raises(ValidationException):
        km.create_grant(key_id=key, grantee_principal=ALICE, operations=operations)


def test_bad_principals_and_constraints(km: KeyManager, key_id: str) -> None:
    with pytest.raises(ValidationException):
        km.create_grant(key_id=key_id, grantee_principal="alice", operations=["Encrypt"])
    signing = km.create_key(key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY")["KeyMetadata"][
        "KeyId"
    ]
    with pytest.raises(ValidationException):
        km.create_grant(key_id=signing, grantee_principal=ALICE, operations=["Sign"],
                        constraints={"EncryptionContextEquals": {"a": "b"}})  # fmt: skip


def test_grants_go_with_their_key(km: KeyManager, key_id: str, clock: object) -> None:
    km.create_grant(
        key_id=key_id, grantee_principal=ALICE, operations=["Encrypt"], retiring_principal=BOB
    )
    km.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
    with pytest.raises(KMSInvalidStateException):
        km.create_grant(key_id=key_id, grantee_principal=ALICE, operations=["Encrypt"])
    clock.advance(days=8)  # type: ignore[attr-defined]
    km.maintain()
    assert km.list_retirable_grants(retiring_principal=BOB)["Grants"] == []
