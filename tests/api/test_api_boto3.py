"""Real boto3 clients against the real server: every exposed operation."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ACCOUNT, Server


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    code: str = excinfo.value.response["Error"]["Code"]
    return code


def test_key_lifecycle_over_the_wire(server: Server) -> None:
    kms = server.client()
    meta = kms.create_key(Description="wire", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    key_id = meta["KeyId"]
    assert meta["Arn"] == f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key_id}"
    assert isinstance(meta["CreationDate"], dt.datetime) and meta["KeyState"] == "Enabled"
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "wire"
    kms.update_key_description(KeyId=key_id, Description="renamed")
    kms.disable_key(KeyId=key_id)
    with pytest.raises(ClientError) as caught:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert error_code(caught) == "DisabledException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    kms.enable_key(KeyId=key_id)
    out = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert out["KeyState"] == "PendingDeletion" and isinstance(out["DeletionDate"], dt.datetime)
    assert kms.cancel_key_deletion(KeyId=key_id)["KeyId"].endswith(key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


def test_crypto_over_the_wire(server: Server) -> None:
    kms = server.client()
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    ctx = {"purpose": "wire"}
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"p" * 4096, EncryptionContext=ctx)
    assert blob["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    out = kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext=ctx)
    assert out["Plaintext"] == b"p" * 4096 and out["KeyId"] == blob["KeyId"]
    with pytest.raises(ClientError) as caught:
        kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"purpose": "x"})
    assert error_code(caught) == "InvalidCiphertextException"

    other = kms.create_key()["KeyMetadata"]["KeyId"]
    moved = kms.re_encrypt(
        CiphertextBlob=blob["CiphertextBlob"],
        SourceEncryptionContext=ctx,
        DestinationKeyId=other,
    )
    assert kms.decrypt(CiphertextBlob=moved["CiphertextBlob"])["KeyId"].endswith(other)

    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=ctx)
    assert len(data_key["Plaintext"]) == 32
    again = kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=ctx)
    assert again["Plaintext"] == data_key["Plaintext"]
    bare = kms.generate_data_key_without_plaintext(KeyId=key_id, NumberOfBytes=16)
    assert "Plaintext" not in bare
    assert len(kms.generate_random(NumberOfBytes=1024)["Plaintext"]) == 1024


def test_aliases_and_paginators(server: Server) -> None:
    kms = server.client()
    keys = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(3)]
    for n, key_id in enumerate(keys):
        kms.create_alias(AliasName=f"alias/page-{n}", TargetKeyId=key_id)
    kms.update_alias(AliasName="alias/page-0", TargetKeyId=keys[1])
    assert kms.describe_key(KeyId="alias/page-0")["KeyMetadata"]["KeyId"] == keys[1]
    arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/page-2"
    assert kms.encrypt(KeyId=arn, Plaintext=b"x")["KeyId"].endswith(keys[2])

    listed = [
        k["KeyId"]
        for page in kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2})
        for k in page["Keys"]
    ]
    assert set(keys) <= set(listed) and len(listed) == len(set(listed))
    aliases = [
        a["AliasName"]
        for page in kms.get_paginator("list_aliases").paginate(PaginationConfig={"PageSize": 1})
        for a in page["Aliases"]
    ]
    assert {"alias/page-0", "alias/page-1", "alias/page-2"} <= set(aliases)
    assert isinstance(kms.list_aliases(KeyId=keys[2])["Aliases"][0]["CreationDate"], dt.datetime)
    kms.delete_alias(AliasName="alias/page-1")
    with pytest.raises(ClientError) as caught:
        kms.delete_alias(AliasName="alias/page-1")
    assert error_code(caught) == "NotFoundException"


def test_rotation_over_the_wire(server: Server) -> None:
    kms = server.client()
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] and status["RotationPeriodInDays"] == 90
    assert isinstance(status["NextRotationDate"], dt.datetime)
    old = kms.encrypt(KeyId=key_id, Plaintext=b"old")["CiphertextBlob"]
    kms.rotate_key_on_demand(KeyId=key_id)
    rotations = [
        r
        for page in kms.get_paginator("list_key_rotations").paginate(KeyId=key_id)
        for r in page["Rotations"]
    ]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND"]
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"old"
    kms.disable_key_rotation(KeyId=key_id)
    assert not kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"]


def test_keys_are_region_scoped(server: Server) -> None:
    east, west = server.client("us-east-1"), server.client("eu-west-1")
    key = west.create_key()["KeyMetadata"]
    assert key["Arn"].startswith("arn:aws:kms:eu-west-1:")
    with pytest.raises(ClientError) as caught:
        east.describe_key(KeyId=key["KeyId"])
    assert error_code(caught) == "NotFoundException"
    blob = west.encrypt(KeyId=key["KeyId"], Plaintext=b"regional")["CiphertextBlob"]
    with pytest.raises(ClientError):
        east.decrypt(CiphertextBlob=blob)
    assert west.decrypt(CiphertextBlob=blob)["Plaintext"] == b"regional"


def test_unimplemented_and_unknown_operations(server: Server) -> None:
    with pytest.raises(ClientError) as caught:
        server.client().get_key_last_usage(KeyId="alias/anything")
    assert error_code(caught) == "UnsupportedOperationException"
    response = server.raw("MakeCoffee", "{}")
    assert response.status_code == 400
    assert response.json()["__type"] == "UnknownOperationException"


def test_wire_format(server: Server) -> None:
    response = server.raw("GenerateRandom", '{"NumberOfBytes": 8}')
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-amz-json-1.1"
    assert "x-amzn-requestid" in response.headers
    assert len(base64.b64decode(response.json()["Plaintext"])) == 8


def test_asymmetric_and_hmac_over_the_wire(server: Server) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    kms = server.client()
    signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert signer["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    signature = kms.sign(KeyId=signer["KeyId"], Message=b"wire", SigningAlgorithm="ECDSA_SHA_256")
    public = serialization.load_der_public_key(
        kms.get_public_key(KeyId=signer["KeyId"])["PublicKey"]
    )
    public.verify(signature["Signature"], b"wire", ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg, union-attr]
    assert kms.verify(
        KeyId=signer["KeyId"], Message=b"wire", Signature=signature["Signature"],
        SigningAlgorithm="ECDSA_SHA_256",
    )["SignatureValid"]  # fmt: skip
    with pytest.raises(ClientError) as caught:
        kms.verify(
            KeyId=signer["KeyId"], Message=b"tampered", Signature=signature["Signature"],
            SigningAlgorithm="ECDSA_SHA_256",
        )  # fmt: skip
    assert error_code(caught) == "KMSInvalidSignatureException"

    mac_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    mac = kms.generate_mac(KeyId=mac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert kms.verify_mac(
        KeyId=mac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256", Mac=mac
    )["MacValid"]
    with pytest.raises(ClientError) as caught:
        kms.verify_mac(KeyId=mac_key["KeyId"], Message=b"n", MacAlgorithm="HMAC_SHA_256", Mac=mac)
    assert error_code(caught) == "KMSInvalidMacException"

    agreement = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]
    theirs = ec.generate_private_key(ec.SECP384R1())
    shared = kms.derive_shared_secret(
        KeyId=agreement["KeyId"], KeyAgreementAlgorithm="ECDH",
        PublicKey=theirs.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )["SharedSecret"]  # fmt: skip
    ours = serialization.load_der_public_key(
        kms.get_public_key(KeyId=agreement["KeyId"])["PublicKey"]
    )
    assert shared == theirs.exchange(ec.ECDH(), ours)  # type: ignore[arg-type]

    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    pair = kms.generate_data_key_pair(KeyId=symmetric, KeyPairSpec="ECC_NIST_P256")
    unwrapped = kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"])["Plaintext"]
    assert unwrapped == pair["PrivateKeyPlaintext"]
    assert "PrivateKeyPlaintext" not in kms.generate_data_key_pair_without_plaintext(
        KeyId=symmetric, KeyPairSpec="ECC_NIST_P256"
    )


def test_tags_over_the_wire(server: Server) -> None:
    kms = server.client()
    key_id = kms.create_key(Tags=[{"TagKey": "team", "TagValue": "wire"}])["KeyMetadata"]["KeyId"]
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "env", "TagValue": "test"}])
    kms.untag_resource(KeyId=key_id, TagKeys=["team"])
    pages = kms.get_paginator("list_resource_tags").paginate(KeyId=key_id)
    assert [t for page in pages for t in page["Tags"]] == [{"TagKey": "env", "TagValue": "test"}]
    with pytest.raises(ClientError) as caught:
        kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "aws:x", "TagValue": "y"}])
    assert error_code(caught) == "TagException"


@pytest.mark.needs_key_spec("ECC_NIST_EDWARDS25519", "SIGN_VERIFY")
def test_ed25519_over_the_wire(server: Server) -> None:
    kms = server.client()
    edwards = kms.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")
    ed_signature = kms.sign(
        KeyId=edwards["KeyMetadata"]["KeyId"], Message=b"ed", SigningAlgorithm="ED25519_SHA_512"
    )
    assert len(ed_signature["Signature"]) == 64
