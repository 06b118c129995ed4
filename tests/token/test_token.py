"""The token layer against a real SoftHSM2 token."""

from __future__ import annotations

import threading

import pytest
from pkcs11 import Mechanism

from hsmkms.errors import UnsupportedOperationException
from hsmkms.library import KeyManager
from hsmkms.token import Hsm, MaterialRef
from hsmkms.token.faults import TokenLoginFailed
from hsmkms.token.sessioninfo import user_session
from hsmkms.token.templates import key_uuid_bytes
from tests.conftest import PeerToken, assert_local


def test_key_material_is_sensitive_local_and_never_extractable(
    km: KeyManager, hsm: Hsm, key_id: str
) -> None:
    km.rotate_key_on_demand(key_id=key_id)
    local = []
    for version in (1, 2):
        facts = hsm.facts(MaterialRef(key_id, version))
        assert len(facts) == 1
        fact = facts[0]
        assert fact.object_class == "SECRET_KEY"
        assert fact.label == f"hsmkms/{key_id}/v{version}"
        assert fact.token and fact.private
        assert fact.sensitive and fact.always_sensitive
        assert not fact.extractable and fact.never_extractable
        local.append(fact.local)
    assert_local(hsm, *local)


def test_cka_id_is_key_uuid_and_version() -> None:
    ref = MaterialRef("1234abcd-12ab-34cd-56ef-1234567890ab", 7)
    assert ref.cka_id == key_uuid_bytes(ref.key_id) + b"\x00\x00\x00\x07"
    assert len(ref.cka_id) == 20
    assert MaterialRef.from_label(ref.label) == ref
    assert MaterialRef.from_label("someone-else/key") is None


def test_missing_mechanism_is_refused_clearly(hsm: Hsm) -> None:
    assert Mechanism.AES_GCM in hsm.mechanisms
    with pytest.raises(UnsupportedOperationException, match="SHA3_256_HMAC"):
        hsm.mechanisms.require(Mechanism.SHA3_256_HMAC)


def test_random_comes_in_requested_sizes(hsm: Hsm) -> None:
    assert len(hsm.random(1)) == 1
    assert len(hsm.random(1024)) == 1024
    assert hsm.random(32) != hsm.random(32)


# python-pkcs11 warns from a finaliser when a search ran on the closed session.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_dead_session_is_reopened(km: KeyManager, hsm: Hsm, key_id: str) -> None:
    blob = km.encrypt(key_id=key_id, plaintext=b"x")["CiphertextBlob"]
    # Close every pooled session behind the pool's back, as a device reset would.
    pooled = [hsm.pool.acquire() for _ in range(hsm.pool.size)]
    for entry in pooled:
        entry.session.close()
    for entry in pooled:
        hsm.pool.release(entry)
    assert km.decrypt(ciphertext_blob=blob)["Plaintext"] == b"x"
    assert km.encrypt(key_id=key_id, plaintext=b"y")["CiphertextBlob"]


def test_threads_share_the_pool_safely(km: KeyManager, hsm: Hsm, key_id: str) -> None:
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for i in range(150):
                data = f"{seed}-{i}".encode() * 20
                ctx = {"worker": str(seed)}
                blob = km.encrypt(key_id=key_id, plaintext=data, encryption_context=ctx)
                out = km.decrypt(ciphertext_blob=blob["CiphertextBlob"], encryption_context=ctx)
                assert out["Plaintext"] == data
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert hsm.pool.in_use == 0
    assert hsm.pool.size >= 1


def test_closing_one_pool_leaves_another_of_the_process_logged_in(
    peer_tokens: dict[str, PeerToken],
) -> None:
    """Login state is the process's: the pool that logged in closing (a key store
    closed, a link replaced) must not log out another pool under its calls; the last
    one closing logs the process out."""
    peer = peer_tokens["peer-k"]
    first = Hsm(peer.module, peer.label, peer.pin, pool_size=1)  # logs the process in
    second = Hsm(peer.module, peer.label, peer.pin, pool_size=1)  # finds it logged in
    token = second.link.token
    try:
        first.close()
        first.close()  # twice: still one pool fewer, not two
        generation = second.pool.generation
        assert second.run(lambda pooled: user_session(peer.module, pooled.session))
        assert second.pool.generation == generation  # no recovery was needed
    finally:
        second.close()
    with token.open(rw=True) as session:
        assert not user_session(peer.module, session)


def test_a_wrong_pin_is_refused_also_while_the_process_is_logged_in(
    peer_tokens: dict[str, PeerToken],
) -> None:
    """A token does not check a PIN once the process is logged in: a pool (a custom
    key store connecting with its password) must not get in with a wrong one then."""
    peer = peer_tokens["peer-k"]
    wrong = "0" * len(peer.pin)
    with pytest.raises(TokenLoginFailed):
        Hsm(peer.module, peer.label, wrong, pool_size=1)  # the token refuses it
    right = Hsm(peer.module, peer.label, peer.pin, pool_size=1)
    token = right.link.token
    try:
        with pytest.raises(TokenLoginFailed):
            Hsm(peer.module, peer.label, wrong, pool_size=1)  # we refuse it
    finally:
        right.close()
    # Nothing left logged in: the refused attempts left no session behind.
    with token.open(rw=True) as session:
        assert not user_session(peer.module, session)
    with pytest.raises(TokenLoginFailed):
        Hsm(peer.module, peer.label, wrong, pool_size=1)
