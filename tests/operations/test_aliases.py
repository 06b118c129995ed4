"""Aliases: KMS's name rules, and every KeyId form wherever KMS accepts it."""

from __future__ import annotations

import pytest

from hsmkms.errors import (
    AlreadyExistsException,
    KMSError,
    KMSInvalidStateException,
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
)
from hsmkms.library import KeyManager

ARN_PREFIX = "arn:aws:kms:us-east-1:111122223333:"


def key_forms(key_id: str) -> list[str]:
    km_alias = "alias/forms"
    return [key_id, f"{ARN_PREFIX}key/{key_id}", km_alias, f"{ARN_PREFIX}{km_alias}"]


def test_every_key_id_form_works_for_crypto_and_management(km: KeyManager, key_id: str) -> None:
    """Changed (issue "Exactly AWS", section 4): EnableKey, DisableKey and
    GetKeyRotationStatus take "the key ID or key ARN of the KMS key" only:
    https://docs.aws.amazon.com/kms/latest/APIReference/API_EnableKey.html,
    https://docs.aws.amazon.com/kms/latest/APIReference/API_GetKeyRotationStatus.html"""
    km.create_alias(alias_name="alias/forms", target_key_id=key_id)
    for form in key_forms(key_id):
        data = km.encrypt(key_id=form, plaintext=b"x")["CiphertextBlob"]
        assert km.decrypt(ciphertext_blob=data, key_id=form)["Plaintext"] == b"x"
        assert km.describe_key(key_id=form)["KeyMetadata"]["KeyId"] == key_id
        assert km.generate_data_key(key_id=form, number_of_bytes=4)["KeyId"].endswith(key_id)
    for form in key_forms(key_id)[:2]:
        km.disable_key(key_id=form)
        km.enable_key(key_id=form)
        assert km.get_key_rotation_status(key_id=form)["KeyId"].endswith(key_id)
    for form in key_forms(key_id)[2:]:
        for refused in (km.disable_key, km.enable_key, km.get_key_rotation_status):
            with pytest.raises(NotFoundException):
                refused(key_id=form)


def test_target_key_may_be_id_or_arn_but_not_an_alias(km: KeyManager, key_id: str) -> None:
    km.create_alias(alias_name="alias/by-arn", target_key_id=f"{ARN_PREFIX}key/{key_id}")
    with pytest.raises(ValidationException):
        km.create_alias(alias_name="alias/by-alias", target_key_id="alias/by-arn")


# Changed to AWS's codes (issue "Exactly AWS", section 4): a missing prefix and a
# character outside the alias set are ValidationException, the reserved alias/aws/
# prefix NotAuthorizedException. https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html
@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("noprefix", ValidationException),
        ("alias/aws/reserved", NotAuthorizedException),
        ("alias/has:colon", ValidationException),
        ("alias/has space", ValidationException),
        ("alias/" + "a" * 251, ValidationException),
        ("", ValidationException),
    ],
)
def test_bad_alias_names(km: KeyManager, key_id: str, name: str, error: type[KMSError]) -> None:
    with pytest.raises(error) as caught:
        km.create_alias(alias_name=name, target_key_id=key_id)
    assert type(caught.value) is error


def test_longest_allowed_alias(km: KeyManager, key_id: str) -> None:
    name = "alias/" + "a" * 250
    km.create_alias(alias_name=name, target_key_id=key_id)
    assert km.describe_key(key_id=name)["KeyMetadata"]["KeyId"] == key_id


def test_alias_names_are_unique(km: KeyManager, key_id: str) -> None:
    km.create_alias(alias_name="alias/once", target_key_id=key_id)
    with pytest.raises(AlreadyExistsException, match=f"{ARN_PREFIX}alias/once already exists"):
        km.create_alias(alias_name="alias/once", target_key_id=key_id)


def test_update_alias_retargets(km: KeyManager, key_id: str) -> None:
    other = km.create_key()["KeyMetadata"]["KeyId"]
    km.create_alias(alias_name="alias/moving", target_key_id=key_id)
    km.update_alias(alias_name="alias/moving", target_key_id=other)
    assert km.describe_key(key_id="alias/moving")["KeyMetadata"]["KeyId"] == other
    with pytest.raises(NotFoundException, match="is not found"):
        km.update_alias(alias_name="alias/absent", target_key_id=other)


def test_delete_alias(km: KeyManager, key_id: str) -> None:
    km.create_alias(alias_name="alias/short-lived", target_key_id=key_id)
    km.delete_alias(alias_name="alias/short-lived")
    with pytest.raises(NotFoundException):
        km.describe_key(key_id="alias/short-lived")
    with pytest.raises(NotFoundException):
        km.delete_alias(alias_name="alias/short-lived")


def test_alias_of_key_pending_deletion(km: KeyManager, key_id: str) -> None:
    km.create_alias(alias_name="alias/pending", target_key_id=key_id)
    km.schedule_key_deletion(key_id=key_id)
    with pytest.raises(KMSInvalidStateException):
        km.create_alias(alias_name="alias/another", target_key_id=key_id)
    km.delete_alias(alias_name="alias/pending")  # works in every state


def test_list_aliases_pages_and_filters(km: KeyManager, key_id: str) -> None:
    other = km.create_key()["KeyMetadata"]["KeyId"]
    for n in range(5):
        km.create_alias(alias_name=f"alias/a{n}", target_key_id=key_id)
    km.create_alias(alias_name="alias/other", target_key_id=other)
    names: list[str] = []
    marker = None
    while True:
        page = km.list_aliases(limit=2, marker=marker)
        names.extend(a["AliasName"] for a in page["Aliases"])
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert names == [f"alias/a{n}" for n in range(5)] + ["alias/other"]
    only_other = km.list_aliases(key_id=other)["Aliases"]
    assert [a["AliasName"] for a in only_other] == ["alias/other"]
    entry = only_other[0]
    assert entry["AliasArn"] == f"{ARN_PREFIX}alias/other" and entry["TargetKeyId"] == other
    for bad in (0, 101):
        with pytest.raises(ValidationException):
            km.list_aliases(limit=bad)
