"""Custom key stores of type AWS_CLOUDHSM over a second SoftHSM2 token.

AWS's rules followed here: https://docs.aws.amazon.com/kms/latest/developerguide/keystore-cloudhsm.html
(connection states, Unavailable keys while disconnected, no rotation, symmetric keys
only) and the API Reference's CustomKeyStoreInvalidStateException conditions
(https://docs.aws.amazon.com/kms/latest/APIReference/API_ConnectCustomKeyStore.html).
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hsmkms.errors import (
    CloudHsmClusterInUseException,
    CloudHsmClusterNotFoundException,
    CustomKeyStoreHasCMKsException,
    CustomKeyStoreInvalidStateException,
    CustomKeyStoreNameInUseException,
    CustomKeyStoreNotFoundException,
    IncorrectTrustAnchorException,
    KMSError,
    KMSInvalidStateException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.keystores.cloudhsm import Cluster, register_cluster
from hsmkms.library import KeyManager
from hsmkms.token import MaterialRef
from tests.conftest import ROOT, ManualClock, Server, TokenEnv

CLUSTER = "cluster-abcdefghijk2"


def trust_anchor() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hsmkms test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


ANCHOR = trust_anchor()


@pytest.fixture
def clustered(km: KeyManager, token_env: TokenEnv) -> Iterator[KeyManager]:
    register_cluster(km.store, Cluster(CLUSTER, token_env.cluster_module, token_env.cluster_label))
    yield km
    km.context.tokens.close_all()


def new_store(km: KeyManager, token_env: TokenEnv, name: str = "store", **extra: str) -> str:
    arguments = {
        "custom_key_store_name": name,
        "cloud_hsm_cluster_id": CLUSTER,
        "trust_anchor_certificate": ANCHOR,
        "key_store_password": token_env.cluster_pin,
        **extra,
    }
    store_id: str = km.create_custom_key_store(**arguments)["CustomKeyStoreId"]
    return store_id


def describe(km: KeyManager, store_id: str) -> dict[str, object]:
    entry: dict[str, object] = km.describe_custom_key_stores(custom_key_store_id=store_id)[
        "CustomKeyStores"
    ][0]
    return entry


def store_key(km: KeyManager, store_id: str) -> str:
    meta = km.create_key(origin="AWS_CLOUDHSM", custom_key_store_id=store_id)["KeyMetadata"]
    key_id: str = meta["KeyId"]
    return key_id


def test_keys_live_only_in_the_store_token(clustered: KeyManager, token_env: TokenEnv) -> None:
    km = clustered
    store_id = new_store(km, token_env)
    assert describe(km, store_id)["ConnectionState"] == "DISCONNECTED"
    km.connect_custom_key_store(custom_key_store_id=store_id)
    entry = describe(km, store_id)
    assert entry["ConnectionState"] == "CONNECTED" and entry["CloudHsmClusterId"] == CLUSTER
    assert entry["TrustAnchorCertificate"] == ANCHOR and "ConnectionErrorCode" not in entry

    meta = km.create_key(origin="AWS_CLOUDHSM", custom_key_store_id=store_id)["KeyMetadata"]
    assert meta["Origin"] == "AWS_CLOUDHSM" and meta["CustomKeyStoreId"] == store_id
    assert meta["CloudHsmClusterId"] == CLUSTER and meta["KeyState"] == "Enabled"
    key_id = meta["KeyId"]
    blob = km.encrypt(key_id=key_id, plaintext=b"in the cluster")["CiphertextBlob"]
    assert km.decrypt(ciphertext_blob=blob)["Plaintext"] == b"in the cluster"

    ref = MaterialRef(key_id, 1)
    cluster_token = km.context.tokens.for_store(store_id)
    assert cluster_token.token_label == token_env.cluster_label
    facts = cluster_token.facts(ref)
    assert len(facts) == 1 and facts[0].sensitive and not facts[0].extractable
    assert km.hsm.facts(ref) == []  # nothing of it in the main token
    # The main token's maintenance pass neither reports it missing nor touches it.
    report = km.maintain().as_dict()
    assert (
        report["MaterialMissing"] == []
        and km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    )
    assert len(cluster_token.facts(ref)) == 1


def test_a_disconnected_store_makes_its_keys_unavailable(
    clustered: KeyManager, token_env: TokenEnv
) -> None:
    km = clustered
    store_id = new_store(km, token_env)
    km.connect_custom_key_store(custom_key_store_id=store_id)
    key_id = store_key(km, store_id)
    disabled = store_key(km, store_id)
    km.disable_key(key_id=disabled)
    blob = km.encrypt(key_id=key_id, plaintext=b"kept")["CiphertextBlob"]

    km.disconnect_custom_key_store(custom_key_store_id=store_id)
    assert describe(km, store_id)["ConnectionState"] == "DISCONNECTED"
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "Unavailable"
    with pytest.raises(KMSInvalidStateException):
        km.encrypt(key_id=key_id, plaintext=b"x")
    with pytest.raises(KMSInvalidStateException):
        km.decrypt(ciphertext_blob=blob)
    with pytest.raises(CustomKeyStoreInvalidStateException):
        km.create_key(origin="AWS_CLOUDHSM", custom_key_store_id=store_id)
    with pytest.raises(CustomKeyStoreInvalidStateException):
        km.generate_random(number_of_bytes=8, custom_key_store_id=store_id)
    with pytest.raises(CustomKeyStoreInvalidStateException):
        km.disconnect_custom_key_store(custom_key_store_id=store_id)
    with pytest.raises(CustomKeyStoreHasCMKsException):
        km.delete_custom_key_store(custom_key_store_id=store_id)

    km.connect_custom_key_store(custom_key_store_id=store_id)
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert km.describe_key(key_id=disabled)["KeyMetadata"]["KeyState"] == "Disabled"
    assert km.decrypt(ciphertext_blob=blob)["Plaintext"] == b"kept"
    assert (
        len(km.generate_random(number_of_bytes=8, custom_key_store_id=store_id)["Plaintext"]) == 8
    )


def test_wrong_pin_fails_then_reconnects(clustered: KeyManager, token_env: TokenEnv) -> None:
    km = clustered
    store_id = new_store(km, token_env, key_store_password="not-the-pin")
    km.connect_custom_key_store(custom_key_store_id=store_id)  # succeeds; the store fails
    entry = describe(km, store_id)
    assert entry["ConnectionState"] == "FAILED"
    assert entry["ConnectionErrorCode"] == "INVALID_CREDENTIALS"
    with pytest.raises(CustomKeyStoreInvalidStateException):
        km.connect_custom_key_store(custom_key_store_id=store_id)  # FAILED: disconnect first
    with pytest.raises(CustomKeyStoreInvalidStateException):  # only the name while not
        km.update_custom_key_store(  # disconnected
            custom_key_store_id=store_id, key_store_password=token_env.cluster_pin
        )
    km.disconnect_custom_key_store(custom_key_store_id=store_id)
    km.update_custom_key_store(
        custom_key_store_id=store_id, key_store_password=token_env.cluster_pin
    )
    km.connect_custom_key_store(custom_key_store_id=store_id)
    assert describe(km, store_id)["ConnectionState"] == "CONNECTED"
    km.update_custom_key_store(custom_key_store_id=store_id, new_custom_key_store_name="renamed")
    assert describe(km, store_id)["CustomKeyStoreName"] == "renamed"


def test_a_cluster_whose_token_is_gone(km: KeyManager, token_env: TokenEnv) -> None:
    register_cluster(
        km.store, Cluster("cluster-nosuchtoken2", token_env.cluster_module, "no-such-token")
    )
    store_id = km.create_custom_key_store(
        custom_key_store_name="ghost",
        cloud_hsm_cluster_id="cluster-nosuchtoken2",
        trust_anchor_certificate=ANCHOR,
        key_store_password="whatever1",
    )["CustomKeyStoreId"]
    km.connect_custom_key_store(custom_key_store_id=store_id)
    entry = describe(km, store_id)
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == (
        "FAILED",
        "CLUSTER_NOT_FOUND",
    )


def test_creation_rules(clustered: KeyManager, token_env: TokenEnv) -> None:
    km = clustered
    with pytest.raises(CloudHsmClusterNotFoundException):
        new_store(km, token_env, cloud_hsm_cluster_id="cluster-unregistered2")
    with pytest.raises(IncorrectTrustAnchorException):
        new_store(km, token_env, trust_anchor_certificate="not a certificate")
    with pytest.raises(ValidationException):
        km.create_custom_key_store(custom_key_store_name="incomplete")
    store_id = new_store(km, token_env, name="first")
    with pytest.raises(CustomKeyStoreNameInUseException):
        new_store(km, token_env, name="first")
    with pytest.raises(CloudHsmClusterInUseException):
        new_store(km, token_env, name="second")
    with pytest.raises(CustomKeyStoreNotFoundException):
        km.connect_custom_key_store(custom_key_store_id="cks-00000000000000000")
    with pytest.raises(CustomKeyStoreNotFoundException):
        km.describe_custom_key_stores(custom_key_store_name="nope")
    km.connect_custom_key_store(custom_key_store_id=store_id)
    with pytest.raises(ValidationException):  # Origin must say AWS_CLOUDHSM
        km.create_key(custom_key_store_id=store_id)
    with pytest.raises(UnsupportedOperationException):
        km.create_key(
            origin="AWS_CLOUDHSM", custom_key_store_id=store_id, key_spec="HMAC_256",
            key_usage="GENERATE_VERIFY_MAC",
        )  # fmt: skip
    with pytest.raises(UnsupportedOperationException):
        km.create_key(origin="AWS_CLOUDHSM", custom_key_store_id=store_id, multi_region=True)
    key_id = store_key(km, store_id)
    with pytest.raises(UnsupportedOperationException):  # no rotation in custom key stores
        km.enable_key_rotation(key_id=key_id)
    with pytest.raises(UnsupportedOperationException):
        km.rotate_key_on_demand(key_id=key_id)
    with pytest.raises(CustomKeyStoreInvalidStateException):
        km.delete_custom_key_store(custom_key_store_id=store_id)  # connected


def test_deletion_destroys_material_in_the_store_token(
    clustered: KeyManager, token_env: TokenEnv, clock: ManualClock
) -> None:
    km = clustered
    store_id = new_store(km, token_env)
    km.connect_custom_key_store(custom_key_store_id=store_id)
    gone, left = store_key(km, store_id), store_key(km, store_id)
    cluster_token = km.context.tokens.for_store(store_id)
    for key_id in (gone, left):
        km.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
    clock.advance(days=8)
    km.maintain()
    assert (
        cluster_token.facts(MaterialRef(gone, 1)) == []
        and cluster_token.facts(MaterialRef(left, 1)) == []
    )
    # Deleted while its store is disconnected: the rows go, the material stays there.
    third = store_key(km, store_id)
    km.schedule_key_deletion(key_id=third, pending_window_in_days=7)
    km.disconnect_custom_key_store(custom_key_store_id=store_id)
    clock.advance(days=8)
    report = km.maintain().as_dict()
    assert any(third in arn for arn in report["MaterialLeftInKeyStore"])
    km.connect_custom_key_store(custom_key_store_id=store_id)
    assert len(km.context.tokens.for_store(store_id).facts(MaterialRef(third, 1))) == 1
    km.context.tokens.for_store(store_id).destroy(MaterialRef(third, 1))
    km.disconnect_custom_key_store(custom_key_store_id=store_id)
    km.delete_custom_key_store(custom_key_store_id=store_id)  # no keys left
    assert km.describe_custom_key_stores()["CustomKeyStores"] == []


@pytest.fixture
def own_module(tmp_path: Path, token_env: TokenEnv) -> Iterator[tuple[str, Path, str]]:
    """A token served by its own copy of the SoftHSM2 module (as a separate HSM's module
    would be), so that losing it cannot disturb the tokens of the main module: SoftHSM2
    answers CKR_GENERAL_ERROR for every token of a module once one token vanished."""
    directory = tmp_path / "own"
    pin = secrets.token_hex(8)
    subprocess.run(
        [str(ROOT / "softhsm" / "make-token.sh"), str(directory), "own-token",
         secrets.token_hex(8), pin],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    module = tmp_path / "libsofthsm2-own.so"
    shutil.copy(token_env.cluster_module, module)
    tokens = directory / "tokens"
    yield str(module), tokens, pin


@contextmanager
def softhsm_conf(conf: Path) -> Iterator[None]:
    """SoftHSM2 reads SOFTHSM2_CONF when a module copy is initialised."""
    saved = os.environ["SOFTHSM2_CONF"]
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        yield
    finally:
        os.environ["SOFTHSM2_CONF"] = saved


def test_a_token_that_disappears_while_connected(
    km: KeyManager, own_module: tuple[str, Path, str]
) -> None:
    module, tokens, pin = own_module
    conf = tokens.parent / "softhsm2.conf"
    register_cluster(km.store, Cluster("cluster-owntokenabc2", module, "own-token"))
    store_id = km.create_custom_key_store(
        custom_key_store_name="own",
        cloud_hsm_cluster_id="cluster-owntokenabc2",
        trust_anchor_certificate=ANCHOR,
        key_store_password=pin,
    )["CustomKeyStoreId"]
    try:
        with softhsm_conf(conf):
            km.connect_custom_key_store(custom_key_store_id=store_id)
        key_id = store_key(km, store_id)
        blob = km.encrypt(key_id=key_id, plaintext=b"before")["CiphertextBlob"]
        (token_dir,) = list(tokens.iterdir())
        shutil.move(token_dir, tokens.parent / "away")
        try:
            with pytest.raises(KMSError):  # a clean KMS error, never a hang or a crash
                km.decrypt(ciphertext_blob=blob)
        finally:
            shutil.move(tokens.parent / "away", token_dir)
        # The main token is untouched meanwhile.
        main_key = km.create_key()["KeyMetadata"]["KeyId"]
        assert km.encrypt(key_id=main_key, plaintext=b"main")["KeyId"].endswith(main_key)
        km.disconnect_custom_key_store(custom_key_store_id=store_id)
        with softhsm_conf(conf):  # reconnecting initialises the module copy again
            km.connect_custom_key_store(custom_key_store_id=store_id)
        assert describe(km, store_id)["ConnectionState"] == "CONNECTED"
        assert km.decrypt(ciphertext_blob=blob)["Plaintext"] == b"before"
    finally:
        km.context.tokens.close_all()


def test_custom_key_stores_over_http(server: Server, token_env: TokenEnv) -> None:
    register_cluster(
        server.km.store,
        Cluster("cluster-httptestabc2", token_env.cluster_module, token_env.cluster_label),
    )
    client = server.client()
    with pytest.raises(ClientError) as refused:  # an API caller cannot name a module path
        client.create_custom_key_store(
            CustomKeyStoreName="path", CloudHsmClusterId="/usr/lib/softhsm/libsofthsm2.so",
            TrustAnchorCertificate=ANCHOR, KeyStorePassword=token_env.cluster_pin,
        )  # fmt: skip
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    store_id = client.create_custom_key_store(
        CustomKeyStoreName="over-http",
        CloudHsmClusterId="cluster-httptestabc2",
        TrustAnchorCertificate=ANCHOR,
        KeyStorePassword=token_env.cluster_pin,
    )["CustomKeyStoreId"]
    try:
        client.connect_custom_key_store(CustomKeyStoreId=store_id)
        stores = client.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"]
        assert stores[0]["ConnectionState"] == "CONNECTED"
        key = client.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)["KeyMetadata"]
        assert key["CustomKeyStoreId"] == store_id
        blob = client.encrypt(KeyId=key["KeyId"], Plaintext=b"http")["CiphertextBlob"]
        assert client.decrypt(CiphertextBlob=blob)["Plaintext"] == b"http"
        client.disconnect_custom_key_store(CustomKeyStoreId=store_id)
        with pytest.raises(ClientError) as unavailable:
            client.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
        assert unavailable.value.response["Error"]["Code"] == "KMSInvalidStateException"
    finally:
        server.km.context.tokens.close_all()
    # The PIN is in neither the database nor the audit trail in plaintext.
    server.audit.flush()
    for document in server.km.store.list_documents("custom-key-store").values():
        assert token_env.cluster_pin not in document
    assert token_env.cluster_pin not in server.audit.path.read_text()
