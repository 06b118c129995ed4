"""External key stores when the proxy fails: down, slow (> 250 ms), or answering
each of the XKS specification's errors; the KMS errors follow the specification's
"KMS Considerations" table (management: XksProxy*, Connect: ConnectionErrorCode,
CreateKey: CustomKeyStoreInvalidState / XksKey*, cryptography: KMSInvalidState)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from hsmkms.errors import (
    CustomKeyStoreInvalidStateException,
    KMSError,
    KMSInvalidStateException,
    XksKeyInvalidConfigurationException,
    XksKeyNotFoundException,
    XksProxyIncorrectAuthenticationCredentialException,
    XksProxyInvalidConfigurationException,
    XksProxyInvalidResponseException,
    XksProxyUriUnreachableException,
)
from hsmkms.keystores.external_client import register_route
from hsmkms.library import KeyManager
from tests.cli.test_cli import self_signed
from tests.conftest import free_port, running
from tests.keystores.test_external_keystore import entry, new_store, xks_key
from tests.support.parallel import serial
from tests.support.xks_fake_proxy import FakeProxy

pytestmark = serial

FAKE = "fake.xks.test"
DOWN = "down.xks.test"

# errorName -> (Create/UpdateCustomKeyStore, ConnectionErrorCode, CreateKey)
EXPECTED: dict[str, tuple[type[KMSError], str, type[KMSError]]] = {
    "ValidationException": (
        XksProxyInvalidResponseException,
        "XKS_PROXY_INVALID_RESPONSE",
        CustomKeyStoreInvalidStateException,
    ),
    "InvalidStateException": (
        XksProxyInvalidConfigurationException,
        "XKS_PROXY_INVALID_CONFIGURATION",
        XksKeyInvalidConfigurationException,
    ),
    "InvalidKeyUsageException": (
        XksProxyInvalidResponseException,
        "XKS_PROXY_INVALID_RESPONSE",
        XksKeyInvalidConfigurationException,
    ),
    "AuthenticationFailedException": (
        XksProxyIncorrectAuthenticationCredentialException,
        "INVALID_CREDENTIALS",
        CustomKeyStoreInvalidStateException,
    ),
    "AccessDeniedException": (
        XksProxyInvalidConfigurationException,
        "XKS_PROXY_ACCESS_DENIED",
        KMSInvalidStateException,
    ),
    "KeyNotFoundException": (
        XksProxyInvalidResponseException,
        "XKS_PROXY_INVALID_RESPONSE",
        XksKeyNotFoundException,
    ),
    "InvalidUriPathException": (
        XksProxyInvalidConfigurationException,
        "XKS_PROXY_INVALID_CONFIGURATION",
        CustomKeyStoreInvalidStateException,
    ),
    "ThrottlingException": (
        XksProxyUriUnreachableException,
        "XKS_PROXY_NOT_REACHABLE",
        CustomKeyStoreInvalidStateException,
    ),
    "UnsupportedOperationException": (
        XksProxyInvalidResponseException,
        "XKS_PROXY_INVALID_RESPONSE",
        CustomKeyStoreInvalidStateException,
    ),
    "DependencyTimeoutException": (
        XksProxyUriUnreachableException,
        "XKS_PROXY_TIMED_OUT",
        CustomKeyStoreInvalidStateException,
    ),
    "InternalException": (
        XksProxyInvalidResponseException,
        "XKS_PROXY_INVALID_RESPONSE",
        CustomKeyStoreInvalidStateException,
    ),
}


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeProxy, str]]:
    proxy = FakeProxy()
    with running(proxy) as url:
        yield proxy, url


@pytest.fixture
def fake(fake_server: tuple[FakeProxy, str], km: KeyManager) -> FakeProxy:
    proxy, url = fake_server
    proxy.reset()
    register_route(km.store, FAKE, url)
    register_route(km.store, DOWN, f"http://127.0.0.1:{free_port()}")  # nobody listens
    return proxy


def fake_store(km: KeyManager, host: str = FAKE) -> str:
    return new_store(km, host, xks_proxy_uri_endpoint=f"https://{host}")


def other_store(km: KeyManager, name: str) -> str:
    """A second store on the fake proxy (another URI path)."""
    return new_store(
        km,
        name,
        xks_proxy_uri_endpoint=f"https://{FAKE}",
        xks_proxy_uri_path="/other/kms/xks/v1",
    )


def connected_key(km: KeyManager) -> tuple[str, str]:
    store_id = fake_store(km)
    km.connect_custom_key_store(custom_key_store_id=store_id)
    return store_id, xks_key(km, store_id, "fake-key-1")["KeyId"]


def test_fake_proxy_round_trip_and_request_metadata(km: KeyManager, fake: FakeProxy) -> None:
    _, key_id = connected_key(km)
    blob = km.encrypt(key_id=key_id, plaintext=b"through the fake")["CiphertextBlob"]
    assert km.decrypt(ciphertext_blob=blob)["Plaintext"] == b"through the fake"
    encrypt = next(r for r in fake.requests if r["route"] == "encrypt")
    assert encrypt["path"] == "/xks/kms/xks/v1/keys/fake-key-1/encrypt"
    assert encrypt["encryptionAlgorithm"] == "AES_GCM"
    assert encrypt["ciphertextDataIntegrityValueAlgorithm"] == "SHA_256"
    metadata = encrypt["requestMetadata"]
    assert metadata["kmsOperation"] == "Encrypt" and metadata["kmsKeyArn"].endswith(key_id)
    assert metadata["awsPrincipalArn"] == f"arn:aws:iam::{km.context.account_id}:root"
    health = next(r for r in fake.requests if r["route"] == "health")
    assert set(health["requestMetadata"]) == {"kmsRequestId", "kmsOperation"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_proxy_error(km: KeyManager, fake: FakeProxy, name: str) -> None:
    management, code, create_key = EXPECTED[name]
    store_id, key_id = connected_key(km)
    blob = km.encrypt(key_id=key_id, plaintext=b"x")["CiphertextBlob"]
    for route in ("health", "metadata", "encrypt", "decrypt"):
        fake.errors[route] = name
    with pytest.raises(management):
        other_store(km, "second")
    with pytest.raises(create_key):
        xks_key(km, store_id, "fake-key-2")
    with pytest.raises(KMSInvalidStateException):
        km.encrypt(key_id=key_id, plaintext=b"x")
    with pytest.raises(KMSInvalidStateException):
        km.decrypt(ciphertext_blob=blob)
    km.disconnect_custom_key_store(custom_key_store_id=store_id)
    km.connect_custom_key_store(custom_key_store_id=store_id)  # succeeds; shows FAILED
    described = entry(km, store_id)
    assert (described["ConnectionState"], described["ConnectionErrorCode"]) == ("FAILED", code)


def test_invalid_ciphertext_from_proxy(km: KeyManager, fake: FakeProxy) -> None:
    store_id, key_id = connected_key(km)
    blob = km.encrypt(key_id=key_id, plaintext=b"x")["CiphertextBlob"]
    fake.errors["decrypt"] = "InvalidCiphertextException"
    with pytest.raises(KMSInvalidStateException, match="ciphertext or encryption context"):
        km.decrypt(ciphertext_blob=blob)
    fake.errors.clear()
    fake.corrupt_cdiv = True  # KMS checks the CDIV itself
    with pytest.raises(KMSInvalidStateException, match="corrupted"):
        km.encrypt(key_id=key_id, plaintext=b"x")
    fake.corrupt_cdiv = False
    fake.raw["encrypt"] = (200, b"not json")
    with pytest.raises(KMSInvalidStateException, match="cannot interpret"):
        km.encrypt(key_id=key_id, plaintext=b"x")
    fake.raw["encrypt"] = (200, b"[" * 5000)  # json: RecursionError, once a 500
    with pytest.raises(KMSInvalidStateException, match="cannot interpret"):
        km.encrypt(key_id=key_id, plaintext=b"x")
    assert entry(km, store_id)["ConnectionState"] == "CONNECTED"


def test_proxy_down(km: KeyManager, fake: FakeProxy) -> None:
    with pytest.raises(XksProxyUriUnreachableException):
        fake_store(km, DOWN)
    store_id, key_id = connected_key(km)
    blob = km.encrypt(key_id=key_id, plaintext=b"x")["CiphertextBlob"]
    register_route(km.store, FAKE, f"http://127.0.0.1:{free_port()}")  # the proxy goes away
    with pytest.raises(KMSInvalidStateException, match="cannot communicate"):
        km.decrypt(ciphertext_blob=blob)
    km.disconnect_custom_key_store(custom_key_store_id=store_id)
    km.connect_custom_key_store(custom_key_store_id=store_id)
    described = entry(km, store_id)
    assert described["ConnectionErrorCode"] == "XKS_PROXY_NOT_REACHABLE"
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "Unavailable"


def test_slow_proxy_times_out_at_250_ms(km: KeyManager, fake: FakeProxy) -> None:
    store_id, key_id = connected_key(km)
    fake.delays = {"health": 0.4, "encrypt": 0.4, "metadata": 0.4}
    started = time.monotonic()
    with pytest.raises(KMSInvalidStateException, match="did not respond in time"):
        km.encrypt(key_id=key_id, plaintext=b"x")
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 0.4, elapsed  # gave up at the budget, before the answer
    fake.delays, fake.body_delays = {"encrypt": 0.15}, {"encrypt": 0.15}
    with pytest.raises(KMSInvalidStateException, match="did not respond in time"):
        km.encrypt(key_id=key_id, plaintext=b"x")  # no phase over 250 ms, the whole is
    fake.delays, fake.body_delays = {"health": 0.4, "encrypt": 0.4, "metadata": 0.4}, {}
    with pytest.raises(CustomKeyStoreInvalidStateException):
        xks_key(km, store_id, "fake-key-2")
    with pytest.raises(XksProxyUriUnreachableException):
        other_store(km, "slow")
    km.disconnect_custom_key_store(custom_key_store_id=store_id)
    km.connect_custom_key_store(custom_key_store_id=store_id)
    assert entry(km, store_id)["ConnectionErrorCode"] == "XKS_PROXY_TIMED_OUT"
    fake.delays = {"health": 0.1}  # under the budget: fine
    km.disconnect_custom_key_store(custom_key_store_id=store_id)
    km.connect_custom_key_store(custom_key_store_id=store_id)
    assert entry(km, store_id)["ConnectionState"] == "CONNECTED"


def test_unhealthy_fleet_and_bad_metadata(km: KeyManager, fake: FakeProxy) -> None:
    fake.health = {
        **fake.health,
        "ekmFleetDetails": [{"id": "a", "model": "m", "healthStatus": "UNAVAILABLE"}],
    }
    with pytest.raises(XksProxyUriUnreachableException):
        fake_store(km)
    fake.reset()
    store_id = fake_store(km)
    km.connect_custom_key_store(custom_key_store_id=store_id)
    fake.metadata = {"keySpec": "AES_256", "keyUsage": ["ENCRYPT"], "keyStatus": "ENABLED"}
    with pytest.raises(XksKeyInvalidConfigurationException):
        xks_key(km, store_id, "encrypt-only")
    fake.metadata = {
        "keySpec": "AES_256",
        "keyUsage": ["ENCRYPT", "DECRYPT"],
        "keyStatus": "DISABLED",
    }
    with pytest.raises(XksKeyInvalidConfigurationException):
        xks_key(km, store_id, "disabled")
    fake.metadata = {
        "keySpec": "AES_128",
        "keyUsage": ["ENCRYPT", "DECRYPT"],
        "keyStatus": "ENABLED",
    }
    with pytest.raises(XksKeyInvalidConfigurationException):
        xks_key(km, store_id, "small")


def test_untrusted_tls_certificate(km: KeyManager, fake: FakeProxy, tmp_path: Path) -> None:
    """A proxy whose certificate no public CA issued: no TLS connection."""
    cert, private = self_signed(tmp_path)  # trusted by no public CA
    port = free_port()
    config = uvicorn.Config(
        fake,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ssl_certfile=str(cert),
        ssl_keyfile=str(private),
    )
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        while not runner.started:
            time.sleep(0.02)
        register_route(km.store, "tls.xks.test", f"https://127.0.0.1:{port}")
        with pytest.raises(XksProxyUriUnreachableException, match="TLS"):
            fake_store(km, "tls.xks.test")
        store_id, _ = connected_key(km)
        register_route(km.store, FAKE, f"https://127.0.0.1:{port}")
        seen = len(fake.requests)
        km.disconnect_custom_key_store(custom_key_store_id=store_id)
        km.connect_custom_key_store(custom_key_store_id=store_id)
        code = entry(km, store_id)["ConnectionErrorCode"]
        assert code == "XKS_PROXY_INVALID_TLS_CONFIGURATION"
        assert len(fake.requests) == seen  # the request never got through
    finally:
        runner.should_exit = True
        thread.join(timeout=10)
