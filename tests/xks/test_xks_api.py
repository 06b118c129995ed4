"""The XKS proxy API against a real token over HTTP: every operation, key states and
usages, and every error the specification names, with its HTTP status."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.xks_support import KMS_KEY_ARN, XksServer, b64, error_name, metadata, unb64


def _key(xks: XksServer, **kwargs: Any) -> str:
    key: str = xks.km.create_key(**kwargs)["KeyMetadata"]["KeyId"]
    return key


@pytest.fixture
def key(xks_server: XksServer) -> str:
    return _key(xks_server)


def test_health_reports_the_token(xks_server: XksServer) -> None:
    body = {"requestMetadata": {"kmsRequestId": "r-1", "kmsOperation": "KmsHealthCheck"}}
    response = xks_server.post("health", body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    health = response.json()
    assert health["xksProxyFleetSize"] == 1
    assert health["xksProxyVendor"] == "hsmkms"
    assert health["ekmVendor"] == xks_server.km.hsm.info.manufacturer  # "SoftHSM project"
    [ekm] = health["ekmFleetDetails"]
    assert ekm["healthStatus"] == "ACTIVE"
    assert ekm["id"].startswith(xks_server.km.hsm.token_label)
    assert xks_server.km.hsm.info.model in ekm["model"]


@pytest.mark.parametrize("body", [{}, {"requestMetadata": {}}, {"requestMetadata": "x"},
                                  {"requestMetadata": {"kmsRequestId": "r"}}])  # fmt: skip
def test_health_needs_its_request_metadata(xks_server: XksServer, body: Any) -> None:
    assert error_name(xks_server.post("health", body)) == (400, "ValidationException")


def test_metadata_by_key_id_and_by_alias(xks_server: XksServer, key: str) -> None:
    xks_server.km.create_alias(alias_name=f"alias/xks-{key[:8]}", target_key_id=key)
    for name in (key, f"xks-{key[:8]}"):
        body = {"requestMetadata": metadata("CreateKey")}
        response = xks_server.post(f"keys/{name}/metadata", body)
        assert response.status_code == 200
        assert response.json() == {
            "keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"
        }  # fmt: skip


def test_round_trip_with_and_without_aad(xks_server: XksServer, key: str) -> None:
    for aad in (None, b"project=nile,department=marketing", b"\x00" * 8192):
        response = xks_server.encrypt(key, b"Hello World!", aad)
        assert response.status_code == 200, response.text
        encrypted = response.json()
        assert set(encrypted) == {"ciphertext", "ciphertextMetadata", "initializationVector",
                                  "authenticationTag"}  # fmt: skip
        decrypted = xks_server.decrypt(key, encrypted, aad)
        assert decrypted.status_code == 200
        assert unb64(decrypted.json()["plaintext"]) == b"Hello World!"


def test_large_plaintext(xks_server: XksServer, key: str) -> None:
    data = bytes(range(256)) * 17  # 4352 bytes: more than the 4300 the spec requires
    encrypted = xks_server.encrypt(key, data, b"a" * 8192).json()
    assert len(unb64(encrypted["ciphertext"])) == len(data)
    assert unb64(xks_server.decrypt(key, encrypted, b"a" * 8192).json()["plaintext"]) == data


def test_decrypt_refuses_what_does_not_authenticate(xks_server: XksServer, key: str) -> None:
    aad = b"project=nile"
    encrypted = xks_server.encrypt(key, b"secret data", aad).json()
    other = _key(xks_server)

    def flip(field: str) -> dict[str, str]:
        raw = bytearray(unb64(encrypted[field]))
        raw[-1] ^= 1
        return {**encrypted, field: b64(bytes(raw))}

    cases = [
        (key, encrypted, None),  # AAD missing
        (key, encrypted, b"project=blue"),  # another AAD
        (key, encrypted, aad + unb64(encrypted["ciphertextMetadata"])),  # metadata moved in
        (other, encrypted, aad),  # another key
        *[(key, flip(f), aad) for f in ("ciphertext", "initializationVector",
                                         "authenticationTag", "ciphertextMetadata")],
        (key, {**encrypted, "authenticationTag": b64(b"t" * 12)}, aad),  # short tag
        (key, {**encrypted, "initializationVector": b64(b"i" * 8)}, aad),  # bad IV size
        (key, {k: v for k, v in encrypted.items() if k != "ciphertextMetadata"}, aad),
    ]  # fmt: skip
    for target, fields, wrong_aad in cases:
        response = xks_server.decrypt(target, fields, wrong_aad)
        assert error_name(response) == (400, "InvalidCiphertextException"), (fields, wrong_aad)
    assert xks_server.decrypt(key, encrypted, aad).status_code == 200


def test_rotated_keys_decrypt_old_ciphertexts(xks_server: XksServer, key: str) -> None:
    before = xks_server.encrypt(key, b"v1 data").json()
    xks_server.km.rotate_key_on_demand(key_id=key)
    xks_server.km.context.changed()
    after = xks_server.encrypt(key, b"v2 data").json()
    assert unb64(before["ciphertextMetadata"]) == b"\x01\x00\x00\x00\x01"
    assert unb64(after["ciphertextMetadata"]) == b"\x01\x00\x00\x00\x02"
    assert unb64(xks_server.decrypt(key, before).json()["plaintext"]) == b"v1 data"
    assert unb64(xks_server.decrypt(key, after).json()["plaintext"]) == b"v2 data"


def test_disabled_and_deleted_keys(xks_server: XksServer, key: str) -> None:
    km = xks_server.km
    encrypted = xks_server.encrypt(key, b"data").json()
    km.disable_key(key_id=key)
    meta = xks_server.post(f"keys/{key}/metadata", {"requestMetadata": metadata("DescribeKey")})
    assert meta.json()["keyStatus"] == "DISABLED"
    assert error_name(xks_server.encrypt(key, b"data")) == (400, "InvalidStateException")
    assert error_name(xks_server.decrypt(key, encrypted)) == (400, "InvalidStateException")
    km.enable_key(key_id=key)
    km.schedule_key_deletion(key_id=key, pending_window_in_days=7)
    meta = xks_server.post(f"keys/{key}/metadata", {"requestMetadata": metadata("DescribeKey")})
    assert meta.json()["keyStatus"] == "DISABLED"
    assert error_name(xks_server.decrypt(key, encrypted)) == (400, "InvalidStateException")
    for response in (
        xks_server.post("keys/no_such_key/metadata", {"requestMetadata": metadata()}),
        xks_server.encrypt("no_such_key", b"data"),
        xks_server.decrypt("no_such_key", encrypted),
    ):
        assert error_name(response) == (404, "KeyNotFoundException")
    unknown = "00000000-0000-4000-8000-000000000000"
    assert error_name(xks_server.encrypt(unknown, b"x")) == (404, "KeyNotFoundException")


def test_key_usage_limits(xks_server: XksServer) -> None:
    km = xks_server.km
    keys = {usage: _key(xks_server) for usage in ("ENCRYPT", "DECRYPT", "NONE")}
    # Ciphertexts made while the keys could do both, for the decrypt-only case.
    made = {usage: xks_server.encrypt(k, b"data").json() for usage, k in keys.items()}
    for usage, key_id in keys.items():
        km.context.changed()
        from hsmkms.xks.operations import set_xks_key_usage

        set_xks_key_usage(km.context, key_id=key_id, key_usage=[] if usage == "NONE" else [usage])
    usage_error = (400, "InvalidKeyUsageException")
    meta = {u: xks_server.post(f"keys/{k}/metadata", {"requestMetadata": metadata()}).json()
            for u, k in keys.items()}  # fmt: skip
    assert [meta[u]["keyUsage"] for u in keys] == [["ENCRYPT"], ["DECRYPT"], []]
    # encrypt-only: encrypts, but neither decrypts nor gives a CDIV (which needs a decrypt)
    assert xks_server.encrypt(keys["ENCRYPT"], b"data").status_code == 200
    assert error_name(xks_server.decrypt(keys["ENCRYPT"], made["ENCRYPT"])) == usage_error
    cdiv = {"ciphertextDataIntegrityValueAlgorithm": "SHA_256"}
    assert error_name(xks_server.encrypt(keys["ENCRYPT"], b"data", **cdiv)) == usage_error
    # decrypt-only
    assert error_name(xks_server.encrypt(keys["DECRYPT"], b"data")) == usage_error
    assert xks_server.decrypt(keys["DECRYPT"], made["DECRYPT"]).status_code == 200
    # neither
    assert error_name(xks_server.encrypt(keys["NONE"], b"data", b"aad")) == usage_error
    assert error_name(xks_server.decrypt(keys["NONE"], made["NONE"])) == usage_error


def test_asymmetric_keys_are_not_xks_keys(xks_server: XksServer) -> None:
    key = _key(xks_server, key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY")
    meta = xks_server.post(f"keys/{key}/metadata", {"requestMetadata": metadata()}).json()
    assert meta == {"keySpec": "ECC_NIST_P256", "keyUsage": ["SIGN", "VERIFY"],
                    "keyStatus": "ENABLED"}  # fmt: skip
    assert error_name(xks_server.encrypt(key, b"x")) == (400, "InvalidKeyUsageException")


@pytest.mark.parametrize(
    "change",
    [
        {"plaintext": None},
        {"plaintext": "not base64!"},
        {"plaintext": 42},
        {"encryptionAlgorithm": None},
        {"requestMetadata": None},
        {"requestMetadata": {"awsPrincipalArn": "a", "kmsOperation": "Encrypt"}},
        {"requestMetadata": {**metadata(), "kmsKeyArn": None}},
        {"requestMetadata": {**metadata(), "kmsViaService": 3}},
        {"ciphertextDataIntegrityValueAlgorithm": "MD5"},
    ],
)
def test_encrypt_validation(xks_server: XksServer, key: str, change: dict[str, Any]) -> None:
    body: dict[str, Any] = {
        "requestMetadata": metadata(), "plaintext": b64(b"p"), "encryptionAlgorithm": "AES_GCM"
    }  # fmt: skip
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    assert error_name(xks_server.post(f"keys/{key}/encrypt", body)) == (400, "ValidationException")


def test_unknown_metadata_fields_and_operations_are_accepted(
    xks_server: XksServer, key: str
) -> None:
    meta = metadata("BulkEncrypt", awsSourceVpc="vpc-1", sourceIdentity="someone")
    body = {"requestMetadata": meta, "plaintext": b64(b"p"), "encryptionAlgorithm": "AES_GCM"}
    assert xks_server.post(f"keys/{key}/encrypt", body).status_code == 200


def test_unsupported_requests(xks_server: XksServer, key: str) -> None:
    body = {"requestMetadata": metadata(), "plaintext": b64(b"p"), "encryptionAlgorithm": "RSA"}
    unsupported = (501, "UnsupportedOperationException")
    assert error_name(xks_server.post(f"keys/{key}/encrypt", body)) == unsupported
    assert error_name(xks_server.encrypt(key, b"p" * 8193)) == unsupported
    assert error_name(xks_server.post(f"keys/{key}/metadata", b"{not json")) == (
        400, "ValidationException"
    )  # fmt: skip
    nested = xks_server.post(f"keys/{key}/metadata", b"[" * 5000)  # json: RecursionError
    assert error_name(nested) == (400, "ValidationException")
    lone = b'{"requestMetadata": {"awsPrincipalArn": "\\ud800"}}'  # no UTF-8 carries it
    assert error_name(xks_server.post(f"keys/{key}/metadata", lone)) == (400, "ValidationException")


@pytest.mark.parametrize(
    "path",
    ["/nope/kms/xks/v1/health", "/xks/extra/kms/xks/v1/health", "/xks/kms/xks/v1/keys/k/sign",
     "/xks/kms/xks/v2/health", "/xks/kms/xks/v1/keys/a%2Fb/metadata", "/kms/xks/v1/health"],
)  # fmt: skip
def test_invalid_uri_paths(xks_server: XksServer, path: str) -> None:
    response = xks_server.post("", {"requestMetadata": metadata()}, path=path)
    assert error_name(response) == (404, "InvalidUriPathException")


def test_get_is_not_allowed(xks_server: XksServer, key: str) -> None:
    for route in ("health", f"keys/{key}/metadata", f"keys/{key}/encrypt"):
        response = xks_server.post(route, b"", method="GET")
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"


def test_every_call_is_audited_without_data(xks_server: XksServer, key: str) -> None:
    secret_text = b"do not log this plaintext"
    meta = metadata("GenerateDataKey", kmsViaService="ebs")
    body = {
        "requestMetadata": meta,
        "plaintext": b64(secret_text),
        "encryptionAlgorithm": "AES_GCM",
        "additionalAuthenticatedData": b64(b"aad-not-logged"),
    }
    encrypted = xks_server.post(f"keys/{key}/encrypt", body).json()
    xks_server.audit.flush()
    lines = xks_server.audit.path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    [record] = [r for r in records
                if r["requestParameters"].get("requestMetadata") == meta]  # fmt: skip
    assert record["eventSource"] == "kms-xks-proxy" and record["eventName"] == "Encrypt"
    assert record["userIdentity"]["keyStore"] == "/xks/kms/xks/v1"
    assert record["resources"][0]["ARN"].endswith(key)
    assert meta["kmsRequestId"] in lines[records.index(record)]
    for forbidden in (b64(secret_text), encrypted["ciphertext"], b64(b"aad-not-logged")):
        assert forbidden not in "".join(lines)
    assert record["requestParameters"]["requestMetadata"]["kmsKeyArn"] == KMS_KEY_ARN
