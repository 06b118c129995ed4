"""Imported key material with real boto3 clients over HTTP, wrapped as AWS's docs show."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsmkms.keys.blob import decode
from hsmkms.keys.context import canonical
from tests.api.test_api_clients import aws
from tests.conftest import Server
from tests.operations.test_imports import pkcs8, wrap


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    code: str = excinfo.value.response["Error"]["Code"]
    return code


def boto3_import(kms: Any, key_id: str, material: bytes, algorithm: str, **extra: Any) -> Any:
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_2048"
    )
    assert params["ParametersValidTo"] > dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)
    return kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(params["PublicKey"], algorithm, material),
        **extra,
    )


def test_symmetric_import_delete_reimport_over_the_wire(server: Server) -> None:
    kms = server.client()
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    material = os.urandom(32)
    valid_to = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=10)
    out = boto3_import(kms, key_id, material, "RSA_AES_KEY_WRAP_SHA_1", ValidTo=valid_to)
    assert len(out["KeyMaterialId"]) == 64 and out["KeyId"].endswith(key_id)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Enabled" and meta["ValidTo"] == valid_to
    assert meta["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"wire")["CiphertextBlob"]
    kms.delete_imported_key_material(KeyId=key_id)
    with pytest.raises(ClientError) as caught:
        kms.decrypt(CiphertextBlob=blob)
    assert error_code(caught) == "KMSInvalidStateException"
    with pytest.raises(ClientError) as caught:
        boto3_import(kms, key_id, os.urandom(32), "RSAES_OAEP_SHA_1",
                     ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")  # fmt: skip
    assert error_code(caught) == "IncorrectKeyMaterialException"
    boto3_import(kms, key_id, material, "RSAES_OAEP_SHA_1",
                 ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")  # fmt: skip
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"wire"
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE" and "ValidTo" not in meta


def test_import_errors_over_the_wire(server: Server) -> None:
    kms = server.client()
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    if not server.km.hsm.oaep_supported("SHA256"):
        with pytest.raises(ClientError) as caught:
            kms.get_parameters_for_import(
                KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
            )
        assert error_code(caught) == "UnsupportedOperationException"
        assert "SHA256" in caught.value.response["Error"]["Message"]
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
    )
    other = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as caught:
        kms.import_key_material(
            KeyId=other,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap(params["PublicKey"], "RSAES_OAEP_SHA_1", os.urandom(32)),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
    assert error_code(caught) == "InvalidImportTokenException"
    with pytest.raises(ClientError) as caught:
        kms.import_key_material(
            KeyId=key_id,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=os.urandom(256),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
    assert error_code(caught) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as caught:
        kms.delete_imported_key_material(KeyId=key_id)
    assert error_code(caught) == "KMSInvalidStateException"
    plain = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as caught:
        kms.get_parameters_for_import(
            KeyId=plain, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
        )
    assert error_code(caught) == "UnsupportedOperationException"


def test_asymmetric_import_over_the_wire(server: Server) -> None:
    kms = server.client()
    rsa_key = kms.create_key(Origin="EXTERNAL", KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    rsa_id = rsa_key["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as caught:
        kms.get_parameters_for_import(
            KeyId=rsa_id, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
        )
    assert error_code(caught) == "ValidationException"
    private = rsa.generate_private_key(65537, 2048)
    boto3_import(kms, rsa_id, pkcs8(private), "RSA_AES_KEY_WRAP_SHA_1",
                 ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")  # fmt: skip
    signature = kms.sign(KeyId=rsa_id, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")[
        "Signature"
    ]
    private.public_key().verify(
        signature, b"m", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()
    )
    hmac_id = kms.create_key(Origin="EXTERNAL", KeySpec="HMAC_512", KeyUsage="GENERATE_VERIFY_MAC")[
        "KeyMetadata"
    ]["KeyId"]
    boto3_import(kms, hmac_id, os.urandom(64), "RSAES_OAEP_SHA_1",
                 ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")  # fmt: skip
    mac = kms.generate_mac(KeyId=hmac_id, Message=b"m", MacAlgorithm="HMAC_SHA_512")["Mac"]
    assert kms.verify_mac(KeyId=hmac_id, Message=b"m", MacAlgorithm="HMAC_SHA_512", Mac=mac)[
        "MacValid"
    ]
    ec_id = kms.create_key(Origin="EXTERNAL", KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY")[
        "KeyMetadata"
    ]["KeyId"]
    ec_private = ec.generate_private_key(ec.SECP384R1())
    try:
        boto3_import(kms, ec_id, pkcs8(ec_private), "RSA_AES_KEY_WRAP_SHA_1",
                     ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")  # fmt: skip
    except ClientError as exc:  # NSS softokn cannot unwrap EC keys from PKCS#8
        assert exc.response["Error"]["Code"] == "UnsupportedOperationException"
        pytest.skip(exc.response["Error"]["Message"])
    signature = kms.sign(KeyId=ec_id, Message=b"m", SigningAlgorithm="ECDSA_SHA_384")["Signature"]
    ec_private.public_key().verify(signature, b"m", ec.ECDSA(hashes.SHA384()))


def openssl(*args: str) -> None:
    executable = shutil.which("openssl")
    if executable is None:
        pytest.skip("openssl is not installed (make deps installs it)")
    result = subprocess.run([executable, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_1", "RSA_AES_KEY_WRAP_SHA_1"])
def test_aws_cli_and_openssl_as_the_aws_guide_shows(
    server: Server, tmp_path: Path, algorithm: str
) -> None:
    """The developer guide's steps: aws-cli for the API, openssl for the wrapping."""
    key_id = aws(server, "create-key", "--origin", "EXTERNAL")["KeyMetadata"]["KeyId"]
    params = aws(
        server, "get-parameters-for-import", "--key-id", key_id,
        "--wrapping-algorithm", algorithm, "--wrapping-key-spec", "RSA_3072",
    )  # fmt: skip
    public, token = tmp_path / "WrappingPublicKey.bin", tmp_path / "ImportToken.bin"
    public.write_bytes(base64.b64decode(params["PublicKey"]))
    token.write_bytes(base64.b64decode(params["ImportToken"]))
    material, encrypted = tmp_path / "PlaintextKeyMaterial.bin", tmp_path / "Encrypted.bin"
    openssl("rand", "-out", str(material), "32")
    oaep = ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha1", "-pkeyopt",
            "rsa_mgf1_md:sha1", "-inkey", str(public), "-keyform", "DER", "-pubin"]  # fmt: skip
    if algorithm == "RSAES_OAEP_SHA_1":
        openssl("pkeyutl", "-encrypt", "-in", str(material), "-out", str(encrypted), *oaep)
    else:
        aes, aes_wrapped, wrapped = (tmp_path / n for n in ("aes.bin", "aes.enc", "key.enc"))
        openssl("rand", "-out", str(aes), "32")
        openssl("enc", "-id-aes256-wrap-pad", "-K", aes.read_bytes().hex(), "-iv", "A65959A6",
                "-in", str(material), "-out", str(wrapped))  # fmt: skip
        openssl("pkeyutl", "-encrypt", "-in", str(aes), "-out", str(aes_wrapped), *oaep)
        encrypted.write_bytes(aes_wrapped.read_bytes() + wrapped.read_bytes())
    aws(
        server, "import-key-material", "--key-id", key_id,
        "--encrypted-key-material", f"fileb://{encrypted}", "--import-token", f"fileb://{token}",
        "--expiration-model", "KEY_MATERIAL_DOES_NOT_EXPIRE",
    )  # fmt: skip
    kms = server.client()
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"guide")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"guide"
    # The material is the user's: it opens our ciphertext format outside the token too.
    parsed = decode(blob)
    aad = parsed.header + canonical(None)
    assert AESGCM(material.read_bytes()).decrypt(parsed.iv, parsed.body, aad) == b"guide"


def test_rotation_to_new_imported_material_over_the_wire(server: Server) -> None:
    kms = server.client()
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    never = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
    first = boto3_import(kms, key_id, os.urandom(32), "RSAES_OAEP_SHA_1", **never)
    old = kms.encrypt(KeyId=key_id, Plaintext=b"old")["CiphertextBlob"]
    second = boto3_import(
        kms, key_id, os.urandom(32), "RSAES_OAEP_SHA_1", ImportType="NEW_KEY_MATERIAL",
        KeyMaterialDescription="rotated in", **never,
    )  # fmt: skip
    listed = kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")
    assert [r["KeyMaterialState"] for r in listed["Rotations"]] == ["CURRENT", "PENDING_ROTATION"]
    kms.rotate_key_on_demand(KeyId=key_id)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["CurrentKeyMaterialId"] == second["KeyMaterialId"] != first["KeyMaterialId"]
    (rotation,) = kms.list_key_rotations(KeyId=key_id)["Rotations"]
    assert rotation["RotationType"] == "ON_DEMAND" and isinstance(
        rotation["RotationDate"], dt.datetime
    )
    assert rotation["KeyMaterialDescription"] == "rotated in"
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"old"
    with pytest.raises(ClientError) as caught:
        kms.rotate_key_on_demand(KeyId=key_id)
    assert error_code(caught) == "KMSInvalidStateException"


def test_audit_records_never_hold_the_token_or_the_material(server: Server) -> None:
    kms = server.client()
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
    )
    encrypted = wrap(params["PublicKey"], "RSAES_OAEP_SHA_1", os.urandom(32))
    kms.import_key_material(
        KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=encrypted,
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )  # fmt: skip
    server.audit.flush()
    raw = server.audit.path.read_bytes()
    for secret in (params["ImportToken"], encrypted):
        assert base64.b64encode(secret) not in raw and secret not in raw
    records = [json.loads(line) for line in raw.decode().splitlines()]
    mine = {
        r["eventName"]: r["requestParameters"]
        for r in records
        if r.get("requestParameters", {}).get("KeyId") == key_id
    }
    assert mine["GetParametersForImport"]["WrappingAlgorithm"] == "RSAES_OAEP_SHA_1"
    assert set(mine["ImportKeyMaterial"]) == {"KeyId", "ExpirationModel"}
