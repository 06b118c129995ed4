"""What a backup carries and what a restore makes of what it could not carry, between two
real SoftHSM2 tokens of one security domain (peer-h, peer-i): an external key store key's
inner layer, keys left behind (never Enabled after the restore, refused with
KMSInvalidStateException), custom key store keys, and the audit trail, which must still
verify on the new token."""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from hsmkms.audit.checkpoint import Checkpoint
from hsmkms.audit.log import AuditLog
from hsmkms.audit.shelf import DatabaseShelf
from hsmkms.audit.verify import verify, verify_archive
from hsmkms.backup.archive import BackupReport, create_backup, restore_backup
from hsmkms.errors import KMSInvalidStateException
from hsmkms.keystores.cloudhsm import Cluster, register_cluster
from hsmkms.keystores.external_client import register_route
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.policy.principals import CredentialStore
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm, MaterialRef
from hsmkms.token.audit import TokenAuditAnchor
from hsmkms.token.domain import create_domain, custody_for, join_domain
from hsmkms.token.templates import Custody
from tests.conftest import ACCOUNT, REGION, PeerToken, Server, TokenEnv, running
from tests.keystores.test_cloudhsm import ANCHOR, CLUSTER
from tests.support.xks_fake_proxy import FakeProxy
from tests.support.xks_support import ACCESS_KEY_ID, SECRET

FAKE = "backup.xks.test"
CONTEXT = {"purpose": "backup"}


@dataclass
class Restored:
    """Token A (the original) and token B (joined A's domain), each with a database."""

    a: Hsm
    b: Hsm
    km_a: KeyManager
    km_b: KeyManager
    trail: Path  # A's audit trail, written before and after the domain and the backup
    made: dict[str, Any]
    backup: BackupReport
    restore: BackupReport


def _trail(directory: Path, hsm: Hsm, store: SqliteStore, node: str, count: int) -> None:
    log = AuditLog(
        directory, anchor=TokenAuditAnchor(hsm, DatabaseShelf(store)), node_id=node,
        checkpoint_records=2,
    )  # fmt: skip
    for n in range(count):
        log.record({"eventName": "Encrypt", "n": n})
    log.close()


def _populate(km: KeyManager, proxy_url: str, token_env: TokenEnv) -> dict[str, Any]:
    """Keys of every kind a backup must think about, and what they produced."""
    made: dict[str, Any] = {}
    register_route(km.store, FAKE, proxy_url)
    xks_store = km.create_custom_key_store(
        custom_key_store_name="external", custom_key_store_type="EXTERNAL_KEY_STORE",
        xks_proxy_uri_endpoint=f"https://{FAKE}", xks_proxy_uri_path="/xks/kms/xks/v1",
        xks_proxy_authentication_credential={
            "AccessKeyId": ACCESS_KEY_ID, "RawSecretAccessKey": SECRET,
        },
        xks_proxy_connectivity="PUBLIC_ENDPOINT",
    )["CustomKeyStoreId"]  # fmt: skip
    km.connect_custom_key_store(custom_key_store_id=xks_store)
    xks = km.create_key(
        origin="EXTERNAL_KEY_STORE", custom_key_store_id=xks_store, xks_key_id="external-1"
    )["KeyMetadata"]["KeyId"]
    made["xks"] = xks
    made["xks_blob"] = km.encrypt(key_id=xks, plaintext=b"double", encryption_context=CONTEXT)[
        "CiphertextBlob"
    ]

    # Material that cannot leave the token: made never-extractable (as before a domain).
    km.hsm.custody = Custody.NEVER_EXTRACTABLE
    stuck = km.create_key(description="never-extractable")["KeyMetadata"]["KeyId"]
    rotated = km.create_key(description="v1 stuck, v2 carried")["KeyMetadata"]["KeyId"]
    made["rotated_v1"] = km.encrypt(key_id=rotated, plaintext=b"version 1")["CiphertextBlob"]
    km.hsm.custody = Custody.DOMAIN
    km.rotate_key_on_demand(key_id=rotated)
    made["rotated_v2"] = km.encrypt(key_id=rotated, plaintext=b"version 2")["CiphertextBlob"]
    made["stuck"], made["rotated"] = stuck, rotated
    made["stuck_blob"] = km.encrypt(key_id=stuck, plaintext=b"stuck")["CiphertextBlob"]
    km.disable_key(key_id=stuck)  # its state before the restore: Disabled, not Enabled
    made["ed"] = km.create_key(key_spec="ECC_NIST_EDWARDS25519", key_usage="SIGN_VERIFY")[
        "KeyMetadata"
    ]["KeyId"]

    register_cluster(km.store, Cluster(CLUSTER, token_env.cluster_module, token_env.cluster_label))
    cloudhsm_store = km.create_custom_key_store(
        custom_key_store_name="cluster", cloud_hsm_cluster_id=CLUSTER,
        trust_anchor_certificate=ANCHOR, key_store_password=token_env.cluster_pin,
    )["CustomKeyStoreId"]  # fmt: skip
    km.connect_custom_key_store(custom_key_store_id=cloudhsm_store)
    cloudhsm = km.create_key(origin="AWS_CLOUDHSM", custom_key_store_id=cloudhsm_store)[
        "KeyMetadata"
    ]["KeyId"]
    made["cloudhsm"], made["cloudhsm_store"] = cloudhsm, cloudhsm_store
    made["cloudhsm_blob"] = km.encrypt(key_id=cloudhsm, plaintext=b"clustered")["CiphertextBlob"]
    made["aes"] = km.create_key()["KeyMetadata"]["KeyId"]
    made["aes_blob"] = km.encrypt(key_id=made["aes"], plaintext=b"plain aes")["CiphertextBlob"]
    return made


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    with running(FakeProxy()) as url:
        yield url


@pytest.fixture(scope="module")
def deployment(
    peer_tokens: dict[str, PeerToken],
    token_env: TokenEnv,
    proxy: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Restored]:
    f, g = peer_tokens["peer-h"], peer_tokens["peer-i"]
    work = tmp_path_factory.mktemp("carry")
    trail = work / "audit"
    store_a = SqliteStore(work / "a.db")
    # Before the domain: the audit key is never-extractable. Node "gone" never writes
    # again; node "early" goes on after the domain exists.
    early = Hsm(f.module, f.label, f.pin, pool_size=2)
    _trail(trail, early, store_a, "gone", 5)
    _trail(trail, early, store_a, "early", 3)
    early.close()
    domain = create_domain(f.module, f.label, f.so_pin, f.pin, custodians=2, threshold=2)
    join_domain(g.module, g.label, g.so_pin, g.pin, domain.shares)
    a = Hsm(f.module, f.label, f.pin, pool_size=2)
    b = Hsm(g.module, g.label, g.pin, pool_size=2)
    a.custody, b.custody = custody_for(a), custody_for(b)
    assert a.custody is Custody.DOMAIN
    km_a = KeyManager(Deployment(store_a, a, account_id=ACCOUNT), REGION)
    made = _populate(km_a, proxy, token_env)
    _trail(trail, a, store_a, "early", 3)

    out = work / "backup.json"
    backup = create_backup(a, f"sqlite:///{work / 'a.db'}", out, allow_partial=True)
    _trail(trail, a, store_a, "early", 3)  # the old node goes on after the backup ...
    _trail(trail, a, store_a, "late", 3)  # ... and another process starts a new chain
    km_a.context.tokens.close_all()  # B will open the cluster token in this process
    restore = restore_backup(b, f"sqlite:///{work / 'b.db'}", out)
    store_b = SqliteStore(work / "b.db")
    km_b = KeyManager(Deployment(store_b, b, account_id=ACCOUNT), REGION)
    yield Restored(a, b, km_a, km_b, trail, made, backup, restore)
    km_b.context.tokens.close_all()
    store_b.close()
    store_a.close()
    a.close()
    b.close()


def _state(km: KeyManager, key_id: str) -> str:
    state: str = km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"]
    return state


def test_external_key_store_keys_are_carried_and_decrypt_after_restore(
    deployment: Restored,
) -> None:
    km, made = deployment.km_b, deployment.made
    assert made["xks"] not in json.dumps(deployment.backup.held_elsewhere)
    assert made["xks"] not in json.dumps(deployment.backup.not_carried)
    assert _state(km, made["xks"]) == "Enabled"
    answer = km.decrypt(ciphertext_blob=made["xks_blob"], encryption_context=CONTEXT)
    assert answer["Plaintext"] == b"double"
    again = km.encrypt(key_id=made["xks"], plaintext=b"after restore")["CiphertextBlob"]
    assert km.decrypt(ciphertext_blob=again)["Plaintext"] == b"after restore"
    carried = km.decrypt(ciphertext_blob=made["aes_blob"])
    assert carried["Plaintext"] == b"plain aes"


def test_keys_whose_material_stayed_behind_are_never_enabled(deployment: Restored) -> None:
    km, made = deployment.km_b, deployment.made
    left_out = {entry["key_id"]: entry for entry in deployment.backup.not_carried}
    assert set(left_out) == {made["stuck"], made["rotated"], made["ed"]}
    assert "never-extractable" in left_out[made["stuck"]]["reason"]
    assert "EC_EDWARDS" in left_out[made["ed"]]["reason"]
    after = {entry["key_id"]: entry for entry in deployment.restore.not_carried}
    assert set(after) == set(left_out)

    assert _state(km, made["stuck"]) == "Unavailable"
    assert _state(km, made["ed"]) == "Unavailable"
    with pytest.raises(KMSInvalidStateException, match="unavailable"):
        km.decrypt(ciphertext_blob=made["stuck_blob"])
    with pytest.raises(KMSInvalidStateException, match="unavailable"):
        km.sign(key_id=made["ed"], message=b"m", signing_algorithm="ED25519_SHA_512")
    with pytest.raises(KMSInvalidStateException):
        km.enable_key(key_id=made["stuck"])  # no way around it: the material is not here

    # Its current version came along: Enabled, and only the old ciphertexts are refused.
    assert _state(km, made["rotated"]) == "Enabled"
    assert km.decrypt(ciphertext_blob=made["rotated_v2"])["Plaintext"] == b"version 2"
    with pytest.raises(KMSInvalidStateException, match="not in the token"):
        km.decrypt(ciphertext_blob=made["rotated_v1"])
    versions = {v.version: v.state.value for v in km.store.list_versions(made["rotated"])}
    assert versions == {1: "Missing", 2: "Active"}


def test_cloudhsm_keys_come_back_unavailable_until_their_store_finds_their_material(
    deployment: Restored, token_env: TokenEnv
) -> None:
    km, made = deployment.km_b, deployment.made
    (elsewhere,) = deployment.backup.held_elsewhere
    assert elsewhere["key_id"] == made["cloudhsm"] and "custom key store" in elsewhere["reason"]
    assert _state(km, made["cloudhsm"]) == "Unavailable"
    stores = km.describe_custom_key_stores(custom_key_store_id=made["cloudhsm_store"])
    assert stores["CustomKeyStores"][0]["ConnectionState"] == "DISCONNECTED"
    with pytest.raises(KMSInvalidStateException):
        km.decrypt(ciphertext_blob=made["cloudhsm_blob"])

    km.connect_custom_key_store(custom_key_store_id=made["cloudhsm_store"])
    assert _state(km, made["cloudhsm"]) == "Enabled"  # the cluster token still holds it
    assert km.decrypt(ciphertext_blob=made["cloudhsm_blob"])["Plaintext"] == b"clustered"

    # The cluster lost it: connecting again finds that and keeps the key Unavailable.
    km.disconnect_custom_key_store(custom_key_store_id=made["cloudhsm_store"])
    cluster = Hsm(token_env.cluster_module, token_env.cluster_label, token_env.cluster_pin, 1)
    try:
        assert cluster.destroy(MaterialRef(made["cloudhsm"], 1)) == 1
    finally:
        cluster.close()
    km.connect_custom_key_store(custom_key_store_id=made["cloudhsm_store"])
    assert _state(km, made["cloudhsm"]) == "Unavailable"
    with pytest.raises(KMSInvalidStateException, match="unavailable"):
        km.decrypt(ciphertext_blob=made["cloudhsm_blob"])


def test_an_external_key_store_key_without_its_inner_layer_is_not_enabled_by_connecting(
    deployment: Restored,
) -> None:
    km = deployment.km_b
    store_id = km.describe_key(key_id=deployment.made["xks"])["KeyMetadata"]["CustomKeyStoreId"]
    key_id = km.create_key(
        origin="EXTERNAL_KEY_STORE", custom_key_store_id=store_id, xks_key_id="external-2"
    )["KeyMetadata"]["KeyId"]
    blob = km.encrypt(key_id=key_id, plaintext=b"inner layer")["CiphertextBlob"]
    assert deployment.b.destroy(MaterialRef(key_id, 1)) == 1
    with pytest.raises(KMSInvalidStateException, match="not in the token"):
        km.decrypt(ciphertext_blob=blob)
    km.disconnect_custom_key_store(custom_key_store_id=store_id)
    km.connect_custom_key_store(custom_key_store_id=store_id)
    assert _state(km, key_id) == "Unavailable"  # connecting checked the main token
    km.maintain()
    assert _state(km, key_id) == "Unavailable"
    with pytest.raises(KMSInvalidStateException, match="unavailable"):
        km.decrypt(ciphertext_blob=blob)
    assert _state(km, deployment.made["xks"]) == "Enabled"  # its material is there


def test_the_old_trail_verifies_on_the_restored_token(deployment: Restored, tmp_path: Path) -> None:
    on_a = verify(deployment.trail, TokenAuditAnchor(deployment.a))
    assert on_a.ok, on_a.problems
    shelf = DatabaseShelf(deployment.km_b.store)
    # On B the trail is one a backup carried: checked as an archive kept elsewhere.
    on_b = verify_archive(deployment.trail, TokenAuditAnchor(deployment.b, shelf))
    assert on_b.ok, on_b.problems
    assert set(on_b.chains) == {"gone.w0", "early.w0", "late.w0"}
    notes = " ".join(on_b.notes)
    assert "does not hold" in notes  # checkpoints of the pre-domain key, vouched for
    assert "late.w0" in notes  # a chain begun after the backup: its tail is not pinned

    # Still found on the new token: an edited checkpoint, a removed record.
    copy = tmp_path / "audit"
    shutil.copytree(deployment.trail, copy)
    history = copy / "gone.w0.checkpoints.jsonl"
    lines = history.read_text().splitlines()
    first = Checkpoint.parse(lines[0].encode())
    forged = replace(first, head="0" * 64)
    history.write_text("\n".join([forged.line().decode().rstrip("\n"), *lines[1:]]) + "\n")
    result = verify_archive(copy, TokenAuditAnchor(deployment.b, shelf))
    assert not result.ok and "gone.w0" in result.problem
    shutil.rmtree(copy)
    shutil.copytree(deployment.trail, copy)
    (segment,) = sorted(copy.glob("early.w0.*.jsonl"))[:1]
    kept = segment.read_text().splitlines()
    segment.write_text("\n".join(kept[:-1]) + "\n")
    assert not verify_archive(copy, TokenAuditAnchor(deployment.b, shelf)).ok


def test_the_restored_audit_keys_are_the_carried_ones(deployment: Restored) -> None:
    carried = deployment.restore.audit
    assert carried["keys"] >= 1 and carried["checkpoints"] == 2  # chains gone.w0, early.w0
    # Its last checkpoint was signed by the pre-domain key only: re-signed by a carried one.
    assert [name.split("/")[-1] for name in carried["handed_over"]] == ["gone.w0"]


def test_creating_a_key_backups_cannot_carry_warns(
    deployment: Restored, caplog: pytest.LogCaptureFixture
) -> None:
    km = deployment.km_a
    with caplog.at_level(logging.WARNING, logger="hsmkms"):
        aes = km.create_key()["KeyMetadata"]["KeyId"]
        assert not caplog.records
        ed = km.create_key(key_spec="ECC_NIST_EDWARDS25519", key_usage="SIGN_VERIFY")
    (warning,) = caplog.records
    assert ed["KeyMetadata"]["KeyId"] in warning.getMessage()
    assert "backup" in warning.getMessage() and "EC_EDWARDS" in warning.getMessage()
    km.schedule_key_deletion(key_id=aes, pending_window_in_days=7)


def test_a_key_without_material_answers_invalid_state_over_http(server: Server) -> None:
    client = server.client()
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    blob = client.encrypt(KeyId=key_id, Plaintext=b"gone soon")["CiphertextBlob"]
    assert server.km.hsm.destroy(MaterialRef(key_id, 1)) == 1
    server.km.context.changed()
    for attempt in ("before the maintenance pass", "after it"):
        with pytest.raises(ClientError) as caught:
            client.decrypt(CiphertextBlob=blob)
        error = caught.value.response
        assert error["Error"]["Code"] == "KMSInvalidStateException", attempt
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400, attempt
        server.km.maintain()
    assert client.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Unavailable"

    # Nobody else learns the key's state: authorization answers first.
    allow_all = {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}
    deny = {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}
    stranger = f"arn:aws:iam::444455556666:user/stranger-{uuid.uuid4().hex[:8]}"
    credential = CredentialStore(server.km.store, server.km.hsm).add(stranger)
    CredentialStore(server.km.store, server.km.hsm).attach_policy(
        stranger, "all", json.dumps({"Version": "2012-10-17", "Statement": [allow_all]})
    )
    others = [
        server.principal(f"nobody-{uuid.uuid4().hex[:8]}"),
        server.principal(
            f"denied-{uuid.uuid4().hex[:8]}",
            json.dumps({"Version": "2012-10-17", "Statement": [allow_all, deny]}),
        ),
        server._client(credential.access_key_id, credential.secret_access_key, REGION),
    ]
    for other in others:
        with pytest.raises(ClientError) as caught:
            other.decrypt(CiphertextBlob=blob)
        assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
