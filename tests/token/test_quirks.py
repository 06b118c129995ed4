"""Token quirks (hsmkms/token/quirks.py) on whichever token the suite runs against:
the same assertions hold on SoftHSM2 and on NSS softokn (`make test-nss`)."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.exceptions import PKCS11Error
from pkcs11.util.ec import encode_named_curve_parameters

from hsmkms.errors import (
    InvalidCiphertextException,
    KMSInvalidMacException,
    UnsupportedOperationException,
)
from hsmkms.library import KeyManager
from hsmkms.token import Hsm
from hsmkms.token.kinds import CURVES, EcPair
from hsmkms.token.pool import PooledSession
from hsmkms.token.templates import InternalRef


@pytest.fixture
def known_aes_key(hsm: Hsm) -> tuple[InternalRef, bytes]:
    """An AES key with a value the test knows, imported as a session object, so the
    token's GCM output can be checked by an independent implementation."""
    ref = InternalRef("hsmkms-test/gcm-" + secrets.token_hex(4), b"gcm-" + secrets.token_bytes(4))
    value = secrets.token_bytes(32)

    def create(pooled: PooledSession) -> None:
        pooled.session.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
            Attribute.TOKEN: False, Attribute.VALUE: value, Attribute.LABEL: ref.label,
            Attribute.ID: ref.cka_id, Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
        })  # fmt: skip

    hsm.pool.run(create)
    yield ref, value
    hsm.destroy(ref)


@pytest.mark.parametrize("size", [0, 1, 100, 4096])
def test_gcm_encrypt_matches_an_independent_implementation(
    hsm: Hsm, known_aes_key: tuple[InternalRef, bytes], size: int
) -> None:
    """Whichever path encrypts (python-pkcs11, or the direct call on a token whose size
    query omits the tag), the token's output is standard AES-GCM."""
    ref, value = known_aes_key
    plaintext, aad = secrets.token_bytes(size), b"context"
    iv, body = hsm.gcm_encrypt(ref, aad, plaintext)
    # Both quirks are detected on first use; neither token here picks its own IV.
    assert hsm.quirks.gcm_short_size_query is not None and hsm.quirks.gcm_token_iv is False
    assert len(iv) == 12 and len(body) == size + 16
    assert AESGCM(value).decrypt(iv, body, aad) == plaintext
    assert hsm.gcm_decrypt(ref, iv, aad, body) == plaintext
    with pytest.raises(InvalidCiphertextException):
        hsm.gcm_decrypt(ref, iv, b"other context", body)
    ours = AESGCM(value).encrypt(iv, plaintext, aad)
    assert hsm.gcm_decrypt(ref, iv, aad, ours) == plaintext


def test_hmac_verify_refuses_wrong_macs_of_any_length(km: KeyManager) -> None:
    """NSS softokn accepts a MAC with bytes appended and reports other mismatches with
    unrelated CKR codes; both must come out as an invalid MAC."""
    key_id = km.create_key(key_spec="HMAC_256", key_usage="GENERATE_VERIFY_MAC")["KeyMetadata"][
        "KeyId"
    ]
    mac = km.generate_mac(key_id=key_id, message=b"m", mac_algorithm="HMAC_SHA_256")["Mac"]
    for bad in (mac + b"\x00", mac + mac, mac[:16], bytes(32), mac[:-1] + bytes([mac[-1] ^ 1])):
        with pytest.raises(KMSInvalidMacException):
            km.verify_mac(key_id=key_id, message=b"m", mac_algorithm="HMAC_SHA_256", mac=bad)
    # The token is still healthy after the failures: the right MAC verifies.
    assert km.verify_mac(key_id=key_id, message=b"m", mac_algorithm="HMAC_SHA_256", mac=mac)[
        "MacValid"
    ]


@pytest.mark.parametrize("oid", sorted(CURVES))
def test_curve_refusal_agrees_with_the_token(hsm: Hsm, oid: str) -> None:
    """require() refuses a curve exactly when the token cannot generate on it."""

    def generate(pooled: PooledSession) -> bool:
        try:
            parameters = pooled.session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(oid)}, local=True
            )
            public, private = parameters.generate_keypair(store=False)
        except PKCS11Error:
            return False
        public.destroy()
        private.destroy()
        return True

    works = hsm.pool.run(generate)
    kind = EcPair(oid, sign=True, derive=False)
    if works:
        hsm.require(kind)
    else:
        with pytest.raises(UnsupportedOperationException, match="EC_KEY_PAIR_GEN"):
            hsm.require(kind)
