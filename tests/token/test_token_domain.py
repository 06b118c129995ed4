"""Security domain, custodian shares and wrapped backup/replication between two real
SoftHSM2 tokens (peer-a, peer-b from conftest)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11 import exceptions as p11

from hsmkms.errors import (
    AccessDeniedException,
    AlreadyExistsException,
    KMSInvalidStateException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.token import Hsm, MaterialRef
from hsmkms.token.backup import WrappedMaterial, unwrap_material, wrap_material
from hsmkms.token.domain import (
    NewDomain,
    combine_shares,
    create_domain,
    custody_for,
    domain_info,
    domain_key,
    join_domain,
    split_key,
)
from hsmkms.token.kinds import Aes, EcPair, EdPair, HmacKey, RsaPair
from hsmkms.token.pool import PooledSession
from hsmkms.token.templates import Custody, InternalRef
from tests.conftest import PeerToken

P256 = "1.2.840.10045.3.1.7"


def reshare(original: str, **changes: object) -> str:
    """A share with fields changed and its digest recomputed (a deliberate forgery)."""
    from hsmkms.token.domain import _share_digest

    fields = json.loads(original)
    fields.pop("digest")
    fields.update(changes)
    return json.dumps({**fields, "digest": _share_digest(fields)})


def test_shares_reassemble_only_from_enough_shares_of_one_domain() -> None:
    value = os.urandom(32)
    shares = split_key(value, "d1", custodians=5, threshold=3)
    assert len(shares) == 5 and all(json.loads(s)["domain"] == "d1" for s in shares)
    assert [json.loads(s)["index"] for s in shares] == [1, 2, 3, 4, 5]
    for chosen in ([0, 1, 2], [4, 2, 0], [1, 3, 4], [0, 1, 2, 3, 4]):
        info, again = combine_shares([shares[i] for i in chosen])
        assert again == value and info.domain_id == "d1"
    with pytest.raises(ValidationException, match=r"2 share.*needs 3 of its 5"):
        combine_shares(shares[:2])
    other = split_key(os.urandom(32), "d2", custodians=5, threshold=3)
    with pytest.raises(ValidationException, match="different security domains"):
        combine_shares([shares[0], shares[1], other[2]])
    with pytest.raises(ValidationException, match="more than once"):
        combine_shares([shares[0], shares[0], shares[1]])
    damaged = json.loads(shares[1])
    damaged["share"] = ("0" if damaged["share"][0] != "0" else "1") + damaged["share"][1:]
    with pytest.raises(ValidationException, match=r"Share 2 \(index 2\) is damaged"):
        combine_shares([shares[0], json.dumps(damaged), shares[2]])
    forged = reshare(shares[1], share=os.urandom(32).hex())
    with pytest.raises(ValidationException, match="check value mismatch"):
        combine_shares([shares[0], forged, shares[2]])
    with pytest.raises(ValidationException, match="not an hsmkms domain share"):
        combine_shares(["{}", shares[0], shares[1]])
    with pytest.raises(ValidationException, match="threshold"):
        split_key(value, "d3", custodians=2, threshold=3)


@pytest.fixture(scope="module")
def domain(peer_tokens: dict[str, PeerToken]) -> NewDomain:
    a = peer_tokens["peer-a"]
    return create_domain(a.module, a.label, a.so_pin, a.pin, custodians=5, threshold=3)


@pytest.fixture(scope="module")
def token_a(peer_tokens: dict[str, PeerToken], domain: NewDomain) -> Iterator[Hsm]:
    a = peer_tokens["peer-a"]
    token = Hsm(a.module, a.label, a.pin, pool_size=2)
    token.custody = custody_for(token)
    yield token
    token.close()


def domain_key_facts(pooled: PooledSession) -> dict[str, bool]:
    key, _ = domain_key(pooled)
    names = ("trusted", "private", "token", "sensitive", "extractable", "wrap", "unwrap", "encrypt")
    return {name: bool(key[Attribute[name.upper()]]) for name in names}


def test_domain_key_is_trusted_private_and_stays_in_the_token(
    token_a: Hsm, domain: NewDomain
) -> None:
    assert token_a.custody is Custody.DOMAIN
    info = domain_info(token_a)
    assert info is not None and info.domain_id == domain.domain_id
    assert info.check_value == domain.check_value
    assert token_a.run(domain_key_facts) == {
        "trusted": True, "private": True, "token": True, "sensitive": True,
        "extractable": False, "wrap": True, "unwrap": True, "encrypt": False,
    }  # fmt: skip
    assert all(json.loads(s)["check_value"] == domain.check_value for s in domain.shares)


def test_domain_custody_material_wraps_only_under_the_trusted_key(token_a: Hsm) -> None:
    ref = MaterialRef(str(uuid.uuid4()), 1)
    token_a.generate(ref, Aes())

    def wrap_both(pooled: PooledSession) -> int:
        target = pooled.session.get_key(label=ref.label)
        assert target[Attribute.WRAP_WITH_TRUSTED] and target[Attribute.EXTRACTABLE]
        untrusted = pooled.session.generate_key(
            KeyType.AES, 256, store=False, template={Attribute.WRAP: True}
        )
        with pytest.raises(p11.KeyNotWrappable):
            untrusted.wrap_key(target, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        untrusted.destroy()
        trusted, _ = domain_key(pooled)
        return len(trusted.wrap_key(target, mechanism=Mechanism.AES_KEY_WRAP_PAD))

    assert token_a.run(wrap_both) == 40
    token_a.destroy(ref)


def test_backup_needs_a_domain_and_domain_custody(hsm: Hsm, token_a: Hsm) -> None:
    assert domain_info(hsm) is None and custody_for(hsm) is Custody.NEVER_EXTRACTABLE
    ref = MaterialRef(str(uuid.uuid4()), 1)
    hsm.generate(ref, Aes())
    with pytest.raises(KMSInvalidStateException, match="does not belong to a security domain"):
        wrap_material(hsm, ref)
    hsm.destroy(ref)
    token_a.generate(ref, Aes(), custody=Custody.NEVER_EXTRACTABLE)
    with pytest.raises(UnsupportedOperationException, match="never-extractable"):
        wrap_material(token_a, ref)
    token_a.destroy(ref)


def test_material_replicates_to_a_token_that_joined_the_domain(
    peer_tokens: dict[str, PeerToken], token_a: Hsm, domain: NewDomain
) -> None:
    def ref() -> MaterialRef:
        return MaterialRef(str(uuid.uuid4()), 1)

    aes, mac, signer, decrypter, ecdsa, ecdh, ed = (ref() for _ in range(7))
    token_a.generate(aes, Aes())
    token_a.generate(mac, HmacKey(32))
    token_a.generate(signer, RsaPair(2048, decrypt=False, sign=True))
    token_a.generate(decrypter, RsaPair(2048, decrypt=True, sign=False))
    token_a.generate(ecdsa, EcPair(P256, sign=True, derive=False))
    token_a.generate(ecdh, EcPair(P256, sign=False, derive=True))
    token_a.generate(ed, EdPair())
    credentials = InternalRef("hsmkms-internal/test-credentials", b"test-credentials")
    token_a.ensure_aes_key(credentials)

    # What token A produced, to be used on token B.
    iv, body = token_a.gcm_encrypt(aes, b"aad", b"replicated")
    cred_iv, cred_body = token_a.gcm_encrypt(credentials, b"", b"secret")
    tag = token_a.hmac(mac, "SHA256", b"message")
    digest = hashlib.sha256(b"document").digest()
    rsa_signature = token_a.sign(signer, "pss", "SHA256", digest)
    ec_signature = token_a.sign(ecdsa, "ecdsa", "SHA256", digest)
    rsa_public = serialization.load_der_public_key(token_a.public_key_der(decrypter))
    oaep = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    rsa_ciphertext = rsa_public.encrypt(b"to B", oaep)  # type: ignore[union-attr]
    peer = ec.generate_private_key(ec.SECP256R1())
    point = peer.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    shared = token_a.ecdh(ecdh, point, 32)

    refs = [aes, mac, signer, decrypter, ecdsa, ecdh, credentials]
    backups = [WrappedMaterial.from_json(wrap_material(token_a, r).to_json()) for r in refs]
    with pytest.raises(UnsupportedOperationException, match="EC_EDWARDS"):
        wrap_material(token_a, ed)  # SoftHSM2 2.6 cannot wrap EdDSA private keys

    b = peer_tokens["peer-b"]
    with pytest.raises(ValidationException, match="needs 3"):
        join_domain(b.module, b.label, b.so_pin, b.pin, domain.shares[:2])
    forged = reshare(domain.shares[3], share=os.urandom(32).hex())
    with pytest.raises(ValidationException, match="check value mismatch"):
        join_domain(
            b.module, b.label, b.so_pin, b.pin, [domain.shares[0], forged, domain.shares[4]]
        )
    chosen = [domain.shares[4], domain.shares[1], domain.shares[2]]
    with pytest.raises(AccessDeniedException, match="security officer PIN"):
        join_domain(b.module, b.label, "not-the-so-pin", b.pin, chosen)
    joined = join_domain(b.module, b.label, b.so_pin, b.pin, chosen)
    assert (joined.domain_id, joined.check_value) == (domain.domain_id, domain.check_value)
    with pytest.raises(KMSInvalidStateException, match="already belongs"):
        join_domain(b.module, b.label, b.so_pin, b.pin, chosen)

    token_b = Hsm(b.module, b.label, b.pin, pool_size=2)
    try:
        assert domain_info(token_b) == domain_info(token_a)
        for backup in backups:
            unwrap_material(token_b, backup)
        with pytest.raises(AlreadyExistsException):
            unwrap_material(token_b, backups[0])

        assert token_b.gcm_decrypt(aes, iv, b"aad", body) == b"replicated"
        assert token_b.gcm_decrypt(credentials, cred_iv, b"", cred_body) == b"secret"
        assert token_b.hmac_verify(mac, "SHA256", b"message", tag)
        assert token_b.verify(signer, "pss", "SHA256", digest, rsa_signature)
        assert token_b.verify(ecdsa, "ecdsa", "SHA256", digest, ec_signature)
        assert token_b.rsa_decrypt(decrypter, "SHA1", rsa_ciphertext) == b"to B"
        assert token_b.ecdh(ecdh, point, 32) == shared
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
        for pair in (signer, ecdsa):
            assert token_b.public_key_der(pair) == token_a.public_key_der(pair)
        public = serialization.load_der_public_key(token_b.public_key_der(signer))
        public.verify(rsa_signature, digest, pss, Prehashed(hashes.SHA256()))  # type: ignore[call-arg, union-attr]

        for r in refs:
            (fact,) = [f for f in token_b.facts(r) if f.object_class != "PUBLIC_KEY"]
            assert fact.label == r.label and fact.sensitive and fact.private and fact.token
            assert fact.extractable and not fact.local  # domain custody; unwrapped, not made here
        again = wrap_material(token_b, aes)  # still wrappable under the domain key
        assert again.domain_id == domain.domain_id and again.cka_id == aes.cka_id
    finally:
        token_b.close()


def test_material_of_one_domain_does_not_unwrap_in_another(
    peer_tokens: dict[str, PeerToken], token_a: Hsm
) -> None:
    ref = MaterialRef(str(uuid.uuid4()), 1)
    token_a.generate(ref, Aes())
    backup = wrap_material(token_a, ref)
    c = peer_tokens["peer-c"]
    other = create_domain(c.module, c.label, c.so_pin, c.pin, custodians=2, threshold=2)
    assert other.domain_id != backup.domain_id
    token_c = Hsm(c.module, c.label, c.pin, pool_size=1)
    try:
        with pytest.raises(KMSInvalidStateException, match="wrapped in security domain"):
            unwrap_material(token_c, backup)
        forged = WrappedMaterial.from_json({**backup.to_json(), "domain": other.domain_id})
        with pytest.raises(KMSInvalidStateException, match="does not unwrap here"):
            unwrap_material(token_c, forged)  # the other domain key cannot unwrap it
        assert token_c.facts(ref) == []
    finally:
        token_c.close()
        token_a.destroy(ref)
