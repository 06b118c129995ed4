"""Ciphertexts name their key: whoever presents one is authorized against that key, for
every blob format and every operation that takes a ciphertext (finding 1 of the trust
issue: an external key store blob was decrypted for anyone, because authorization read
only the 0xA1 format and skipped the check for any other).

Real server and token; the external key store's proxy is the session's XKS server."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore import xform_name

from hsmkms.keys import blobs
from hsmkms.operations.table import OPERATIONS
from hsmkms.policy.needs import Resource
from hsmkms.token import Hsm
from tests.conftest import TokenEnv
from tests.keystores.test_external_keystore import external_key
from tests.support.authz_support import (
    ATTACKERS,
    NOBODY,
    ROOT_STATEMENT,
    AuthzServer,
    allow,
    authz_server,
    policy,
    refusal,
    xks_store,
)
from tests.support.xks_support import XksServer

SECRET = b"the payroll of every employee"
CONTEXT = {"purpose": "payroll"}
# Every operation that takes a ciphertext, from the operation table: a new one is
# covered here as soon as the table says so (and fails until `requests` knows it).
TAKES_CIPHERTEXT = (Resource.CIPHERTEXT, Resource.REENCRYPT)
CIPHERTEXT_OPERATIONS = sorted(n for n, o in OPERATIONS.items() if o.resource in TAKES_CIPHERTEXT)
DRY_RUN_FORMS: dict[str, dict[str, Any]] = {
    "call": {},
    "dry-run": {"DryRun": True},
    "dry-run-ignoring-ciphertext": {"DryRun": True, "DryRunModifiers": ["IGNORE_CIPHERTEXT"]},
}


@pytest.fixture(scope="module")
def authz(
    hsm: Hsm,
    tmp_path_factory: pytest.TempPathFactory,
    token_env: TokenEnv,
    xks_server: XksServer,
) -> Iterator[AuthzServer]:
    with authz_server(hsm, tmp_path_factory.mktemp("authz-blobs"), token_env, xks_server) as s:
        yield s


def _symmetric(admin: Any) -> str:
    key: str = admin.create_key()["KeyMetadata"]["KeyId"]
    return key


def _external(admin: Any, xks_server: XksServer) -> str:
    store_id = xks_store(admin)
    key: str = admin.create_key(
        Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store_id, XksKeyId=external_key(xks_server)
    )["KeyMetadata"]["KeyId"]
    return key


# How to make a blob of each format the decoder knows. A format added to the registry
# fails test_every_blob_format_has_a_maker until it gets one here.
MAKERS: dict[int, Callable[[Any, XksServer], str]] = {
    0xA1: lambda admin, _: _symmetric(admin),
    0xA2: _external,
}


@pytest.fixture(scope="module")
def ciphertexts(authz: AuthzServer, xks_server: XksServer) -> dict[int, tuple[str, bytes]]:
    """Format byte -> (key, a ciphertext of SECRET under it), made by the admin."""
    admin = authz.client()
    made = {}
    for marker in blobs.FORMATS:
        key = MAKERS[marker](admin, xks_server)
        blob = admin.encrypt(KeyId=key, Plaintext=SECRET, EncryptionContext=CONTEXT)
        assert blob["CiphertextBlob"][0] == marker
        made[marker] = (key, blob["CiphertextBlob"])
    return made


@pytest.fixture(scope="module")
def attackers_key(authz: AuthzServer) -> str:
    """A key every attacker may encrypt under: where a ReEncrypt would move the secret."""
    statement = allow(list(ATTACKERS.values()), "kms:ReEncryptTo", "kms:Encrypt")
    made = authz.client().create_key(Policy=policy(ROOT_STATEMENT, statement))["KeyMetadata"]
    arn: str = made["Arn"]  # another account names a key of ours by ARN
    return arn


def requests(op: str, blob: bytes, destination: str) -> dict[str, Any]:
    """A request of each ciphertext operation with no KeyId: the blob names the key."""
    known = {
        "Decrypt": {"CiphertextBlob": blob, "EncryptionContext": CONTEXT},
        "ReEncrypt": {
            "CiphertextBlob": blob,
            "SourceEncryptionContext": CONTEXT,
            "DestinationKeyId": destination,
        },
    }
    assert op in known, f"{op} takes a ciphertext: add a request for it here"
    return known[op]


def test_every_blob_format_has_a_maker() -> None:
    assert set(blobs.FORMATS) <= set(MAKERS), "a new blob format needs a maker in MAKERS"


@pytest.mark.parametrize("form", sorted(DRY_RUN_FORMS))
@pytest.mark.parametrize("op", CIPHERTEXT_OPERATIONS)
@pytest.mark.parametrize("who", sorted(ATTACKERS))
@pytest.mark.parametrize("marker", sorted(blobs.FORMATS), ids=lambda m: f"0x{m:02X}")
def test_a_ciphertext_is_authorized_against_the_key_it_names(
    authz: AuthzServer,
    ciphertexts: dict[int, tuple[str, bytes]],
    attackers_key: str,
    marker: int,
    who: str,
    op: str,
    form: str,
) -> None:
    key, blob = ciphertexts[marker]
    attacker = authz.client(ATTACKERS[who])
    members = {**requests(op, blob, attackers_key), **DRY_RUN_FORMS[form]}
    code, message, request_id = refusal(getattr(attacker, xform_name(op)), **members)
    assert code == "AccessDeniedException", message
    assert key in message  # refused on the key the ciphertext names
    for shown in (SECRET, base64.b64encode(SECRET)):
        assert shown.decode(errors="replace") not in message
    record = authz.records()[request_id]
    assert record["eventName"] == op and record["errorCode"] == "AccessDeniedException"
    assert record["userIdentity"]["arn"] == ATTACKERS[who]
    assert any(key in r["ARN"] for r in record["resources"])
    # The admin still gets the secret back: the refusal was about the caller, not the blob.
    assert (
        authz.client().decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)["Plaintext"]
        == SECRET
    )


UNREADABLE = {
    "unknown-format": bytes([0xA7]) + bytes(80),
    "empty-format-byte-only": bytes([0xA1]),
    "0xA1-too-short": bytes([0xA1]) + bytes(40),
    "0xA2-too-short": bytes([0xA2]) + bytes(40),
    "0xA2-metadata-overruns": bytes([0xA2]) + bytes(48) + bytes([200]) + bytes(40),
}


@pytest.mark.parametrize("blob", UNREADABLE.values(), ids=UNREADABLE.keys())
@pytest.mark.parametrize("op", CIPHERTEXT_OPERATIONS)
def test_an_unreadable_blob_is_refused_before_authorization(
    authz: AuthzServer, attackers_key: str, op: str, blob: bytes
) -> None:
    """InvalidCiphertextException comes first, before authorization looks for a key to
    check (there is none to find), for anyone; even a destination the caller may not
    use is not reached."""
    admin_only = authz.client().create_key()["KeyMetadata"]["KeyId"]
    for destination in (attackers_key, admin_only):
        members = requests(op, blob, destination)
        code, _, request_id = refusal(getattr(authz.client(NOBODY), xform_name(op)), **members)
        assert code == "InvalidCiphertextException"
        assert authz.records()[request_id]["errorCode"] == "InvalidCiphertextException"


def test_an_rsa_ciphertext_needs_its_key_id(authz: AuthzServer) -> None:
    """RSA ciphertexts are not blobs: Decrypt needs the KeyId of the asymmetric key
    (https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html, KeyId); without
    it the ciphertext is not one hsmkms can read."""
    admin = authz.client()
    key = admin.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    sealed = admin.encrypt(KeyId=key, Plaintext=SECRET, EncryptionAlgorithm="RSAES_OAEP_SHA_1")
    blob = sealed["CiphertextBlob"]
    code, _, _ = refusal(admin.decrypt, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_1")
    assert code == "InvalidCiphertextException"
    opened = admin.decrypt(KeyId=key, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_1")
    assert opened["Plaintext"] == SECRET
    code, message, _ = refusal(
        authz.client(NOBODY).decrypt,
        KeyId=key,
        CiphertextBlob=blob,
        EncryptionAlgorithm="RSAES_OAEP_SHA_1",
    )
    assert code == "AccessDeniedException" and key in message
