from hsmkms.library import KeyManager


def test_encrypt_decrypt_round_trip(km: KeyManager, key_id: str) -> None:
    out = km.encrypt(key_id=key_id, plaintext=b"hello", encryption_context={"a": "b"})
    back = km.decrypt(ciphertext_blob=out["CiphertextBlob"], encryption_context={"a": "b"})
    assert back["Plaintext"] == b"hello"
    assert back["KeyId"] == out["KeyId"]
