"""Error responses as AWS KMS sends them (issue "Exactly AWS, second pass"), compared
whole on the wire: HTTP status, `__type`, whether a `message` member is there at all,
and its text. The targets are responses recorded from AWS KMS (2026-12-03, and the
AWS-validated snapshots public emulator suites keep); each test names the case."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hsmkms.keys.specs import DATA_KEY_PAIR_SPECS
from hsmkms.store.model import KeySpec
from tests.conftest import REGION, Server

OTHER_REGION = "us-west-2"


def wire(server: Server, op: str, body: dict[str, Any], region: str = REGION) -> Any:
    """(status, the JSON body as sent) of one call."""
    response = server.raw(op, json.dumps(body), region=region)
    return response.status_code, response.json()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def kms(server: Server) -> Any:
    return server.client()


def created(kms: Any, **options: Any) -> dict[str, Any]:
    meta: dict[str, Any] = kms.create_key(**options)["KeyMetadata"]
    return meta


# -- exceptions AWS sends without any message member ---------------------------------


def test_invalid_ciphertext_has_no_message(server: Server, kms: Any) -> None:
    key = created(kms)["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"a": "1"})["CiphertextBlob"]
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    for body in (
        {"CiphertextBlob": b64(blob)},  # the encryption context left out
        {"CiphertextBlob": b64(flipped), "EncryptionContext": {"a": "1"}},
        {"CiphertextBlob": b64(b"\xa1" + b"x" * 60)},
    ):
        assert wire(server, "Decrypt", body) == (400, {"__type": "InvalidCiphertextException"})


def test_invalid_signature_and_mac_have_no_message(server: Server, kms: Any) -> None:
    signer = created(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyId"]
    signature = kms.sign(KeyId=signer, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    body = {"KeyId": signer, "Message": b64(b"other"), "Signature": b64(signature),
            "SigningAlgorithm": "ECDSA_SHA_256"}  # fmt: skip
    assert wire(server, "Verify", body) == (400, {"__type": "KMSInvalidSignatureException"})
    macer = created(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyId"]
    body = {"KeyId": macer, "Message": b64(b"m"), "Mac": b64(b"\0" * 32),
            "MacAlgorithm": "HMAC_SHA_256"}  # fmt: skip
    assert wire(server, "VerifyMac", body) == (400, {"__type": "KMSInvalidMacException"})


def test_the_table_of_messageless_exceptions_is_what_aws_records() -> None:
    from hsmkms.api.errors import SENT_WITHOUT_MESSAGE

    codes = sorted({error.code for error in SENT_WITHOUT_MESSAGE})
    assert codes == [
        "InvalidCiphertextException",
        "KMSInvalidMacException",
        "KMSInvalidSignatureException",
        "UnsupportedOperationException",  # RotateKeyOnDemand of a key that cannot rotate
        "ValidationException",  # DeriveSharedSecret with a malformed public key
    ]


# -- TagException: AWS's short texts --------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ([{"TagKey": "a", "TagValue": "1"}, {"TagKey": "a", "TagValue": "2"}],
         "Duplicate tag keys"),
        ([{"TagKey": f"k{n}", "TagValue": "v"} for n in range(51)], "Too many tags"),
        ([{"TagKey": "aws:owner", "TagValue": "v"}], "Tags beginning with aws: are reserved"),
        ([{"TagKey": "AWS:owner", "TagValue": "v"}], "Tags beginning with aws: are reserved"),
    ],
)  # fmt: skip
def test_tag_exceptions(server: Server, kms: Any, tags: list[Any], message: str) -> None:
    expected = (400, {"__type": "TagException", "message": message})
    assert wire(server, "CreateKey", {"Tags": tags}) == expected
    key = created(kms)["KeyId"]
    assert wire(server, "TagResource", {"KeyId": key, "Tags": tags}) == expected


# -- validation: paths of list members, enum lists, RSA plaintext size ----------------


def test_list_member_paths_are_one_based_with_dots(server: Server) -> None:
    tags = [{"TagKey": "ok", "TagValue": "v" * 257}, {"TagKey": "k" * 129, "TagValue": "v"}]
    assert wire(server, "CreateKey", {"Tags": tags}) == (
        400,
        {
            "__type": "ValidationException",
            "message": "2 validation errors detected: "
            f"Value '{'v' * 257}' at 'tags.1.member.tagValue' failed to satisfy constraint: "
            "Member must have length less than or equal to 256; "
            f"Value '{'k' * 129}' at 'tags.2.member.tagKey' failed to satisfy constraint: "
            "Member must have length less than or equal to 128",
        },
    )


def recorded_then_model(recorded: str, shape: str) -> str:
    """AWS's order as recorded, then the values the installed botocore model added since
    (AWS keeps adding key specs: ML-KEM came after the recording), in the model's order."""
    from botocore.loaders import create_loader

    model = create_loader().load_service_model("kms", "service-2")["shapes"][shape]["enum"]
    first = recorded.split(", ")
    return ", ".join([*first, *(v for v in model if v not in first)])


@pytest.mark.parametrize(
    ("op", "body", "path", "listed"),
    [
        ("GenerateMac", {"KeyId": "k", "Message": "bQ==", "MacAlgorithm": "INVALID"},
         "macAlgorithm", "HMAC_SHA_384, HMAC_SHA_256, HMAC_SHA_224, HMAC_SHA_512"),
        ("DeriveSharedSecret", {"KeyId": "k", "KeyAgreementAlgorithm": "INVALID",
                                "PublicKey": "bQ=="}, "keyAgreementAlgorithm", "ECDH"),
        ("CreateKey", {"KeySpec": "HMAC_random"}, "keySpec", recorded_then_model(
         "RSA_2048, ECC_NIST_P384, ECC_NIST_P256, ECC_NIST_P521, HMAC_384, RSA_3072, "
         "ECC_SECG_P256K1, RSA_4096, SYMMETRIC_DEFAULT, HMAC_256, HMAC_224, HMAC_512, "
         "SM2, ML_DSA_44, ML_DSA_65, ML_DSA_87, ECC_NIST_EDWARDS25519", "KeySpec")),
        ("CreateKey", {"KeyUsage": "RANDOM"}, "keyUsage", recorded_then_model(
         "ENCRYPT_DECRYPT, SIGN_VERIFY, GENERATE_VERIFY_MAC, KEY_AGREEMENT", "KeyUsageType")),
    ],
)  # fmt: skip
def test_enum_lists_are_awss_in_awss_order(
    server: Server, op: str, body: dict[str, Any], path: str, listed: str
) -> None:
    """AWS's order where responses recorded it (values the model added since follow, in
    the model's order); never a shortened list of hsmkms's own."""
    value = next(v for v in body.values() if v in ("INVALID", "HMAC_random", "RANDOM"))
    assert wire(server, op, body) == (
        400,
        {
            "__type": "ValidationException",
            "message": f"1 validation error detected: Value '{value}' at '{path}' failed to "
            f"satisfy constraint: Member must satisfy enum value set: [{listed}]",
        },
    )


def test_rsa_plaintext_too_long(server: Server, kms: Any) -> None:
    key = created(kms, KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyId"]
    body = {"KeyId": key, "Plaintext": b64(b"x" * 215), "EncryptionAlgorithm": "RSAES_OAEP_SHA_1"}
    assert wire(server, "Encrypt", body) == (
        400,
        {
            "__type": "ValidationException",
            "message": "Algorithm RSAES_OAEP_SHA_1 and key spec RSA_2048 cannot encrypt data "
            "larger than 214 bytes.",
        },
    )
    assert wire(server, "Encrypt", {**body, "Plaintext": b64(b"x" * 214)})[0] == 200


# -- texts naming the key, the CMK and the one operation ------------------------------

INCORRECT_KEY = "The key ID in the request does not identify a CMK that can perform this operation."


def test_incorrect_key_says_cmk(server: Server, kms: Any) -> None:
    key = created(kms)["KeyId"]
    blob = b64(kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"])
    hmac_key = created(kms, KeySpec="HMAC_224", KeyUsage="GENERATE_VERIFY_MAC")["KeyId"]
    other = created(kms)["KeyId"]
    expected = (400, {"__type": "IncorrectKeyException", "message": INCORRECT_KEY})
    for wrong in (hmac_key, other):
        assert wire(server, "Decrypt", {"CiphertextBlob": blob, "KeyId": wrong}) == expected
        body = {"CiphertextBlob": blob, "SourceKeyId": wrong, "DestinationKeyId": key}
        assert wire(server, "ReEncrypt", body) == expected


def test_key_usage_errors_name_the_one_operation(server: Server, kms: Any) -> None:
    symmetric = created(kms)["Arn"]
    signer = created(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["Arn"]
    macer = created(kms, KeySpec="HMAC_224", KeyUsage="GENERATE_VERIFY_MAC")["Arn"]
    message = b64(b"message")
    cases = [
        ("Sign", {"KeyId": macer, "Message": message, "SigningAlgorithm": "RSASSA_PSS_SHA_256"},
         f"{macer} key usage is GENERATE_VERIFY_MAC which is not valid for Sign."),
        ("Verify", {"KeyId": symmetric, "Message": message, "Signature": message,
                    "SigningAlgorithm": "ECDSA_SHA_256"},
         f"{symmetric} key usage is ENCRYPT_DECRYPT which is not valid for Verify."),
        ("Encrypt", {"KeyId": signer, "Plaintext": message},
         f"{signer} key usage is SIGN_VERIFY which is not valid for Encrypt."),
        ("GenerateDataKey", {"KeyId": signer, "KeySpec": "AES_256"},
         f"{signer} key usage is SIGN_VERIFY which is not valid for GenerateDataKey."),
        ("DeriveSharedSecret", {"KeyId": signer, "KeyAgreementAlgorithm": "ECDH",
                                "PublicKey": message},
         f"{signer} key usage is SIGN_VERIFY which is not valid for DeriveSharedSecret."),
    ]  # fmt: skip
    for op, body, text in cases:
        assert wire(server, op, body) == (
            400,
            {"__type": "InvalidKeyUsageException", "message": text},
        ), op


def test_rotate_key_on_demand_checks_state_first_then_spec(server: Server, kms: Any) -> None:
    signer = created(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    assert wire(server, "RotateKeyOnDemand", {"KeyId": signer["KeyId"]}) == (
        400,
        {"__type": "UnsupportedOperationException"},
    )
    kms.disable_key(KeyId=signer["KeyId"])
    assert wire(server, "RotateKeyOnDemand", {"KeyId": signer["KeyId"]}) == (
        400,
        {"__type": "DisabledException", "message": f"{signer['Arn']} is disabled."},
    )


def test_get_parameters_for_import_on_a_kms_made_key(server: Server, kms: Any) -> None:
    key = created(kms)
    body = {"KeyId": key["KeyId"], "WrappingAlgorithm": "RSAES_OAEP_SHA_1",
            "WrappingKeySpec": "RSA_2048"}  # fmt: skip
    assert wire(server, "GetParametersForImport", body) == (
        400,
        {
            "__type": "UnsupportedOperationException",
            "message": f"{key['Arn']} origin is AWS_KMS which is not valid for this operation.",
        },
    )


def test_replicate_a_replica(server: Server, kms: Any) -> None:
    primary = created(kms, MultiRegion=True)
    replica = kms.replicate_key(KeyId=primary["KeyId"], ReplicaRegion=OTHER_REGION)
    arn = replica["ReplicaKeyMetadata"]["Arn"]
    body = {"KeyId": arn, "ReplicaRegion": "eu-west-1"}
    assert wire(server, "ReplicateKey", body, region=OTHER_REGION) == (
        400,
        {"__type": "UnsupportedOperationException", "message": f"{arn} is not a multi-region "
         "primary key."},
    )  # fmt: skip


def test_describe_key_by_an_arn_of_another_region(server: Server, kms: Any) -> None:
    elsewhere = server.client(OTHER_REGION).create_key()["KeyMetadata"]
    assert wire(server, "DescribeKey", {"KeyId": elsewhere["Arn"]}) == (
        400,
        {"__type": "NotFoundException", "message": f"Invalid arn {OTHER_REGION}"},
    )
    assert wire(server, "DescribeKey", {"KeyId": elsewhere["KeyId"]}) == (  # by id: not here
        400,
        {
            "__type": "NotFoundException",
            "message": f"Key '{elsewhere['Arn'].replace(OTHER_REGION, REGION)}' does not exist",
        },
    )


def test_derive_shared_secret_with_a_malformed_public_key(server: Server, kms: Any) -> None:
    key = created(kms, KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyId"]
    body = {"KeyId": key, "KeyAgreementAlgorithm": "ECDH", "PublicKey": b64(b"not DER")}
    assert wire(server, "DeriveSharedSecret", body) == (400, {"__type": "ValidationException"})
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = peer.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert wire(server, "DeriveSharedSecret", {**body, "PublicKey": b64(der)})[0] == 200


# -- values botocore's model allows and hsmkms does not implement ---------------------


@pytest.mark.parametrize(
    ("op", "body", "named"),
    [
        ("CreateKey", {"KeySpec": "ML_DSA_44", "KeyUsage": "SIGN_VERIFY"}, "ML_DSA_44"),
        ("CreateKey", {"KeySpec": "ML_DSA_87", "KeyUsage": "SIGN_VERIFY"}, "ML_DSA_87"),
        ("CreateKey", {"KeySpec": "SM2", "KeyUsage": "SIGN_VERIFY"}, "SM2"),
        ("GenerateDataKeyPair", {"KeyPairSpec": "SM2"}, "SM2"),
        ("GenerateDataKeyPairWithoutPlaintext", {"KeyPairSpec": "SM2"}, "SM2"),
        ("Sign", {"Message": "bQ==", "SigningAlgorithm": "ED25519_PH_SHA_512",
                  "MessageType": "DIGEST"}, "ED25519_PH_SHA_512"),
        ("Sign", {"Message": "bQ==", "SigningAlgorithm": "ML_DSA_SHAKE_256"}, "ML_DSA_SHAKE_256"),
        ("Sign", {"Message": "bQ==", "SigningAlgorithm": "SM2DSA"}, "SM2DSA"),
        ("Encrypt", {"Plaintext": "bQ==", "EncryptionAlgorithm": "SM2PKE"}, "SM2PKE"),
    ],
)  # fmt: skip
def test_model_values_not_implemented_are_unsupported(
    server: Server, kms: Any, op: str, body: dict[str, Any], named: str
) -> None:
    if op != "CreateKey":
        spec = "ECC_NIST_P256" if op == "Sign" else "SYMMETRIC_DEFAULT"
        usage = "SIGN_VERIFY" if op == "Sign" else "ENCRYPT_DECRYPT"
        body = {"KeyId": created(kms, KeySpec=spec, KeyUsage=usage)["KeyId"], **body}
    status, answer = wire(server, op, body)
    assert (status, answer["__type"]) == (400, "UnsupportedOperationException"), answer
    assert named in answer["message"] and "not supported" in answer["message"]


def _model_enum(shape: str) -> list[str]:
    from botocore.loaders import create_loader

    values: list[str] = create_loader().load_service_model("kms", "service-2")["shapes"][shape][
        "enum"
    ]
    return values


def _usage_for(spec: str) -> str:
    """A key usage the spec allows (by AWS's families), for CreateKey."""
    if spec.startswith("HMAC_"):
        return "GENERATE_VERIFY_MAC"
    if spec.startswith("ML_KEM_"):
        return "ENCAPSULATE_DECAPSULATE"
    return "ENCRYPT_DECRYPT" if spec == "SYMMETRIC_DEFAULT" else "SIGN_VERIFY"


# The specs hsmkms makes (each made in its own tests): the model must still have them.
MADE_KEY_SPECS = {spec.value for spec in KeySpec}


def test_the_model_has_every_key_spec_hsmkms_makes() -> None:
    assert set(_model_enum("KeySpec")) >= MADE_KEY_SPECS
    assert set(_model_enum("DataKeyPairSpec")) >= set(DATA_KEY_PAIR_SPECS)


@pytest.mark.parametrize("spec", sorted(set(_model_enum("KeySpec")) - MADE_KEY_SPECS))
def test_every_other_key_spec_of_the_model_is_refused_as_unsupported(
    server: Server, spec: str
) -> None:
    """Whatever key specs the installed botocore model has beyond hsmkms's (AWS keeps
    adding them): UnsupportedOperationException naming the spec (or the usage that comes
    with it); never a 500 or a validation error quoting a list of hsmkms's own."""
    usage = _usage_for(spec)
    status, answer = wire(server, "CreateKey", {"KeySpec": spec, "KeyUsage": usage})
    assert (status, answer["__type"]) == (400, "UnsupportedOperationException"), answer
    assert spec in answer["message"] or usage in answer["message"]


@pytest.mark.parametrize(
    "spec", sorted(set(_model_enum("DataKeyPairSpec")) - set(DATA_KEY_PAIR_SPECS))
)
def test_every_other_data_key_pair_spec_of_the_model_is_refused_as_unsupported(
    server: Server, kms: Any, spec: str
) -> None:
    key = created(kms)["KeyId"]
    status, answer = wire(
        server, "GenerateDataKeyPairWithoutPlaintext", {"KeyId": key, "KeyPairSpec": spec}
    )
    assert (status, answer["__type"]) == (400, "UnsupportedOperationException"), answer
    assert spec in answer["message"]


def test_a_grant_constraint_hsmkms_does_not_implement_is_refused_not_dropped(
    server: Server, kms: Any
) -> None:
    """A newer model's constraint (SourceArn) must not be ignored: that grant would allow
    more than its creator asked for."""
    key = created(kms)["KeyId"]
    body = {
        "KeyId": key,
        "GranteePrincipal": "arn:aws:iam::111122223333:user/someone",
        "Operations": ["Decrypt"],
        "Constraints": {
            "EncryptionContextSubset": {"a": "b"},
            "SourceArn": "arn:aws:s3:::bucket-of-someone",
        },
    }
    status, answer = wire(server, "CreateGrant", body)
    known = "SourceArn" in _model_members("GrantConstraints")
    if known:
        assert (status, answer["__type"]) == (400, "UnsupportedOperationException"), answer
        assert "GrantConstraints.SourceArn" in answer["message"]
        assert kms.list_grants(KeyId=key)["Grants"] == []
    else:  # an older model: a member it does not know, ignored as AWS ignores those
        assert status == 200, answer


def _model_members(shape: str) -> list[str]:
    from botocore.loaders import create_loader

    shapes = create_loader().load_service_model("kms", "service-2")["shapes"]
    return list(shapes[shape]["members"])
