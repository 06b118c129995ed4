"""XKS authentication (SigV4, service kms-xks-proxy, per key store credentials) and
secondary authorization (a key store's policy over requestMetadata)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.awsrequest import AWSRequest

from hsmkms.errors import AlreadyExistsException, NotFoundException, ValidationException
from hsmkms.xks.credentials import KIND, XksCredentialStore
from hsmkms.xks.policy import XksPolicies
from tests.support.xks_support import (
    OTHER_ACCESS_KEY_ID,
    OTHER_SECRET,
    SECRET,
    XksServer,
    b64,
    error_name,
    metadata,
)

HEALTH = {"requestMetadata": {"kmsRequestId": "r-1", "kmsOperation": "KmsHealthCheck"}}
AUTH_FAILED = (401, "AuthenticationFailedException")


def test_signed_requests_pass(xks_server: XksServer) -> None:
    assert xks_server.post("health", HEALTH).status_code == 200
    assert xks_server.post("health", HEALTH, region="eu-west-1").status_code == 200


def _move_scope_region(request: AWSRequest) -> None:
    request.headers["Authorization"] = request.headers["Authorization"].replace(
        "/us-east-1/", "/eu-west-1/"
    )


def _tamper_body(request: AWSRequest) -> None:
    request.data = request.body.replace(b"r-1", b"r-2")


@pytest.mark.parametrize(
    "how",
    [
        {"service": "kms"},  # signed for KMS, not for the XKS proxy
        {"region": "ap-south-1"},  # a region this proxy does not serve
        {"mutate": _move_scope_region},  # signed for one region, claims another
        {"signed_at": timedelta(minutes=-6)},  # stale
        {"signed_at": timedelta(minutes=6)},  # from the future
        {"secret": SECRET[:-4] + "AAA="},  # wrong secret
        {"access_key_id": "XKSUNKNOWNACCESSKEYIDCC"},  # unknown id
        {"access_key_id": OTHER_ACCESS_KEY_ID, "secret": OTHER_SECRET},  # another key store's
        {"sign": False},  # no signature at all
        {"mutate": _tamper_body},  # body changed after signing
    ],
)
def test_sigv4_negatives(xks_server: XksServer, how: dict[str, Any]) -> None:
    if "signed_at" in how:  # an offset from now, when the test runs
        how = {"signed_at": datetime.now(UTC) + how["signed_at"]}
    for route in ("health", "keys/any_key/metadata"):
        response = xks_server.post(route, HEALTH, **how)
        assert error_name(response) == AUTH_FAILED, how


def test_key_stores_are_isolated(xks_server: XksServer) -> None:
    other = {"access_key_id": OTHER_ACCESS_KEY_ID, "secret": OTHER_SECRET, "prefix": "tenant/b"}
    assert xks_server.post("health", HEALTH, **other).status_code == 200
    assert error_name(xks_server.post("health", HEALTH, prefix="tenant/b")) == AUTH_FAILED


@pytest.mark.parametrize(
    ("access_key_id", "secret"),
    [
        ("A" * 19, SECRET),
        ("A" * 31, SECRET),
        ("ABCDEFGHIJKLMNOPQRS1TU", SECRET),  # 1 is not in AWS's alphabet
        ("abcdefghijklmnopqrstuv", SECRET),
        ("A" * 22, "s" * 42),
        ("A" * 22, "s" * 65),
        ("A" * 22, "s" * 42 + "!"),
    ],
)
def test_credentials_follow_aws_rules(
    xks_server: XksServer, access_key_id: str, secret: str
) -> None:
    with pytest.raises(ValidationException):
        xks_server.credentials.add("xks", access_key_id, secret)


def test_credentials_are_stored_wrapped(xks_server: XksServer) -> None:
    store = xks_server.km.store
    body = store.get_document(KIND, "XKSTESTACCESSKEYIDAAAA")
    assert body is not None
    assert SECRET not in body and base64.b64decode(SECRET) not in body.encode()
    wrapped = base64.b64decode(json.loads(body)["wrappedSecret"])
    assert len(wrapped) == 12 + len(SECRET) + 16  # IV, AES-GCM body, tag
    with pytest.raises(AlreadyExistsException):
        xks_server.credentials.add("xks", "XKSTESTACCESSKEYIDAAAA", SECRET)
    # Moving a credential to another key store in the database breaks its wrapping.
    moved = json.dumps({**json.loads(body), "uriPrefix": "tenant/b"})
    with store.transaction() as tx:
        tx.put_document(KIND, "XKSMOVEDCREDENTIALXXXXX", moved)
    fresh = XksCredentialStore(store, xks_server.km.hsm)
    from hsmkms.errors import InvalidCiphertextException

    with pytest.raises(InvalidCiphertextException):
        fresh.lookup_for("tenant/b")("XKSMOVEDCREDENTIALXXXXX")
    with store.transaction() as tx:
        tx.delete_document(KIND, "XKSMOVEDCREDENTIALXXXXX")


def test_rotation_without_downtime(xks_server: XksServer) -> None:
    # Another process (the CLI) adds and removes credentials while the server runs.
    operator = XksCredentialStore(xks_server.km.store, xks_server.km.hsm)
    new = operator.add("xks")
    assert len(new.access_key_id) == 26 and len(new.secret_access_key) == 44
    as_new = {"access_key_id": new.access_key_id, "secret": new.secret_access_key}
    assert xks_server.post("health", HEALTH, **as_new).status_code == 200
    assert xks_server.post("health", HEALTH).status_code == 200  # the old one still works
    listed = {c.access_key_id for c in operator.list("xks")}
    assert {new.access_key_id, "XKSTESTACCESSKEYIDAAAA"} <= listed
    assert OTHER_ACCESS_KEY_ID not in listed
    operator.remove(new.access_key_id)
    with pytest.raises(NotFoundException):
        operator.remove(new.access_key_id)
    # Seen by the server's next request (the store's generation moved), no wait.
    assert error_name(xks_server.post("health", HEALTH, **as_new)) == AUTH_FAILED
    assert xks_server.post("health", HEALTH).status_code == 200


POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "AliceEncryptsForEbs",
            "Effect": "Allow",
            "Action": ["xks:Encrypt", "xks:GetKeyMetadata"],
            "Resource": "*",
            "Condition": {
                "ArnEquals": {"xks:AwsPrincipalArn": "arn:aws:iam::123456789012:user/Alice"},
                "StringEquals": {"xks:KmsViaService": "ebs"},
            },
        },
        {
            "Sid": "NeverForReEncrypt",
            "Effect": "Deny",
            "Action": "xks:*",
            "Resource": "*",
            "Condition": {"StringEquals": {"xks:KmsOperation": "ReEncrypt"}},
        },
    ],
}


def _encrypt_as(xks: XksServer, key: str, **meta: str) -> Any:
    body = {"requestMetadata": metadata(**meta), "plaintext": b64(b"p"),
            "encryptionAlgorithm": "AES_GCM"}  # fmt: skip
    return xks.post(f"keys/{key}/encrypt", body)


def test_secondary_authorization(xks_server: XksServer) -> None:
    key = xks_server.km.create_key()["KeyMetadata"]["KeyId"]
    policies = XksPolicies(xks_server.km.store)
    policies.put("xks", json.dumps(POLICY))  # in force for the server's next request
    denied = (403, "AccessDeniedException")
    try:
        assert _encrypt_as(xks_server, key, kmsViaService="ebs").status_code == 200
        bob = "arn:aws:iam::123456789012:user/Bob"
        response = _encrypt_as(xks_server, key, kmsViaService="ebs", awsPrincipalArn=bob)
        assert error_name(response) == denied
        assert "user/Bob" in response.json()["errorMessage"]
        assert error_name(_encrypt_as(xks_server, key)) == denied  # not via EBS
        response = _encrypt_as(xks_server, key, kmsViaService="ebs", kmsOperation="ReEncrypt")
        assert error_name(response) == denied
        told = response.json()["errorMessage"]  # the kind of refusal, never the statement
        assert "an explicit deny" in told and "NeverForReEncrypt" not in told
        encrypted = _encrypt_as(xks_server, key, kmsViaService="ebs").json()
        assert error_name(xks_server.decrypt(key, encrypted)) == denied  # no Decrypt allowed
        assert xks_server.post("health", HEALTH).status_code == 200  # never checked
        other = {"access_key_id": OTHER_ACCESS_KEY_ID, "secret": OTHER_SECRET,
                 "prefix": "tenant/b"}  # fmt: skip
        meta = xks_server.post(f"keys/{key}/metadata", {"requestMetadata": metadata()}, **other)
        assert meta.status_code == 200  # the other key store has no policy
    finally:
        policies.remove("xks")
    assert _encrypt_as(xks_server, key).status_code == 200
    from hsmkms.policy.model import MalformedPolicyDocumentException

    with pytest.raises(MalformedPolicyDocumentException):
        policies.put("xks", '{"Statement": [{"Effect": "Allow", "Action": "xks:*"}]}')
    typo = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "xks:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "xks:*", "Resource": "*",
         "Condition": {"StringEquals": {"xks:KmsOperations": "ReEncrypt"}}}]}  # fmt: skip
    with pytest.raises(MalformedPolicyDocumentException, match=r"(?i)xks:kmsoperations"):
        policies.put("xks", json.dumps(typo))  # a Deny that would never apply


def test_throttling_beyond_max_pending(xks_server: XksServer) -> None:
    from hsmkms.api.app import create_app
    from hsmkms.api.sigv4 import SigV4Verifier
    from hsmkms.config import XksSettings
    from tests.conftest import running
    from tests.support.xks_support import XksServer as Client

    app = create_app(xks_server.km.context, SigV4Verifier(lambda _: None), maintenance_seconds=0,
                     xks=XksSettings(max_pending=0))  # fmt: skip
    with running(app) as url:
        client = Client(url, xks_server.km, xks_server.credentials, None)
        assert error_name(client.post("health", HEALTH)) == (429, "ThrottlingException")
