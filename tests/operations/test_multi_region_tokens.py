"""Multi-Region keys across tokens, as separate HSMs per region would be: us-east-1 and
us-west-2 on token D, eu-west-1 on token E, both in one security domain. A replica's
material reaches E only wrapped under the domain key (SoftHSM2 tokens peer-d, peer-e)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hsmkms.bootstrap import open_region_tokens
from hsmkms.config import load_settings
from hsmkms.errors import (
    KMSInternalException,
    KMSInvalidStateException,
    NotFoundException,
    UnsupportedOperationException,
)
from hsmkms.keys import blob
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm
from hsmkms.token.domain import create_domain, custody_for, join_domain
from hsmkms.token.templates import Custody, MaterialRef
from tests.conftest import ACCOUNT, ManualClock, PeerToken
from tests.operations.test_multi_region import FAMILIES, create_mrk, interoperate

EU, WEST = "eu-west-1", "us-west-2"


@pytest.fixture(scope="module")
def tokens(peer_tokens: dict[str, PeerToken]) -> Iterator[tuple[Hsm, Hsm]]:
    d, e = peer_tokens["peer-d"], peer_tokens["peer-e"]
    # Domain set-up logs in as SO: before any user session is open on these tokens.
    domain = create_domain(d.module, d.label, d.so_pin, d.pin, custodians=2, threshold=2)
    join_domain(e.module, e.label, e.so_pin, e.pin, domain.shares)
    token_d = Hsm(d.module, d.label, d.pin, pool_size=2)
    token_e = Hsm(e.module, e.label, e.pin, pool_size=2)
    for token in (token_d, token_e):
        token.custody = custody_for(token)  # new material can be wrapped under the domain
    yield token_d, token_e
    token_d.close()
    token_e.close()


@pytest.fixture
def km(tokens: tuple[Hsm, Hsm], tmp_path: Path, clock: ManualClock) -> Iterator[KeyManager]:
    token_d, token_e = tokens
    store = SqliteStore(tmp_path / "hsmkms.db")
    deployment = Deployment(
        store, token_d, account_id=ACCOUNT, clock=clock, region_tokens={EU: token_e}
    )
    yield KeyManager(deployment, "us-east-1")
    store.close()


@pytest.mark.parametrize(("spec", "usage"), FAMILIES)
def test_a_replica_on_another_token_interoperates_for_every_key_family(
    km: KeyManager, tokens: tuple[Hsm, Hsm], spec: str, usage: str
) -> None:
    token_d, token_e = tokens
    key_id = create_mrk(km, spec, usage)
    ref = MaterialRef(key_id, 1)
    assert token_e.facts(ref) == []
    km.replicate_key(key_id=key_id, replica_region=EU)
    copied = [f for f in token_e.facts(ref) if f.object_class != "PUBLIC_KEY"]
    assert [(f.label, f.extractable, f.local) for f in copied] == [(ref.label, True, False)]
    assert all(f.sensitive for f in copied)  # unwrapped in E, never readable
    eu = km.for_region(EU)
    interoperate(km, eu, key_id, spec)
    interoperate(eu, km, key_id, spec)
    # us-west-2 shares token D with the primary: nothing is copied there.
    before = len(token_d.facts(ref))
    km.replicate_key(key_id=key_id, replica_region=WEST)
    assert len(token_d.facts(ref)) == before
    interoperate(km.for_region(WEST), eu, key_id, spec)


def test_rotation_reaches_the_replicas_token(km: KeyManager, tokens: tuple[Hsm, Hsm]) -> None:
    _, token_e = tokens
    key_id = create_mrk(km)
    km.replicate_key(key_id=key_id, replica_region=EU)
    km.rotate_key_on_demand(key_id=key_id)
    assert token_e.facts(MaterialRef(key_id, 2))
    eu = km.for_region(EU)
    made = eu.encrypt(key_id=key_id, plaintext=b"v2")["CiphertextBlob"]
    assert blob.decode(made).version == 2
    assert km.decrypt(ciphertext_blob=made)["Plaintext"] == b"v2"
    # The primary moves to E; rotating there sends version 3 to D.
    km.update_primary_region(key_id=key_id, primary_region=EU)
    eu.rotate_key_on_demand(key_id=key_id)
    made = km.encrypt(key_id=key_id, plaintext=b"v3")["CiphertextBlob"]
    assert blob.decode(made).version == 3
    assert eu.decrypt(ciphertext_blob=made)["Plaintext"] == b"v3"


def test_deleting_a_replica_removes_its_objects_from_its_token(
    km: KeyManager, tokens: tuple[Hsm, Hsm], clock: ManualClock
) -> None:
    token_d, token_e = tokens
    key_id = create_mrk(km)
    km.replicate_key(key_id=key_id, replica_region=EU)
    km.for_region(EU).schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
    clock.advance(days=7)
    assert len(km.maintain().deleted) == 1
    assert token_e.facts(MaterialRef(key_id, 1)) == []
    assert token_d.facts(MaterialRef(key_id, 1))
    with pytest.raises(NotFoundException):
        km.for_region(EU).describe_key(key_id=key_id)
    km.replicate_key(key_id=key_id, replica_region=EU)  # AWS lets you replicate it again
    interoperate(km, km.for_region(EU), key_id, "SYMMETRIC_DEFAULT")


def test_material_that_cannot_leave_its_token_is_refused_not_copied(
    hsm: Hsm, tokens: tuple[Hsm, Hsm], tmp_path: Path
) -> None:
    """The session's main token is in no domain (its material is never extractable):
    a replica on token E cannot get it, and no replica is recorded."""
    _, token_e = tokens
    store = SqliteStore(tmp_path / "outside.db")
    try:
        deployment = Deployment(store, hsm, account_id=ACCOUNT, region_tokens={EU: token_e})
        km = KeyManager(deployment, "us-east-1")
        key_id = create_mrk(km)
        with pytest.raises((KMSInvalidStateException, UnsupportedOperationException)):
            km.replicate_key(key_id=key_id, replica_region=EU)
        with pytest.raises(NotFoundException):
            km.for_region(EU).describe_key(key_id=key_id)
        assert token_e.facts(MaterialRef(key_id, 1)) == []
        config = km.describe_key(key_id=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
        assert config["ReplicaKeys"] == []
    finally:
        store.close()


def test_ed25519_material_is_reported_as_not_replicable_across_tokens(
    km: KeyManager, tokens: tuple[Hsm, Hsm]
) -> None:
    """SoftHSM2 2.6 cannot wrap EdDSA private keys: refused with the reason."""
    _, token_e = tokens
    key_id = create_mrk(km, "ECC_NIST_EDWARDS25519", "SIGN_VERIFY")
    with pytest.raises(UnsupportedOperationException, match="EC_EDWARDS"):
        km.replicate_key(key_id=key_id, replica_region=EU)
    km.replicate_key(key_id=key_id, replica_region=WEST)  # same token: no wrapping needed
    signed = km.sign(key_id=key_id, message=b"m", signing_algorithm="ED25519_SHA_512")
    checked = km.for_region(WEST).verify(
        key_id=key_id, message=b"m", signature=signed["Signature"],
        signing_algorithm="ED25519_SHA_512",
    )  # fmt: skip
    assert checked["SignatureValid"] is True
    assert token_e.facts(MaterialRef(key_id, 1)) == []


def test_region_token_settings_open_one_token_per_label(
    peer_tokens: dict[str, PeerToken], tokens: tuple[Hsm, Hsm], tmp_path: Path
) -> None:
    token_d, _ = tokens
    d, e = peer_tokens["peer-d"], peer_tokens["peer-e"]
    (tmp_path / f"{e.label}.pin").write_text(e.pin + "\n")
    settings = load_settings({
        "HSMKMS_PKCS11_LIB": d.module, "HSMKMS_TOKEN_LABEL": d.label,
        "HSMKMS_REGION_TOKENS": f" {EU}={e.label}, {WEST}={d.label} ",
        "HSMKMS_REGION_PIN_DIR": str(tmp_path),
    })  # fmt: skip
    assert settings.regions.tokens == {EU: e.label, WEST: d.label}
    opened = open_region_tokens(settings, token_d)
    try:
        assert opened[WEST] is token_d  # the main token's label: the main Hsm
        assert opened[EU] is not token_d and opened[EU].custody is Custody.DOMAIN
    finally:
        opened[EU].close()
    for bad in ("eu-west-1", "eu-west-1=", "mars-1=x"):
        with pytest.raises(ValueError, match="HSMKMS_REGION_TOKENS"):
            load_settings({"HSMKMS_REGION_TOKENS": bad})
    main_elsewhere = load_settings({"HSMKMS_REGION_TOKENS": f"us-east-1={e.label}"})
    with pytest.raises(KMSInternalException, match="main region"):
        open_region_tokens(main_elsewhere, token_d)


def test_maintenance_checks_each_key_against_its_regions_token(km: KeyManager) -> None:
    eu = km.for_region(EU)
    key_id = eu.create_key()["KeyMetadata"]["KeyId"]  # on token E only
    mrk = create_mrk(eu)
    eu.replicate_key(key_id=mrk, replica_region="us-east-1")  # copied to token D
    report = km.maintain().reconcile
    assert report.material_missing == []
    assert eu.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert km.describe_key(key_id=mrk)["KeyMetadata"]["KeyState"] == "Enabled"
