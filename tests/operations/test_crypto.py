"""Encrypt, Decrypt, ReEncrypt, data keys and random: behaviour and bad input."""

from __future__ import annotations

import pytest

from hsmkms.errors import (
    IncorrectKeyException,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    KMSError,
    NotFoundException,
    ValidationException,
)
from hsmkms.keys import blob
from hsmkms.library import KeyManager
from hsmkms.token.templates import key_uuid_bytes

CTX = {"purpose": "test", "tenant": "a"}


def encrypt(
    km: KeyManager, key_id: str, data: bytes = b"secret", ctx: dict[str, str] | None = CTX
) -> bytes:
    out: bytes = km.encrypt(key_id=key_id, plaintext=data, encryption_context=ctx)["CiphertextBlob"]
    return out


def test_round_trip_names_the_key_and_algorithm(km: KeyManager, key_id: str) -> None:
    out = km.encrypt(key_id=key_id, plaintext=b"p" * 4096, encryption_context=CTX)
    arn = f"arn:aws:kms:us-east-1:111122223333:key/{key_id}"
    assert out["KeyId"] == arn and out["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    back = km.decrypt(
        ciphertext_blob=out["CiphertextBlob"], encryption_context=dict(reversed(CTX.items()))
    )
    assert back == {
        "KeyId": arn,
        "Plaintext": b"p" * 4096,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }


def test_blob_layout_matches_the_design(km: KeyManager, key_id: str) -> None:
    data = encrypt(km, key_id, b"12345")
    parsed = blob.decode(data)
    assert data[0] == blob.FORMAT_AES_GCM_V1
    assert parsed.key_uuid == key_uuid_bytes(key_id)
    assert parsed.version == 1
    assert len(parsed.iv) == 12
    assert len(data) == 1 + 16 + 4 + 12 + 5 + 16
    assert encrypt(km, key_id, b"12345") != data  # fresh IV every time


@pytest.mark.parametrize(
    "ctx",
    [None, {}, {"purpose": "test"}, {"purpose": "test", "tenant": "b"}, {**CTX, "extra": "x"}],
)
def test_wrong_encryption_context_fails(
    km: KeyManager, key_id: str, ctx: dict[str, str] | None
) -> None:
    data = encrypt(km, key_id)
    with pytest.raises(InvalidCiphertextException):
        km.decrypt(ciphertext_blob=data, encryption_context=ctx)


def test_context_encoding_is_unambiguous(km: KeyManager, key_id: str) -> None:
    data = encrypt(km, key_id, ctx={"a": "bc"})
    with pytest.raises(InvalidCiphertextException):
        km.decrypt(ciphertext_blob=data, encryption_context={"ab": "c"})


def test_every_flipped_bit_is_detected(km: KeyManager, key_id: str) -> None:
    data = encrypt(km, key_id, b"flip me")
    for index in range(len(data)):
        for bit in (0x01, 0x80):
            tampered = bytearray(data)
            tampered[index] ^= bit
            with pytest.raises(KMSError) as caught:
                km.decrypt(ciphertext_blob=bytes(tampered), encryption_context=CTX)
            assert isinstance(caught.value, InvalidCiphertextException), (index, bit)


def test_truncated_or_extended_blob_fails(km: KeyManager, key_id: str) -> None:
    data = encrypt(km, key_id)
    for bad in (data[:-1], data + b"\0", data[:20], b"\xa1"):
        with pytest.raises(InvalidCiphertextException):
            km.decrypt(ciphertext_blob=bad, encryption_context=CTX)


def test_blob_moved_to_another_key_fails(km: KeyManager, key_id: str) -> None:
    other = km.create_key()["KeyMetadata"]["KeyId"]
    data = bytearray(encrypt(km, key_id))
    data[1:17] = key_uuid_bytes(other)
    with pytest.raises(InvalidCiphertextException):
        km.decrypt(ciphertext_blob=bytes(data), encryption_context=CTX)


def test_blob_of_an_unknown_key_fails(km: KeyManager, key_id: str) -> None:
    data = bytearray(encrypt(km, key_id))
    data[1:17] = bytes(16)
    with pytest.raises(InvalidCiphertextException):
        km.decrypt(ciphertext_blob=bytes(data), encryption_context=CTX)


def test_decrypt_with_the_wrong_key_id_is_incorrect_key(km: KeyManager, key_id: str) -> None:
    other = km.create_key()["KeyMetadata"]["KeyId"]
    data = encrypt(km, key_id)
    with pytest.raises(IncorrectKeyException):
        km.decrypt(ciphertext_blob=data, encryption_context=CTX, key_id=other)
    assert km.decrypt(ciphertext_blob=data, encryption_context=CTX, key_id=key_id)["Plaintext"]


@pytest.mark.parametrize("size", [0, 4097])
def test_plaintext_size_limits(km: KeyManager, key_id: str, size: int) -> None:
    with pytest.raises(ValidationException, match="plaintext"):
        km.encrypt(key_id=key_id, plaintext=b"x" * size)


def test_oversized_ciphertext_is_a_validation_error(km: KeyManager) -> None:
    with pytest.raises(ValidationException, match="ciphertextBlob"):
        km.decrypt(ciphertext_blob=b"x" * 6145)


def test_non_string_context_is_rejected(km: KeyManager, key_id: str) -> None:
    with pytest.raises(ValidationException):
        km.encrypt(key_id=key_id, plaintext=b"x", encryption_context={"a": 1})  # type: ignore[dict-item]


def test_asymmetric_algorithm_on_symmetric_key_is_wrong_usage(km: KeyManager, key_id: str) -> None:
    with pytest.raises(InvalidKeyUsageException):
        km.encrypt(key_id=key_id, plaintext=b"x", encryption_algorithm="RSAES_OAEP_SHA_256")


@pytest.mark.parametrize(
    "bad_id",
    [
        "not-a-key",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "alias/missing",
    ],
)
def test_unknown_keys_are_not_found(km: KeyManager, bad_id: str) -> None:
    with pytest.raises(NotFoundException):
        km.encrypt(key_id=bad_id, plaintext=b"x")


def test_key_in_another_region_or_account_is_not_found(km: KeyManager, key_id: str) -> None:
    for arn in (
        f"arn:aws:kms:eu-west-1:111122223333:key/{key_id}",
        f"arn:aws:kms:us-east-1:999999999999:key/{key_id}",
    ):
        with pytest.raises(NotFoundException):
            km.encrypt(key_id=arn, plaintext=b"x")


def test_re_encrypt_moves_between_keys_and_contexts(km: KeyManager, key_id: str) -> None:
    other = km.create_key()["KeyMetadata"]["KeyId"]
    data = encrypt(km, key_id, b"move me")
    out = km.re_encrypt(
        ciphertext_blob=data,
        source_encryption_context=CTX,
        destination_key_id=other,
        destination_encryption_context={"new": "ctx"},
    )
    assert out["SourceKeyId"].endswith(key_id) and out["KeyId"].endswith(other)
    assert "Plaintext" not in out
    back = km.decrypt(ciphertext_blob=out["CiphertextBlob"], encryption_context={"new": "ctx"})
    assert back["Plaintext"] == b"move me"
    with pytest.raises(InvalidCiphertextException):
        km.re_encrypt(ciphertext_blob=data, destination_key_id=other)  # source context missing


@pytest.mark.parametrize(("spec", "size"), [("AES_128", 16), ("AES_256", 32)])
def test_generate_data_key_by_spec(km: KeyManager, key_id: str, spec: str, size: int) -> None:
    out = km.generate_data_key(key_id=key_id, key_spec=spec, encryption_context=CTX)
    assert len(out["Plaintext"]) == size
    back = km.decrypt(ciphertext_blob=out["CiphertextBlob"], encryption_context=CTX)
    assert back["Plaintext"] == out["Plaintext"]


@pytest.mark.parametrize("count", [1, 64, 1024])
def test_generate_data_key_by_length(km: KeyManager, key_id: str, count: int) -> None:
    out = km.generate_data_key(key_id=key_id, number_of_bytes=count)
    assert len(out["Plaintext"]) == count
    assert km.decrypt(ciphertext_blob=out["CiphertextBlob"])["Plaintext"] == out["Plaintext"]


def test_generate_data_key_without_plaintext(km: KeyManager, key_id: str) -> None:
    out = km.generate_data_key_without_plaintext(key_id=key_id, key_spec="AES_256")
    assert set(out) == {"CiphertextBlob", "KeyId"}
    assert len(km.decrypt(ciphertext_blob=out["CiphertextBlob"])["Plaintext"]) == 32


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"key_spec": "AES_256", "number_of_bytes": 32},
        {"key_spec": "AES_512"},
        {"number_of_bytes": 0},
        {"number_of_bytes": 1025},
    ],
)
def test_generate_data_key_bad_input(
    km: KeyManager, key_id: str, kwargs: dict[str, object]
) -> None:
    with pytest.raises(ValidationException):
        km.generate_data_key(key_id=key_id, **kwargs)  # type: ignore[arg-type]


def test_generate_random(km: KeyManager) -> None:
    assert len(km.generate_random(number_of_bytes=1024)["Plaintext"]) == 1024
    for bad in (0, 1025, None, "8"):
        with pytest.raises(ValidationException):
            km.generate_random(number_of_bytes=bad)  # type: ignore[arg-type]
