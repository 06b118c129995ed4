"""XKS ciphertexts cross-checked with `cryptography`: raw AES-256-GCM under the key,
12-byte IVs, 16-byte tags, the specification's AAD construction and CDIV.

Token keys cannot be read, so two kinds of check: the structure of what a token
key produces and that the token authenticates exactly the specification's AAD;
and, for a key whose value the test itself put into the token, that
`cryptography` decrypts what the proxy encrypted and the proxy decrypts what
`cryptography` encrypted.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, KeyType, ObjectClass

from hsmkms.errors import InvalidCiphertextException
from hsmkms.token import MaterialRef
from hsmkms.token.templates import secret_key_template
from tests.support.xks_support import XksServer, b64, unb64


def spec_aad(aad: bytes, metadata: bytes) -> bytes:
    """Written from the specification's text, independently of hsmkms's code."""
    return len(aad).to_bytes(2, "big") + aad + len(metadata).to_bytes(1, "big") + metadata


def sha256(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


@pytest.fixture
def known_key(xks_server: XksServer) -> Iterator[tuple[str, bytes]]:
    """An hsmkms key whose token object holds a value the test knows."""
    km = xks_server.km
    key_id: str = km.create_key(description="known value")["KeyMetadata"]["KeyId"]
    ref = MaterialRef(key_id, 1)
    value = os.urandom(32)
    km.hsm.destroy(ref)
    template = {
        **secret_key_template(ref, encrypt=True, sign=False),
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.AES,
        Attribute.VALUE: value,
    }
    km.hsm.pool.run(lambda pooled: pooled.session.create_object(template))
    yield key_id, value
    km.hsm.destroy(ref)


def test_cryptography_decrypts_what_the_proxy_encrypted(
    xks_server: XksServer, known_key: tuple[str, bytes]
) -> None:
    key_id, value = known_key
    plaintext, aad = os.urandom(32), b"project=nile,department=marketing"
    response = xks_server.encrypt(key_id, plaintext, aad)
    assert response.status_code == 200, response.text
    out = response.json()
    iv, tag, metadata = (unb64(out[f]) for f in ("initializationVector", "authenticationTag",
                                                  "ciphertextMetadata"))  # fmt: skip
    ciphertext = unb64(out["ciphertext"])
    gcm = AESGCM(value)
    assert gcm.decrypt(iv, ciphertext + tag, spec_aad(aad, metadata)) == plaintext
    for wrong in (aad, aad + metadata, spec_aad(aad, b""), spec_aad(b"", metadata)):
        with pytest.raises(InvalidTag):
            gcm.decrypt(iv, ciphertext + tag, wrong)


def test_the_proxy_decrypts_what_cryptography_encrypted(
    xks_server: XksServer, known_key: tuple[str, bytes]
) -> None:
    key_id, value = known_key
    plaintext, aad, iv = b"made in software", b"ctx", os.urandom(12)
    metadata = struct.pack(">BI", 1, 1)
    sealed = AESGCM(value).encrypt(iv, plaintext, spec_aad(aad, metadata))
    fields = {"ciphertext": b64(sealed[:-16]), "authenticationTag": b64(sealed[-16:]),
              "initializationVector": b64(iv), "ciphertextMetadata": b64(metadata)}  # fmt: skip
    assert unb64(xks_server.decrypt(key_id, fields, aad).json()["plaintext"]) == plaintext
    assert xks_server.decrypt(key_id, fields, b"other").status_code == 400


def test_structure_cdiv_and_the_exact_aad(xks_server: XksServer) -> None:
    key_id = xks_server.km.create_key()["KeyMetadata"]["KeyId"]
    plaintext, aad = os.urandom(32), os.urandom(40)
    out = xks_server.encrypt(
        key_id, plaintext, aad, ciphertextDataIntegrityValueAlgorithm="SHA_256"
    ).json()
    ciphertext, iv, tag, metadata, value = (
        unb64(out[f]) for f in ("ciphertext", "initializationVector", "authenticationTag",
                                "ciphertextMetadata", "ciphertextDataIntegrityValue")
    )  # fmt: skip
    assert (len(ciphertext), len(iv), len(tag), len(metadata)) == (32, 12, 16, 5)
    assert ciphertext != plaintext
    assert value == sha256(aad + metadata + iv + ciphertext + tag)
    hsm, ref = xks_server.km.hsm, MaterialRef(key_id, 1)
    assert hsm.gcm_decrypt(ref, iv, spec_aad(aad, metadata), ciphertext + tag) == plaintext
    for wrong in (aad, aad + metadata, b"", spec_aad(aad, b""), spec_aad(aad + b"x", metadata)):
        with pytest.raises(InvalidCiphertextException):
            hsm.gcm_decrypt(ref, iv, wrong, ciphertext + tag)


def test_cdiv_without_aad_matches_the_spec_example_shape(xks_server: XksServer) -> None:
    key_id = xks_server.km.create_key()["KeyMetadata"]["KeyId"]
    out = xks_server.encrypt(
        key_id, b"Hello World!", None, ciphertextDataIntegrityValueAlgorithm="SHA_256"
    ).json()
    parts = b"".join(unb64(out[f]) for f in ("ciphertextMetadata", "initializationVector",
                                              "ciphertext", "authenticationTag"))  # fmt: skip
    assert unb64(out["ciphertextDataIntegrityValue"]) == sha256(parts)


def test_the_spec_cdiv_example() -> None:
    """Appendix C's worked example, through hsmkms's CDIV function."""
    from hsmkms.xks_spec import cdiv

    value = cdiv(
        b"project=nile,department=marketing",
        b"key_version=1",
        unb64("HMrlRw85cAJUd5Ax"),
        unb64("ghxkK1txeDNn3q8Y"),
        unb64("vBxN2ncH1oEkR8WVXpmyYQ=="),
    )
    assert b64(value) == "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="


def test_ivs_are_fresh(xks_server: XksServer) -> None:
    key_id = xks_server.km.create_key()["KeyMetadata"]["KeyId"]
    ivs = {xks_server.encrypt(key_id, b"same").json()["initializationVector"] for _ in range(40)}
    assert len(ivs) == 40
