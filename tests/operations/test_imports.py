"""Imported key material (Origin EXTERNAL) through the library, on a real SoftHSM2 token.

Material is wrapped with `cryptography` as AWS's developer guide tells a user to:
RSAES_OAEP_SHA_* encrypts the material with the wrapping public key; RSA_AES_KEY_WRAP_SHA_*
encrypts a fresh AES-256 key with OAEP and appends the material wrapped under it with
AES key wrap with padding (RFC 5649).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from hsmkms.errors import (
    ExpiredImportTokenException,
    IncorrectKeyMaterialException,
    InvalidCiphertextException,
    InvalidImportTokenException,
    KMSInvalidStateException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.library import KeyManager
from hsmkms.token import Hsm, MaterialRef
from hsmkms.token.templates import InternalRef
from tests.conftest import ManualClock, skip_unless_supported

SHA = {"SHA_1": hashes.SHA1, "SHA_256": hashes.SHA256}


def wrap(public_key_der: bytes, algorithm: str, material: bytes) -> bytes:
    """What a user following AWS's "Encrypt the key material" page sends."""
    public = serialization.load_der_public_key(public_key_der)
    assert isinstance(public, rsa.RSAPublicKey)
    digest = SHA["SHA_256" if algorithm.endswith("SHA_256") else "SHA_1"]()
    oaep = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
    if algorithm.startswith("RSAES_OAEP"):
        return public.encrypt(material, oaep)
    aes_key = os.urandom(32)
    return public.encrypt(aes_key, oaep) + aes_key_wrap_with_padding(aes_key, material)


def pkcs8(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def external(km: KeyManager, **create: Any) -> str:
    meta = km.create_key(origin="EXTERNAL", **create)["KeyMetadata"]
    assert meta["Origin"] == "EXTERNAL" and meta["KeyState"] == "PendingImport"
    assert not meta["Enabled"] and "ValidTo" not in meta and "ExpirationModel" not in meta
    return str(meta["KeyId"])


def import_material(
    km: KeyManager,
    key_id: str,
    material: bytes,
    algorithm: str = "RSAES_OAEP_SHA_1",
    spec: str = "RSA_2048",
    **options: Any,
) -> dict[str, Any]:
    params = km.get_parameters_for_import(
        key_id=key_id, wrapping_algorithm=algorithm, wrapping_key_spec=spec
    )
    options.setdefault("expiration_model", "KEY_MATERIAL_DOES_NOT_EXPIRE")
    return km.import_key_material(
        key_id=key_id,
        import_token=params["ImportToken"],
        encrypted_key_material=wrap(params["PublicKey"], algorithm, material),
        **options,
    )


def wrapping_objects(hsm: Hsm, token: bytes) -> int:
    parameters_id = token[13:29].hex()  # magic(5) + valid-to(8) + id(16)
    ref = InternalRef(f"hsmkms-import/{parameters_id}", bytes.fromhex(parameters_id))
    return len(hsm.facts(ref))


@pytest.mark.parametrize(
    ("algorithm", "spec"),
    [
        ("RSAES_OAEP_SHA_1", "RSA_2048"),
        ("RSA_AES_KEY_WRAP_SHA_1", "RSA_2048"),
        ("RSAES_OAEP_SHA_1", "RSA_3072"),
        ("RSA_AES_KEY_WRAP_SHA_1", "RSA_4096"),
    ],
)
def test_symmetric_material_imports_and_encrypts(
    km: KeyManager, hsm: Hsm, clock: ManualClock, algorithm: str, spec: str
) -> None:
    key_id = external(km)
    with pytest.raises(KMSInvalidStateException, match="pending import"):
        km.encrypt(key_id=key_id, plaintext=b"x")
    params = km.get_parameters_for_import(
        key_id=key_id, wrapping_algorithm=algorithm, wrapping_key_spec=spec
    )
    public = serialization.load_der_public_key(params["PublicKey"])
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == int(spec[4:])
    assert params["ParametersValidTo"] == clock() + timedelta(hours=24)
    assert params["KeyId"].endswith(key_id)
    assert wrapping_objects(hsm, params["ImportToken"]) == 1
    valid_to = clock() + timedelta(days=30)
    result = km.import_key_material(
        key_id=key_id,
        import_token=params["ImportToken"],
        encrypted_key_material=wrap(params["PublicKey"], algorithm, os.urandom(32)),
        valid_to=valid_to,
    )
    assert len(result["KeyMaterialId"]) == 64
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Enabled" and meta["ValidTo"] == valid_to
    assert meta["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert meta["CurrentKeyMaterialId"] == result["KeyMaterialId"]
    blob = km.encrypt(key_id=key_id, plaintext=b"secret")["CiphertextBlob"]
    assert km.decrypt(ciphertext_blob=blob)["Plaintext"] == b"secret"
    # The parameters are used up: the wrapping key is gone, the token refused.
    assert wrapping_objects(hsm, params["ImportToken"]) == 0
    with pytest.raises(InvalidImportTokenException):
        km.import_key_material(
            key_id=key_id,
            import_token=params["ImportToken"],
            encrypted_key_material=b"x" * 256,
            expiration_model="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
    (fact,) = hsm.facts(MaterialRef(key_id, 1))
    assert fact.sensitive and not fact.extractable


def test_sha256_wrapping_is_refused_when_the_token_cannot_unwrap_with_it(
    km: KeyManager, hsm: Hsm
) -> None:
    key_id = external(km)
    if hsm.oaep_supported("SHA256"):
        pytest.skip("this token does OAEP with SHA-256")
    for algorithm in ("RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_256"):
        with pytest.raises(UnsupportedOperationException, match="RSA_PKCS_OAEP with SHA256"):
            km.get_parameters_for_import(
                key_id=key_id, wrapping_algorithm=algorithm, wrapping_key_spec="RSA_2048"
            )
    assert km.store.list_documents("import-parameters") == {}


def test_hmac_material_macs_like_software(km: KeyManager) -> None:
    key_id = external(km, key_spec="HMAC_256", key_usage="GENERATE_VERIFY_MAC")
    material = os.urandom(48)
    import_material(km, key_id, material, "RSA_AES_KEY_WRAP_SHA_1")
    mac = km.generate_mac(key_id=key_id, message=b"message", mac_algorithm="HMAC_SHA_256")["Mac"]
    assert mac == hmac.new(material, b"message", hashlib.sha256).digest()
    with pytest.raises(IncorrectKeyMaterialException):
        other = external(km, key_spec="HMAC_256", key_usage="GENERATE_VERIFY_MAC")
        import_material(km, other, os.urandom(16))  # shorter than HMAC_256 allows


def test_rsa_private_key_needs_rsa_aes_and_signs(km: KeyManager) -> None:
    key_id = external(km, key_spec="RSA_2048", key_usage="SIGN_VERIFY")
    with pytest.raises(ValidationException, match="RSA_AES_KEY_WRAP"):
        km.get_parameters_for_import(
            key_id=key_id, wrapping_algorithm="RSAES_OAEP_SHA_1", wrapping_key_spec="RSA_4096"
        )
    private = rsa.generate_private_key(65537, 2048)
    import_material(km, key_id, pkcs8(private), "RSA_AES_KEY_WRAP_SHA_1")
    public = km.get_public_key(key_id=key_id)["PublicKey"]
    assert public == private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = km.sign(
        key_id=key_id, message=b"data", signing_algorithm="RSASSA_PKCS1_V1_5_SHA_256"
    )["Signature"]
    private.public_key().verify(signature, b"data", padding.PKCS1v15(), hashes.SHA256())


def test_ec_private_key_signs(km: KeyManager, hsm: Hsm) -> None:
    key_id = external(km, key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY")
    private = ec.generate_private_key(ec.SECP256R1())
    skip_unless_supported(  # NSS softokn cannot unwrap EC keys from PKCS#8
        hsm, lambda: import_material(km, key_id, pkcs8(private), "RSAES_OAEP_SHA_1")
    )
    signature = km.sign(key_id=key_id, message=b"data", signing_algorithm="ECDSA_SHA_256")[
        "Signature"
    ]
    private.public_key().verify(signature, b"data", ec.ECDSA(hashes.SHA256()))
    p521 = external(km, key_spec="ECC_NIST_P521", key_usage="SIGN_VERIFY")
    with pytest.raises(ValidationException, match="ECC_NIST_P521"):
        km.get_parameters_for_import(
            key_id=p521, wrapping_algorithm="RSAES_OAEP_SHA_1", wrapping_key_spec="RSA_2048"
        )


def test_reimport_same_material_after_delete_decrypts_old_ciphertexts(
    km: KeyManager, hsm: Hsm, clock: ManualClock
) -> None:
    key_id, material = external(km), os.urandom(32)
    first = import_material(km, key_id, material)
    blob = km.encrypt(key_id=key_id, plaintext=b"before")["CiphertextBlob"]
    deleted = km.delete_imported_key_material(key_id=key_id)
    assert deleted["KeyMaterialId"] == first["KeyMaterialId"]
    assert hsm.facts(MaterialRef(key_id, 1)) == []
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingImport" and "ExpirationModel" not in meta
    with pytest.raises(KMSInvalidStateException):
        km.decrypt(ciphertext_blob=blob)
    with pytest.raises(KMSInvalidStateException):
        km.delete_imported_key_material(key_id=key_id)
    with pytest.raises(IncorrectKeyMaterialException, match="previously imported"):
        import_material(km, key_id, os.urandom(32))
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    assert hsm.facts(MaterialRef(key_id, 1)) == []  # the wrong material left nothing
    again = import_material(km, key_id, material, "RSA_AES_KEY_WRAP_SHA_1")
    assert again["KeyMaterialId"] == first["KeyMaterialId"]
    assert km.decrypt(ciphertext_blob=blob)["Plaintext"] == b"before"
    reconcile = km.maintain().reconcile  # the token is shared by the whole session
    assert not any(key_id in label for label in reconcile.unknown_objects)
    assert not any(key_id in label for label in reconcile.material_missing)


def test_reimport_into_enabled_key_changes_expiry_only_for_same_material(
    km: KeyManager, hsm: Hsm, clock: ManualClock
) -> None:
    key_id, material = external(km), os.urandom(32)
    import_material(km, key_id, material)
    km.disable_key(key_id=key_id)
    with pytest.raises(IncorrectKeyMaterialException):
        import_material(km, key_id, os.urandom(32))
    valid_to = clock() + timedelta(days=365)
    import_material(km, key_id, material, expiration_model=None, valid_to=valid_to)
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Disabled" and meta["ValidTo"] == valid_to
    assert len(hsm.facts(MaterialRef(key_id, 1))) == 1  # no second copy, no scratch left
    assert hsm.facts(MaterialRef(key_id, 0)) == []


def test_maintenance_expires_material_and_import_parameters(
    km: KeyManager, hsm: Hsm, clock: ManualClock
) -> None:
    key_id, material = external(km), os.urandom(32)
    import_material(km, key_id, material, expiration_model=None,
                    valid_to=clock() + timedelta(days=1))  # fmt: skip
    blob = km.encrypt(key_id=key_id, plaintext=b"kept")["CiphertextBlob"]
    stale = km.get_parameters_for_import(
        key_id=key_id, wrapping_algorithm="RSAES_OAEP_SHA_1", wrapping_key_spec="RSA_2048"
    )
    assert km.maintain().material_expired == []
    clock.advance(days=1, seconds=1)
    report = km.maintain()
    assert report.material_expired == [km.describe_key(key_id=key_id)["KeyMetadata"]["Arn"]]
    assert report.as_dict()["ImportParametersDestroyed"] == [stale["ImportToken"][13:29].hex()]
    assert wrapping_objects(hsm, stale["ImportToken"]) == 0
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    assert hsm.facts(MaterialRef(key_id, 1)) == []
    assert report.reconcile.material_missing == []  # deliberately gone, not lost
    with pytest.raises(ExpiredImportTokenException):
        km.import_key_material(
            key_id=key_id,
            import_token=stale["ImportToken"],
            encrypted_key_material=wrap(stale["PublicKey"], "RSAES_OAEP_SHA_1", material),
            expiration_model="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
    import_material(km, key_id, material)
    assert km.decrypt(ciphertext_blob=blob)["Plaintext"] == b"kept"


def test_import_tokens_are_bound_to_their_key_and_time(
    km: KeyManager, hsm: Hsm, clock: ManualClock
) -> None:
    key_id, other = external(km), external(km)
    params = km.get_parameters_for_import(
        key_id=key_id, wrapping_algorithm="RSAES_OAEP_SHA_1", wrapping_key_spec="RSA_2048"
    )
    blob = wrap(params["PublicKey"], "RSAES_OAEP_SHA_1", os.urandom(32))

    def attempt(target: str, token: bytes, encrypted: bytes = blob, **kw: Any) -> None:
        kw.setdefault("expiration_model", "KEY_MATERIAL_DOES_NOT_EXPIRE")
        km.import_key_material(
            key_id=target, import_token=token, encrypted_key_material=encrypted, **kw
        )

    with pytest.raises(InvalidImportTokenException, match="another KMS key"):
        attempt(other, params["ImportToken"])
    with pytest.raises(InvalidImportTokenException):
        attempt(key_id, b"not a token")
    forged = bytearray(params["ImportToken"])
    forged[-1] ^= 1
    with pytest.raises(InvalidImportTokenException):
        attempt(key_id, bytes(forged))
    with pytest.raises(InvalidCiphertextException):
        attempt(key_id, params["ImportToken"], os.urandom(256))
    with pytest.raises(ValidationException, match="ValidTo is required"):
        attempt(key_id, params["ImportToken"], expiration_model="KEY_MATERIAL_EXPIRES")
    with pytest.raises(ValidationException, match="omitted"):
        attempt(key_id, params["ImportToken"], valid_to=clock() + timedelta(days=1))
    with pytest.raises(ValidationException, match="365 days"):
        attempt(key_id, params["ImportToken"], expiration_model=None,
                valid_to=clock() + timedelta(days=366))  # fmt: skip
    with pytest.raises(KMSInvalidStateException, match="before new key material"):
        attempt(key_id, params["ImportToken"], import_type="NEW_KEY_MATERIAL")
    clock.advance(hours=24)
    with pytest.raises(ExpiredImportTokenException):
        attempt(key_id, params["ImportToken"])


def test_origin_rules(km: KeyManager, key_id: str) -> None:
    with pytest.raises(UnsupportedOperationException, match="origin is AWS_KMS which is not"):
        km.get_parameters_for_import(
            key_id=key_id, wrapping_algorithm="RSAES_OAEP_SHA_1", wrapping_key_spec="RSA_2048"
        )
    with pytest.raises(UnsupportedOperationException):
        km.delete_imported_key_material(key_id=key_id)
    imported = external(km)
    with pytest.raises(ValidationException, match="RSAES_PKCS1_V1_5"):
        km.get_parameters_for_import(
            key_id=imported, wrapping_algorithm="RSAES_PKCS1_V1_5", wrapping_key_spec="RSA_2048"
        )
    import_material(km, imported, os.urandom(32))
    # No automatic rotation of imported material (AWS neither); on demand only to new
    # material imported for it.
    with pytest.raises(UnsupportedOperationException):
        km.enable_key_rotation(key_id=imported)
    with pytest.raises(KMSInvalidStateException, match="NEW_KEY_MATERIAL"):
        km.rotate_key_on_demand(key_id=imported)
    km.schedule_key_deletion(key_id=imported, pending_window_in_days=7)
    with pytest.raises(KMSInvalidStateException):
        km.get_parameters_for_import(
            key_id=imported, wrapping_algorithm="RSAES_OAEP_SHA_1", wrapping_key_spec="RSA_2048"
        )
    assert isinstance(km.describe_key(key_id=imported)["KeyMetadata"]["CreationDate"], datetime)


def test_delete_keeps_a_key_pending_deletion(km: KeyManager, hsm: Hsm) -> None:
    key_id = external(km)
    import_material(km, key_id, os.urandom(32))
    km.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
    km.delete_imported_key_material(key_id=key_id)
    assert hsm.facts(MaterialRef(key_id, 1)) == []
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    with pytest.raises(KMSInvalidStateException):
        km.delete_imported_key_material(key_id=key_id)


def test_a_crash_between_unwrap_and_commit_leaves_nothing_behind(
    km: KeyManager, hsm: Hsm, clock: ManualClock
) -> None:
    """The object is named by an intent before it exists: reconcile removes it."""
    from hsmkms.keys.imported import ImportParameters
    from hsmkms.operations import imported

    key_id = external(km)
    params = km.get_parameters_for_import(
        key_id=key_id, wrapping_algorithm="RSAES_OAEP_SHA_1", wrapping_key_spec="RSA_2048"
    )
    body = km.store.get_document("import-parameters", params["ImportToken"][13:29].hex())
    assert body is not None
    record = km.store.get_key(key_id)
    assert record is not None
    blob = wrap(params["PublicKey"], "RSAES_OAEP_SHA_1", os.urandom(32))
    imported.unwrap_to(km.context, record, ImportParameters.from_json(body), blob, 1)
    assert len(hsm.facts(MaterialRef(key_id, 1))) == 1  # "crash": never committed
    clock.advance(minutes=11)
    report = km.maintain()
    assert MaterialRef(key_id, 1).label in report.reconcile.orphans_destroyed
    assert hsm.facts(MaterialRef(key_id, 1)) == []
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
