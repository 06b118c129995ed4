"""Asymmetric and HMAC keys, cross-checked against an independent implementation
(`cryptography`): every spec x algorithm x message type, plus bad input."""

from __future__ import annotations

import hashlib
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from hsmkms.errors import (
    DisabledException,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    KMSInvalidMacException,
    KMSInvalidSignatureException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.keys.specs import SIGNING_ALGORITHMS, SPECS
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.store.model import KeySpec
from hsmkms.token import Hsm, MaterialRef
from tests.conftest import assert_local

HASHES = {"SHA256": hashes.SHA256(), "SHA384": hashes.SHA384(), "SHA512": hashes.SHA512()}
MESSAGE = b"the quick brown fox jumps over the lazy dog"
SIGNING_SPECS = [s for s in SPECS if SPECS[s].signing and s is not KeySpec.SYMMETRIC_DEFAULT]


def needs(spec: str, usage: str) -> pytest.MarkDecorator:
    """The case skips where the token cannot hold a key of this spec and usage."""
    return pytest.mark.needs_key_spec(spec, usage)


def spec_cases(usage: str, *specs: str) -> list[Any]:
    return [pytest.param(spec, marks=needs(spec, usage), id=spec) for spec in specs]


def spec_usage_cases(*cases: tuple[Any, ...]) -> list[Any]:
    """Cases that start with (spec, usage, ...)."""
    return [pytest.param(*case, marks=needs(case[0], case[1])) for case in cases]


SIGN_CASES = [
    pytest.param(
        spec.value,
        name,
        message_type,
        id=f"{spec.value}-{name}-{message_type}",
        marks=needs(spec.value, "SIGN_VERIFY"),
    )
    for spec in SIGNING_SPECS
    for name in SPECS[spec].signing
    for message_type in (("RAW",) if name.startswith("ED25519") else ("RAW", "DIGEST"))
]


@cache
def _key(km_id: int, spec: str, usage: str, km: KeyManager) -> str:
    key_id: str = km.create_key(key_spec=spec, key_usage=usage)["KeyMetadata"]["KeyId"]
    return key_id


@pytest.fixture(scope="module")
def shared_km(hsm: Hsm, tmp_path_factory: pytest.TempPathFactory) -> KeyManager:
    """Key pairs are slow to make (RSA-4096): one manager and one key per spec for the module."""
    from hsmkms.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path_factory.mktemp("asym") / "db.sqlite")
    return KeyManager(Deployment(store, hsm, account_id="111122223333"), "us-east-1")


def key_for(km: KeyManager, spec: str, usage: str) -> str:
    """The module's key for spec (a test that may meet a token without it says so with
    `needs_key_spec`)."""
    return _key(id(km), spec, usage, km)


def public_key(km: KeyManager, key_id: str) -> Any:
    return serialization.load_der_public_key(km.get_public_key(key_id=key_id)["PublicKey"])


def software_verify(public: Any, algorithm: str, message: bytes, signature: bytes) -> None:
    spec = SIGNING_ALGORITHMS[algorithm]
    if spec.scheme == "eddsa":
        public.verify(signature, message)
    elif spec.scheme == "ecdsa":
        public.verify(signature, message, ec.ECDSA(HASHES[spec.hash]))
    elif spec.scheme == "pss":
        public.verify(
            signature,
            message,
            padding.PSS(padding.MGF1(HASHES[spec.hash]), spec.digest_bytes),
            HASHES[spec.hash],
        )
    else:
        public.verify(signature, message, padding.PKCS1v15(), HASHES[spec.hash])


@pytest.mark.parametrize(("spec", "algorithm", "message_type"), SIGN_CASES)
def test_signatures_cross_check(
    shared_km: KeyManager, spec: str, algorithm: str, message_type: str
) -> None:
    km = shared_km
    key_id = key_for(km, spec, "SIGN_VERIFY")
    hash_name = SIGNING_ALGORITHMS[algorithm].hash
    data = MESSAGE if message_type == "RAW" else hashlib.new(hash_name, MESSAGE).digest()
    out = km.sign(
        key_id=key_id, message=data, message_type=message_type, signing_algorithm=algorithm
    )
    assert out["SigningAlgorithm"] == algorithm and out["KeyId"].endswith(key_id)
    public = public_key(km, key_id)
    software_verify(public, algorithm, MESSAGE, out["Signature"])  # raises if invalid
    verified = km.verify(
        key_id=key_id,
        message=data,
        message_type=message_type,
        signature=out["Signature"],
        signing_algorithm=algorithm,
    )
    assert verified["SignatureValid"] is True
    with pytest.raises(KMSInvalidSignatureException):
        km.verify(
            key_id=key_id,
            message=data[:-1] + bytes([data[-1] ^ 1]),
            message_type=message_type,
            signature=out["Signature"],
            signing_algorithm=algorithm,
        )


@pytest.mark.parametrize(
    ("spec", "algorithm"),
    [
        pytest.param(s.value, a, id=f"{s.value}-{a}", marks=needs(s.value, "SIGN_VERIFY"))
        for s in SIGNING_SPECS
        for a in SPECS[s].signing
    ],
)
def test_signatures_made_by_cryptography_verify(
    shared_km: KeyManager, spec: str, algorithm: str, hsm: Hsm
) -> None:
    """The issue asks that a signature made by `cryptography` verify through Verify. Made
    with the KMS key that cannot be: its private half never leaves the token. So: a
    signature re-encoded by `cryptography` verifies, and one `cryptography` makes with
    any other key of the same type is rejected."""
    km = shared_km
    key_id = key_for(km, spec, "SIGN_VERIFY")
    signature = km.sign(key_id=key_id, message=MESSAGE, signing_algorithm=algorithm)["Signature"]
    scheme = SIGNING_ALGORITHMS[algorithm].scheme
    if scheme == "ecdsa":
        r, s = utils.decode_dss_signature(signature)
        signature = utils.encode_dss_signature(r, s)
        stranger = ec.generate_private_key(public_key(km, key_id).curve)
        forged = stranger.sign(MESSAGE, ec.ECDSA(HASHES[SIGNING_ALGORITHMS[algorithm].hash]))
    elif scheme == "eddsa":
        forged = ed25519.Ed25519PrivateKey.generate().sign(MESSAGE)
    else:
        bits = public_key(km, key_id).key_size
        stranger_rsa = rsa.generate_private_key(65537, bits)
        hash_algorithm = HASHES[SIGNING_ALGORITHMS[algorithm].hash]
        pad = (
            padding.PSS(padding.MGF1(hash_algorithm), hash_algorithm.digest_size)
            if scheme == "pss"
            else padding.PKCS1v15()
        )
        forged = stranger_rsa.sign(MESSAGE, pad, hash_algorithm)
    assert km.verify(
        key_id=key_id, message=MESSAGE, signature=signature, signing_algorithm=algorithm
    )["SignatureValid"]
    with pytest.raises(KMSInvalidSignatureException):
        km.verify(key_id=key_id, message=MESSAGE, signature=forged, signing_algorithm=algorithm)


@pytest.mark.parametrize("spec", spec_cases("ENCRYPT_DECRYPT", "RSA_2048", "RSA_3072", "RSA_4096"))
def test_rsa_oaep_cross_check(shared_km: KeyManager, spec: str) -> None:
    km = shared_km
    key_id = key_for(km, spec, "ENCRYPT_DECRYPT")
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    supported = meta["EncryptionAlgorithms"]
    assert "RSAES_OAEP_SHA_1" in supported
    public = public_key(km, key_id)
    bits = int(spec.split("_")[1])
    for algorithm, hash_algorithm in (
        ("RSAES_OAEP_SHA_1", hashes.SHA1()),
        ("RSAES_OAEP_SHA_256", hashes.SHA256()),
    ):
        limit = bits // 8 - 2 * hash_algorithm.digest_size - 2
        if algorithm not in supported:
            with pytest.raises(UnsupportedOperationException, match="CKM_RSA_PKCS_OAEP"):
                km.encrypt(key_id=key_id, plaintext=b"x", encryption_algorithm=algorithm)
            continue
        plaintext = bytes(range(256)) * (limit // 256) + bytes(limit % 256)
        ciphertext = public.encrypt(
            plaintext, padding.OAEP(padding.MGF1(hash_algorithm), hash_algorithm, None)
        )
        out = km.decrypt(ciphertext_blob=ciphertext, key_id=key_id, encryption_algorithm=algorithm)
        assert out["Plaintext"] == plaintext and out["EncryptionAlgorithm"] == algorithm
        ours = km.encrypt(key_id=key_id, plaintext=b"round trip", encryption_algorithm=algorithm)
        assert (
            km.decrypt(
                ciphertext_blob=ours["CiphertextBlob"],
                key_id=key_id,
                encryption_algorithm=algorithm,
            )["Plaintext"]
            == b"round trip"
        )
        with pytest.raises(ValidationException, match="cannot encrypt data larger than"):
            km.encrypt(key_id=key_id, plaintext=b"x" * (limit + 1), encryption_algorithm=algorithm)
        with pytest.raises(InvalidCiphertextException):
            km.decrypt(
                ciphertext_blob=ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]),
                key_id=key_id,
                encryption_algorithm=algorithm,
            )


def test_rsa_encryption_rules(shared_km: KeyManager) -> None:
    km = shared_km
    key_id = key_for(km, "RSA_2048", "ENCRYPT_DECRYPT")
    with pytest.raises(InvalidKeyUsageException):
        km.encrypt(key_id=key_id, plaintext=b"x")  # SYMMETRIC_DEFAULT on an RSA key
    with pytest.raises(ValidationException, match="EncryptionContext"):
        km.encrypt(
            key_id=key_id,
            plaintext=b"x",
            encryption_algorithm="RSAES_OAEP_SHA_1",
            encryption_context={"a": "b"},
        )
    blob = km.encrypt(key_id=key_id, plaintext=b"x", encryption_algorithm="RSAES_OAEP_SHA_1")[
        "CiphertextBlob"
    ]
    with pytest.raises(InvalidCiphertextException):
        km.decrypt(ciphertext_blob=blob)  # no KeyId: not a symmetric blob
    with pytest.raises(InvalidKeyUsageException):
        km.sign(key_id=key_id, message=b"x", signing_algorithm="RSASSA_PSS_SHA_256")
    with pytest.raises(InvalidKeyUsageException):
        km.generate_data_key(key_id=key_id, key_spec="AES_256")
    with pytest.raises(UnsupportedOperationException):
        km.enable_key_rotation(key_id=key_id)


def test_re_encrypt_between_rsa_and_symmetric(shared_km: KeyManager) -> None:
    km = shared_km
    rsa_key = key_for(km, "RSA_2048", "ENCRYPT_DECRYPT")
    symmetric = km.create_key()["KeyMetadata"]["KeyId"]
    rsa_blob = km.encrypt(
        key_id=rsa_key, plaintext=b"move", encryption_algorithm="RSAES_OAEP_SHA_1"
    )["CiphertextBlob"]
    moved = km.re_encrypt(
        ciphertext_blob=rsa_blob,
        source_key_id=rsa_key,
        source_encryption_algorithm="RSAES_OAEP_SHA_1",
        destination_key_id=symmetric,
    )
    assert moved["SourceEncryptionAlgorithm"] == "RSAES_OAEP_SHA_1"
    back = km.re_encrypt(
        ciphertext_blob=moved["CiphertextBlob"],
        destination_key_id=rsa_key,
        destination_encryption_algorithm="RSAES_OAEP_SHA_1",
    )
    assert (
        km.decrypt(
            ciphertext_blob=back["CiphertextBlob"],
            key_id=rsa_key,
            encryption_algorithm="RSAES_OAEP_SHA_1",
        )["Plaintext"]
        == b"move"
    )


@pytest.mark.parametrize("spec", ["HMAC_224", "HMAC_256", "HMAC_384", "HMAC_512"])
def test_hmac_keys(shared_km: KeyManager, spec: str) -> None:
    km = shared_km
    key_id = key_for(km, spec, "GENERATE_VERIFY_MAC")
    algorithm = f"HMAC_SHA_{spec.split('_')[1]}"
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert meta["MacAlgorithms"] == [algorithm] and "EncryptionAlgorithms" not in meta
    mac = km.generate_mac(key_id=key_id, message=MESSAGE, mac_algorithm=algorithm)["Mac"]
    assert len(mac) == int(spec.split("_")[1]) // 8
    assert mac == km.generate_mac(key_id=key_id, message=MESSAGE, mac_algorithm=algorithm)["Mac"]
    assert km.verify_mac(key_id=key_id, message=MESSAGE, mac_algorithm=algorithm, mac=mac)[
        "MacValid"
    ]
    for bad_message, bad_mac in (
        (MESSAGE + b"!", mac),
        (MESSAGE, mac[:-1] + bytes([mac[-1] ^ 1])),
        (MESSAGE, mac[:-1]),
    ):
        with pytest.raises(KMSInvalidMacException):
            km.verify_mac(key_id=key_id, message=bad_message, mac_algorithm=algorithm, mac=bad_mac)
    other = "HMAC_SHA_256" if algorithm != "HMAC_SHA_256" else "HMAC_SHA_384"
    with pytest.raises(InvalidKeyUsageException):
        km.generate_mac(key_id=key_id, message=MESSAGE, mac_algorithm=other)
    with pytest.raises(InvalidKeyUsageException):
        km.encrypt(key_id=key_id, plaintext=b"x")
    with pytest.raises(UnsupportedOperationException):
        km.get_public_key(key_id=key_id)


def test_hmac_keys_are_never_extractable(shared_km: KeyManager, hsm: Hsm) -> None:
    key_id = key_for(shared_km, "HMAC_256", "GENERATE_VERIFY_MAC")
    (fact,) = hsm.facts(MaterialRef(key_id, 1))
    assert fact.object_class == "SECRET_KEY"
    assert fact.sensitive and fact.never_extractable and not fact.extractable
    assert_local(hsm, fact.local)


@pytest.mark.parametrize(
    "spec", spec_cases("SIGN_VERIFY", "RSA_2048", "ECC_NIST_P256", "ECC_NIST_EDWARDS25519")
)
def test_key_pairs_keep_the_private_half_in_the_token(
    shared_km: KeyManager, hsm: Hsm, spec: str
) -> None:
    key_id = key_for(shared_km, spec, "SIGN_VERIFY")
    facts = {f.object_class: f for f in hsm.facts(MaterialRef(key_id, 1))}
    assert set(facts) == {"PRIVATE_KEY", "PUBLIC_KEY"}
    private = facts["PRIVATE_KEY"]
    assert private.token and private.private and private.sensitive and private.always_sensitive
    assert not private.extractable and private.never_extractable
    assert_local(hsm, private.local)


@pytest.mark.parametrize(
    "spec",
    spec_cases(
        "KEY_AGREEMENT", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1"
    ),
)
def test_ecdh_cross_check(shared_km: KeyManager, spec: str) -> None:
    km = shared_km
    key_id = key_for(km, spec, "KEY_AGREEMENT")
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert meta["KeyAgreementAlgorithms"] == ["ECDH"]
    ours = public_key(km, key_id)
    theirs = ec.generate_private_key(ours.curve)
    der = theirs.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    out = km.derive_shared_secret(key_id=key_id, key_agreement_algorithm="ECDH", public_key=der)
    assert out["SharedSecret"] == theirs.exchange(ec.ECDH(), ours)
    assert out["KeyOrigin"] == "AWS_KMS"
    wrong_curve = ec.generate_private_key(
        ec.SECP384R1() if spec != "ECC_NIST_P384" else ec.SECP256R1()
    )
    for bad in (
        b"not der",
        wrong_curve.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    ):
        with pytest.raises(ValidationException):
            km.derive_shared_secret(key_id=key_id, key_agreement_algorithm="ECDH", public_key=bad)
    with pytest.raises(InvalidKeyUsageException):
        km.sign(
            key_id=key_id,
            message=b"x",
            signing_algorithm=meta.get("SigningAlgorithms", ["ECDSA_SHA_256"])[0],
        )


@pytest.mark.parametrize(
    ("spec", "usage", "field", "values"),
    spec_usage_cases(
        (
            "RSA_2048",
            "SIGN_VERIFY",
            "SigningAlgorithms",
            [
                "RSASSA_PSS_SHA_256",
                "RSASSA_PSS_SHA_384",
                "RSASSA_PSS_SHA_512",
                "RSASSA_PKCS1_V1_5_SHA_256",
                "RSASSA_PKCS1_V1_5_SHA_384",
                "RSASSA_PKCS1_V1_5_SHA_512",
            ],
        ),
        ("ECC_NIST_P256", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_256"]),
        ("ECC_NIST_P384", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_384"]),
        ("ECC_NIST_P521", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_512"]),
        ("ECC_SECG_P256K1", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_256"]),
        ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY", "SigningAlgorithms", ["ED25519_SHA_512"]),
    ),
)
def test_describe_and_get_public_key(
    shared_km: KeyManager, spec: str, usage: str, field: str, values: list[str]
) -> None:
    km = shared_km
    key_id = key_for(km, spec, usage)
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert meta[field] == values and meta["KeySpec"] == spec and meta["KeyUsage"] == usage
    out = km.get_public_key(key_id=key_id)
    assert out["KeySpec"] == spec and out[field] == values and out["KeyUsage"] == usage
    assert serialization.load_der_public_key(out["PublicKey"]) is not None


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"message_type": "DIGEST", "message": b"short"}, ValidationException),
        ({"signing_algorithm": "ECDSA_SHA_256"}, InvalidKeyUsageException),
        ({"signing_algorithm": "NOT_AN_ALGORITHM"}, ValidationException),
        ({"message": b"x" * 4097}, ValidationException),
        ({"message": b""}, ValidationException),
        ({"message_type": "EXTERNAL_MU"}, UnsupportedOperationException),
    ],
)
def test_sign_bad_input(
    shared_km: KeyManager, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    key_id = key_for(shared_km, "RSA_2048", "SIGN_VERIFY")
    request = {"message": MESSAGE, "signing_algorithm": "RSASSA_PSS_SHA_256", **kwargs}
    with pytest.raises(error):
        shared_km.sign(key_id=key_id, **request)


def test_malformed_ecdsa_signature_is_invalid(shared_km: KeyManager) -> None:
    key_id = key_for(shared_km, "ECC_NIST_P256", "SIGN_VERIFY")
    with pytest.raises(KMSInvalidSignatureException):
        shared_km.verify(
            key_id=key_id,
            message=MESSAGE,
            signature=b"\x30\x02garbage",
            signing_algorithm="ECDSA_SHA_256",
        )


@needs("ECC_NIST_EDWARDS25519", "SIGN_VERIFY")
def test_ed25519_rejects_digests(shared_km: KeyManager) -> None:
    key_id = key_for(shared_km, "ECC_NIST_EDWARDS25519", "SIGN_VERIFY")
    with pytest.raises(ValidationException):
        shared_km.sign(
            key_id=key_id,
            message=hashlib.sha512(MESSAGE).digest(),
            message_type="DIGEST",
            signing_algorithm="ED25519_SHA_512",
        )


def test_disabled_signing_key(shared_km: KeyManager) -> None:
    key_id = shared_km.create_key(key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY")["KeyMetadata"][
        "KeyId"
    ]
    shared_km.disable_key(key_id=key_id)
    with pytest.raises(DisabledException):
        shared_km.sign(key_id=key_id, message=MESSAGE, signing_algorithm="ECDSA_SHA_256")
    with pytest.raises(DisabledException):
        shared_km.get_public_key(key_id=key_id)


@pytest.mark.parametrize(
    "pair_spec",
    spec_cases(
        "SIGN_VERIFY",
        "RSA_2048",
        "ECC_NIST_P256",
        "ECC_NIST_P384",
        "ECC_NIST_P521",
        "ECC_SECG_P256K1",
    ),
)
def test_data_key_pairs(shared_km: KeyManager, pair_spec: str) -> None:
    km = shared_km
    wrapping = km.create_key()["KeyMetadata"]["KeyId"]
    ctx = {"purpose": "pair"}
    out = km.generate_data_key_pair(
        key_id=wrapping, key_pair_spec=pair_spec, encryption_context=ctx
    )
    private = serialization.load_der_private_key(out["PrivateKeyPlaintext"], None)
    public = serialization.load_der_public_key(out["PublicKey"])
    assert (
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == out["PublicKey"]
    )
    unwrapped = km.decrypt(ciphertext_blob=out["PrivateKeyCiphertextBlob"], encryption_context=ctx)
    assert unwrapped["Plaintext"] == out["PrivateKeyPlaintext"]
    if isinstance(private, rsa.RSAPrivateKey):
        signature = private.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())
        public.verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr, call-arg]
    else:
        signature = private.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr, call-arg]
        public.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr, call-arg]
    bare = km.generate_data_key_pair_without_plaintext(key_id=wrapping, key_pair_spec=pair_spec)
    assert "PrivateKeyPlaintext" not in bare and bare["KeyPairSpec"] == pair_spec
    with pytest.raises(UnsupportedOperationException, match="SM2"):  # in the model, not here
        km.generate_data_key_pair(key_id=wrapping, key_pair_spec="SM2")
    signing_key = key_for(km, "ECC_NIST_P256", "SIGN_VERIFY")
    with pytest.raises(InvalidKeyUsageException):
        km.generate_data_key_pair(key_id=signing_key, key_pair_spec=pair_spec)


@pytest.mark.parametrize(
    ("spec", "usage", "missing"),
    [
        ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY", "EDDSA"),
        ("ECC_NIST_P256", "KEY_AGREEMENT", "ECDH1_DERIVE"),
        ("RSA_2048", "ENCRYPT_DECRYPT", "RSA_PKCS_OAEP"),
        ("HMAC_256", "GENERATE_VERIFY_MAC", "GENERIC_SECRET_KEY_GEN"),
    ],
)
def test_missing_mechanism_refused_at_create_key(
    km: KeyManager, hsm: Hsm, monkeypatch: pytest.MonkeyPatch, spec: str, usage: str, missing: str
) -> None:
    """A token without the mechanism: refused up front, naming it, nothing left behind."""
    from pkcs11 import Mechanism

    available = hsm.mechanisms._available - {Mechanism[missing]}
    monkeypatch.setattr(hsm.mechanisms, "_available", available)
    before = hsm.material_refs()
    with pytest.raises(UnsupportedOperationException, match=missing):
        km.create_key(key_spec=spec, key_usage=usage)
    assert km.list_keys()["Keys"] == []
    assert km.store.list_pending() == []
    assert hsm.material_refs() == before
