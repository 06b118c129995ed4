"""AWS's error codes and wording where hsmkms used to differ (issue "Exactly AWS",
section 4), over the real HTTP API with boto3; each test cites the AWS page that
decides the behaviour."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Server


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


@pytest.fixture
def kms(server: Server) -> Any:
    return server.client()


@pytest.fixture
def key(kms: Any) -> str:
    key_id: str = kms.create_key()["KeyMetadata"]["KeyId"]
    return key_id


@pytest.mark.parametrize("body", [b"", b"{}"])
def test_decrypt_without_ciphertext_is_a_validation_error(server: Server, body: bytes) -> None:
    """CiphertextBlob is required except in a DryRun with IGNORE_CIPHERTEXT:
    https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html (was a 500)."""
    for op in ("Decrypt", "ReEncrypt"):
        response = server.raw(op, body if op == "Decrypt" else b'{"DestinationKeyId": "x"}')
        assert response.status_code == 400, response.text
        assert response.json()["__type"] == "ValidationException"
        assert "Value null at 'ciphertextBlob'" in response.json()["message"]
    response = server.raw("ListRetirableGrants", body)
    assert response.status_code == 400
    assert response.json()["__type"] == "ValidationException"


def test_alias_reserved_prefix_is_not_authorized(kms: Any, key: str) -> None:
    """alias/aws/ is reserved for AWS managed keys:
    https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateAlias.html"""
    with pytest.raises(ClientError) as caught:
        kms.create_alias(AliasName="alias/aws/mine", TargetKeyId=key)
    assert error(caught)[0] == "NotAuthorizedException"


def test_alias_without_prefix_is_a_validation_error(kms: Any, key: str) -> None:
    """https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"""
    for call in (
        lambda: kms.create_alias(AliasName="noprefix", TargetKeyId=key),
        lambda: kms.update_alias(AliasName="noprefix", TargetKeyId=key),
        lambda: kms.delete_alias(AliasName="noprefix"),  # was NotFoundException
    ):
        with pytest.raises(ClientError) as caught:
            call()
        assert error(caught) == (
            "ValidationException",
            'Alias must start with the prefix "alias/". Please see '
            "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html",
        )


def test_alias_with_invalid_characters(kms: Any, key: str) -> None:
    """Alias names are letters, digits, /, _ and -:
    https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateAlias.html#KMS-CreateAlias-request-AliasName"""
    with pytest.raises(ClientError) as caught:
        kms.create_alias(AliasName="alias/has:colon", TargetKeyId=key)
    assert error(caught) == (
        "ValidationException",
        "alias/has:colon contains invalid characters for an alias",
    )


def test_alias_is_validated_before_authorization(server: Server, key: str) -> None:
    """A principal with no permission still learns its request is invalid, as AWS
    validates requests before it authorizes them."""
    nobody = server.principal("alias-validation-nobody")
    with pytest.raises(ClientError) as caught:
        nobody.delete_alias(AliasName="noprefix")
    assert error(caught)[0] == "ValidationException"


def test_sensitive_values_are_left_out_of_validation_messages(server: Server) -> None:
    """Plaintext is a sensitive member: AWS's message omits its value,
    https://docs.aws.amazon.com/kms/latest/APIReference/API_Encrypt.html#KMS-Encrypt-request-Plaintext"""
    body = {"KeyId": "alias/x", "Plaintext": base64.b64encode(b"s" * 4097).decode()}
    response = server.raw("Encrypt", json.dumps(body))
    assert response.json() == {
        "__type": "ValidationException",
        "message": "1 validation error detected: Value at 'plaintext' failed to satisfy "
        "constraint: Member must have length less than or equal to 4096",
    }
    body = {"KeyId": "alias/x", "Message": "", "SigningAlgorithm": "ECDSA_SHA_256"}
    message = server.raw("Sign", json.dumps(body)).json()["message"]
    assert "Value at 'message'" in message and "HeapByteBuffer" not in message


@pytest.mark.parametrize(
    "call",
    [
        lambda kms, alias: kms.put_key_policy(KeyId=alias, PolicyName="default", Policy="{}"),
        lambda kms, alias: kms.enable_key_rotation(KeyId=alias),
        lambda kms, alias: kms.get_key_policy(KeyId=alias, PolicyName="default"),
        lambda kms, alias: kms.schedule_key_deletion(KeyId=alias),
        lambda kms, alias: kms.create_grant(
            KeyId=alias, GranteePrincipal="arn:aws:iam::111122223333:root", Operations=["Decrypt"]
        ),
        lambda kms, alias: kms.list_grants(KeyId=alias),
        lambda kms, alias: kms.tag_resource(KeyId=alias, Tags=[{"TagKey": "a", "TagValue": "b"}]),
    ],
)
def test_key_id_only_operations_refuse_aliases(kms: Any, key: str, call: Any) -> None:
    """ "Specify the key ID or key ARN of the KMS key", e.g.
    https://docs.aws.amazon.com/kms/latest/APIReference/API_PutKeyPolicy.html#KMS-PutKeyPolicy-request-KeyId
    https://docs.aws.amazon.com/kms/latest/APIReference/API_EnableKeyRotation.html"""
    kms.create_alias(AliasName=f"alias/only-ids-{key[:8]}", TargetKeyId=key)
    with pytest.raises(ClientError) as caught:
        call(kms, f"alias/only-ids-{key[:8]}")
    assert error(caught)[0] == "NotFoundException"
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False


@pytest.mark.parametrize(
    ("spec", "usage"), [("HMAC_256", "GENERATE_VERIFY_MAC"), ("ECC_NIST_P256", "SIGN_VERIFY")]
)
def test_create_key_needs_key_usage_unless_symmetric(kms: Any, spec: str, usage: str) -> None:
    """KeyUsage "is optional when you are creating a symmetric encryption KMS key;
    otherwise, it is required":
    https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateKey.html#KMS-CreateKey-request-KeyUsage"""
    with pytest.raises(ClientError) as caught:
        kms.create_key(KeySpec=spec)
    assert error(caught)[0] == "ValidationException"
    made = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
    assert made["KeyUsage"] == usage


# -- DryRun: https://docs.aws.amazon.com/kms/latest/developerguide/testing-permissions.html


def dry(call: Any) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    code, message = error(caught)
    return code, message, response["ResponseMetadata"]["HTTPStatusCode"]


def test_dry_run_answers_dry_run_operation_exception_when_the_call_would_succeed(
    kms: Any, key: str
) -> None:
    """DryRunOperationException, HTTP 412, and nothing is done:
    https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateGrant.html#API_CreateGrant_Errors"""
    blob = kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"a": "1"})["CiphertextBlob"]
    calls = [
        lambda: kms.encrypt(KeyId=key, Plaintext=b"x", DryRun=True),
        lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "1"}, DryRun=True),
        lambda: kms.re_encrypt(
            CiphertextBlob=blob,
            SourceEncryptionContext={"a": "1"},
            DestinationKeyId=key,
            DryRun=True,
        ),
        lambda: kms.generate_data_key(KeyId=key, KeySpec="AES_256", DryRun=True),
        lambda: kms.generate_data_key_without_plaintext(KeyId=key, NumberOfBytes=8, DryRun=True),
        lambda: kms.create_grant(
            KeyId=key,
            GranteePrincipal="arn:aws:iam::111122223333:user/dry",
            Operations=["Decrypt"],
            DryRun=True,
        ),
    ]
    for call in calls:
        assert dry(call) == (
            "DryRunOperationException",
            "The request would have succeeded, but the DryRun option is set.",
            412,
        )
    assert kms.list_grants(KeyId=key)["Grants"] == []  # the grant was not created
    grant = kms.create_grant(
        KeyId=key, GranteePrincipal="arn:aws:iam::111122223333:user/dry", Operations=["Decrypt"]
    )
    for call in (
        lambda: kms.revoke_grant(KeyId=key, GrantId=grant["GrantId"], DryRun=True),
        lambda: kms.retire_grant(GrantToken=grant["GrantToken"], DryRun=True),
    ):
        assert dry(call)[0] == "DryRunOperationException"
    assert len(kms.list_grants(KeyId=key)["Grants"]) == 1  # still there


def test_dry_run_reports_what_the_real_call_would_fail_with(kms: Any, key: str) -> None:
    blob = kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"a": "1"})["CiphertextBlob"]
    assert dry(lambda: kms.decrypt(CiphertextBlob=blob, DryRun=True))[0] == (
        "InvalidCiphertextException"
    )
    kms.disable_key(KeyId=key)
    assert dry(lambda: kms.encrypt(KeyId=key, Plaintext=b"x", DryRun=True))[0] == (
        "DisabledException"
    )
    # IGNORE_CIPHERTEXT: only the key and the permissions are checked (botocore's model,
    # DryRunModifiers; the same testing-permissions page).
    kms.enable_key(KeyId=key)
    code = dry(lambda: kms.decrypt(KeyId=key, DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"]))[
        0
    ]
    assert code == "DryRunOperationException"


def test_dry_run_checks_the_callers_permissions(server: Server, kms: Any, key: str) -> None:
    """Users test policies with DryRun: a caller without permission is denied."""
    user = server.principal(
        "dry-run-encrypt-only",
        json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}]}),
    )  # fmt: skip
    assert dry(lambda: user.encrypt(KeyId=key, Plaintext=b"x", DryRun=True))[0] == (
        "DryRunOperationException"
    )
    assert dry(lambda: user.generate_data_key(KeyId=key, NumberOfBytes=8, DryRun=True))[0] == (
        "AccessDeniedException"
    )


def test_algorithm_and_usage_mismatches_are_invalid_key_usage(kms: Any, key: str) -> None:
    """InvalidKeyUsageException: "The KeyUsage value of the KMS key is incompatible with
    the API operation" or "the ... algorithm specified for the operation is incompatible
    with the type of key material in the KMS key (KeySpec)":
    https://docs.aws.amazon.com/kms/latest/APIReference/API_GenerateMac.html#API_GenerateMac_Errors"""
    mac_key = kms.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    with pytest.raises(ClientError) as caught:
        kms.generate_mac(KeyId=mac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256")
    assert error(caught) == (
        "InvalidKeyUsageException",
        "Algorithm HMAC_SHA_256 is incompatible with key spec HMAC_384.",
    )
    with pytest.raises(ClientError) as caught:
        kms.generate_mac(KeyId=key, Message=b"m", MacAlgorithm="HMAC_SHA_256")
    arn = kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"]
    assert error(caught) == (
        "InvalidKeyUsageException",
        f"{arn} key usage is ENCRYPT_DECRYPT which is not valid for GenerateMac.",
    )


def test_decrypt_with_another_key_is_incorrect_key(kms: Any, key: str) -> None:
    """ "If you identify a different KMS key, the Decrypt operation throws an
    IncorrectKeyException": https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html#KMS-Decrypt-request-KeyId"""
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    with pytest.raises(ClientError) as caught:
        kms.decrypt(CiphertextBlob=blob, KeyId=other)
    assert error(caught) == (
        "IncorrectKeyException",
        "The key ID in the request does not identify a CMK that can perform this operation.",
    )
