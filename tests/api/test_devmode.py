"""Development mode (`hsmkms serve --dev`, HSMKMS_DEV_MODE): moto_server's and
LocalStack's reset endpoints wipe keys, aliases, grants, key policies and custom key
stores (token objects destroyed, database emptied, the reset in the audit trail) in well
under a second; refused over a security domain or a token that is not SoftHSM2; off by
default."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from hsmkms.api.app import create_app
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.audit.log import AuditLog
from hsmkms.config import load_settings
from hsmkms.errors import KMSInvalidStateException
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.operations.devmode import refusal, reset_state
from hsmkms.policy.principals import ADMIN_POLICY, CredentialStore
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm, MaterialRef
from hsmkms.token.domain import create_domain
from tests.conftest import PeerToken, Server, nss_token_env, running
from tests.support import loopback
from tests.support.parallel import serial
from tests.support.resilience_helpers import client

pytestmark = [
    serial,  # the reset's time is measured
    pytest.mark.needs_token("softhsm", reason="development mode runs on SoftHSM2 only"),
]
MOTO_ACCOUNT = "123456789012"


class DevServer:
    def __init__(self, url: str, kms: Any, deployment: Deployment, audit: AuditLog) -> None:
        self.url, self.kms, self.deployment, self.audit = url, kms, deployment, audit

    def post(self, path: str) -> httpx.Response:
        return loopback.post(self.url + path, timeout=30)


@pytest.fixture
def dev(hsm: Hsm, tmp_path: Path) -> Iterator[DevServer]:
    """A server in development mode, account 123456789012 (moto's), on the session's
    SoftHSM2 token with a database of its own."""
    store = SqliteStore(tmp_path / "hsmkms.db")
    deployment = Deployment(store, hsm, account_id=MOTO_ACCOUNT)
    credentials = CredentialStore(store, hsm)
    arn = f"arn:aws:iam::{MOTO_ACCOUNT}:user/tests"
    credential = credentials.add(arn)
    credentials.attach_policy(arn, "admin", ADMIN_POLICY)
    audit = AuditLog(tmp_path / "audit")
    app = create_app(
        deployment.region("us-east-1"),
        SigV4Verifier(credentials.lookup),
        maintenance_seconds=0,
        audit=audit,
        dev_mode=True,
    )
    with running(app) as url:
        kms = client(url, credential.access_key_id, credential.secret_access_key)
        yield DevServer(url, kms, deployment, audit)
    audit.close()
    store.close()


def _fill(kms: Any) -> list[str]:
    """Keys of several kinds, with aliases, grants, a key policy and tags."""
    made = [
        kms.create_key(Tags=[{"TagKey": "t", "TagValue": "v"}])["KeyMetadata"],
        kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"],
        kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"],
        kms.create_key(MultiRegion=True)["KeyMetadata"],
    ]
    kms.replicate_key(KeyId=made[3]["KeyId"], ReplicaRegion="us-west-2")
    external = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    kms.get_parameters_for_import(  # a wrapping key in the token, until used or reset
        KeyId=external["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
    )
    kms.rotate_key_on_demand(KeyId=made[0]["KeyId"])  # a second version of its material
    for number, meta in enumerate(made):
        kms.create_alias(AliasName=f"alias/test-{number}", TargetKeyId=meta["KeyId"])
    kms.create_grant(
        KeyId=made[0]["KeyId"],
        GranteePrincipal=f"arn:aws:iam::{MOTO_ACCOUNT}:user/tests",
        RetiringPrincipal=f"arn:aws:iam::{MOTO_ACCOUNT}:user/tests",
        Operations=["Decrypt"],
    )
    policy = json.loads(kms.get_key_policy(KeyId=made[0]["KeyId"], PolicyName="default")["Policy"])
    policy["Statement"][0]["Sid"] = "Changed"
    kms.put_key_policy(KeyId=made[0]["KeyId"], PolicyName="default", Policy=json.dumps(policy))
    return [meta["KeyId"] for meta in [*made, external]]


def test_reset_wipes_keys_aliases_grants_and_policies(dev: DevServer, hsm: Hsm) -> None:
    key_ids = _fill(dev.kms)
    ours = {ref for ref in hsm.material_refs() if ref.key_id in key_ids}
    assert len(ours) == 5  # 4 generated keys (one rotated: 2 versions), none for EXTERNAL
    assert MaterialRef(key_ids[0], 2) in ours
    started = time.perf_counter()
    response = dev.post("/moto-api/reset")
    elapsed = time.perf_counter() - started
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert elapsed < 1.0, f"reset took {elapsed:.3f} s"
    kms = dev.kms
    assert kms.list_keys()["Keys"] == []
    assert kms.list_aliases()["Aliases"] == []
    grants = kms.list_retirable_grants(RetiringPrincipal=f"arn:aws:iam::{MOTO_ACCOUNT}:user/tests")
    assert grants["Grants"] == []
    with pytest.raises(ClientError) as caught:
        kms.describe_key(KeyId=key_ids[0])
    assert caught.value.response["Error"]["Code"] == "NotFoundException"
    assert not {ref for ref in hsm.material_refs() if ref.key_id in key_ids}  # objects gone
    assert dev.deployment.store.list_documents("import-parameters") == {}
    assert dev.deployment.store.list_pending() == []
    # The same principal goes on: principals and their policies stay.
    again = kms.create_key(Description="after the reset")["KeyMetadata"]
    assert again["Arn"].startswith(f"arn:aws:kms:us-east-1:{MOTO_ACCOUNT}:key/")
    assert [k["KeyId"] for k in kms.list_keys()["Keys"]] == [again["KeyId"]]
    events = _resets(dev.audit)
    assert len(events) == 1 and events[0]["sourceIPAddress"] == "127.0.0.1"
    assert events[0]["additionalEventData"]["keysDeleted"] == 6  # 5 keys, one replica row
    assert events[0]["additionalEventData"]["path"] == "/moto-api/reset"
    assert "errorCode" not in events[0]


def test_every_reset_path_and_the_health_endpoint(dev: DevServer) -> None:
    for path in ("/moto-api/reset", "/_localstack/state/reset", "/_localstack/state/kms/reset"):
        key_id = dev.kms.create_key()["KeyMetadata"]["KeyId"]
        dev.kms.create_alias(AliasName="alias/reused-name", TargetKeyId=key_id)
        assert (dev.post(path).status_code, len(dev.kms.list_keys()["Keys"])) == (200, 0)
    assert dev.post("/moto-api/reset").status_code == 200  # nothing left: still fine
    health = loopback.get(dev.url + "/_localstack/health")
    assert health.status_code == 200 and health.json()["services"] == {"kms": "running"}
    assert loopback.get(dev.url + "/moto-api/reset").status_code == 405  # POST only, as moto


def test_reset_endpoints_are_absent_unless_in_development_mode(server: Server) -> None:
    key_id = server.client().create_key()["KeyMetadata"]["KeyId"]
    for path in ("/moto-api/reset", "/_localstack/state/reset", "/_localstack/health"):
        assert loopback.post(server.url + path).status_code in (404, 405)
    assert server.client().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def _resets(audit: AuditLog) -> list[dict[str, Any]]:
    audit.flush()
    lines = (line for path in sorted(audit.path.parent.glob("*")) if path.is_file()
             for line in path.read_text().splitlines() if line.startswith("{"))  # fmt: skip
    return [e for e in map(json.loads, lines) if e.get("eventName") == "ResetState"]


# -- where development mode is refused ------------------------------------------------


def test_refused_over_a_security_domain(peer_tokens: dict[str, PeerToken], tmp_path: Path) -> None:
    peer = peer_tokens["peer-j"]
    # Domain commands run before anything opens the token.
    create_domain(peer.module, peer.label, peer.so_pin, peer.pin, custodians=2, threshold=2)
    token = Hsm(peer.module, peer.label, peer.pin, pool_size=1)
    store = SqliteStore(tmp_path / "hsmkms.db")
    try:
        deployment = Deployment(store, token, account_id=MOTO_ACCOUNT)
        why = refusal(deployment)
        assert why is not None and "security domain" in why
        km = KeyManager(deployment, "us-east-1")
        key_id = km.create_key()["KeyMetadata"]["KeyId"]
        # the reset itself asks again: a domain may be made while a server runs
        with pytest.raises(KMSInvalidStateException, match="security domain"):
            reset_state(deployment.region("us-east-1"))
        assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    finally:
        store.close()
        token.close()


def test_refused_on_a_token_that_is_not_softhsm2(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    env = nss_token_env(tmp_path_factory)
    token = Hsm(env.module, env.label, env.pin, pool_size=1, init_params=env.init_params)
    store = SqliteStore(tmp_path / "hsmkms.db")
    try:
        why = refusal(Deployment(store, token, account_id=MOTO_ACCOUNT))
        assert why is not None and "is not SoftHSM2" in why
    finally:
        store.close()
        token.close()


def test_off_by_default_and_set_by_hsmkms_dev_mode(tmp_path: Path) -> None:
    env = {"HSMKMS_DATA_DIR": str(tmp_path)}
    assert load_settings(env).serving.dev_mode is False
    assert load_settings({**env, "HSMKMS_DEV_MODE": "true"}).serving.dev_mode is True
    moto = load_settings({**env, "HSMKMS_DEV_MODE": "1", "HSMKMS_ACCOUNT_ID": "000000000000"})
    assert (moto.serving.dev_mode, moto.account_id) == (True, "000000000000")  # LocalStack's
