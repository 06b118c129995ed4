"""A server of its own for the authorization tests: its own database and audit trail,
the session's cluster token registered (AWS_CLOUDHSM key stores) and the session's XKS
server routed to (EXTERNAL_KEY_STORE), and principals of this account and another."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from hsmkms.api.app import create_app
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.audit.log import AuditLog
from hsmkms.keystores.cloudhsm import Cluster, register_cluster
from hsmkms.keystores.external_client import register_route
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.policy.principals import ADMIN_POLICY, CredentialStore
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm
from tests.conftest import ACCOUNT, REGION, TokenEnv, running
from tests.keystores.test_cloudhsm import ANCHOR, CLUSTER
from tests.keystores.test_external_keystore import CREDENTIAL, ENDPOINT, HOST, PATH
from tests.support.xks_support import XksServer

OTHER_ACCOUNT = "999988887777"
ADMIN = f"arn:aws:iam::{ACCOUNT}:user/admin"
NOBODY = f"arn:aws:iam::{ACCOUNT}:user/nobody"  # no identity policy at all
DENIED = f"arn:aws:iam::{ACCOUNT}:user/denied"  # kms:* allowed, then kms:* explicitly denied
EVE = f"arn:aws:iam::{OTHER_ACCOUNT}:user/eve"  # another account, with a kms:* identity policy
DENY_ALL = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Sid": "Never", "Effect": "Deny", "Action": "kms:*", "Resource": "*"}]})  # fmt: skip
ATTACKERS = {"no-permission": NOBODY, "other-account": EVE, "explicit-deny": DENIED}
POLICIES: dict[str, tuple[str, ...]] = {
    ADMIN: (ADMIN_POLICY,),
    NOBODY: (),
    DENIED: (ADMIN_POLICY, DENY_ALL),
    EVE: (ADMIN_POLICY,),
}


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(principal: str | list[str], *actions: str) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": {"AWS": principal},
            "Action": list(actions) or "kms:*", "Resource": "*"}  # fmt: skip


ROOT_STATEMENT = allow(f"arn:aws:iam::{ACCOUNT}:root")


@dataclass
class AuthzServer:
    url: str
    km: KeyManager
    audit: AuditLog
    credentials: CredentialStore
    clients: dict[tuple[str, str], Any] = field(default_factory=dict)
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)

    def client(self, principal: str = ADMIN, region: str = REGION) -> Any:
        """A boto3 KMS client signing as the principal (its access key made on first use)."""
        found = self.clients.get((principal, region))
        if found is None:
            if principal not in self.secrets:
                credential = self.credentials.add(principal)
                for number, document in enumerate(POLICIES.get(principal, ())):
                    self.credentials.attach_policy(principal, f"policy-{number}", document)
                self.secrets[principal] = (credential.access_key_id, credential.secret_access_key)
            key_id, secret = self.secrets[principal]
            found = boto3.client(
                "kms",
                endpoint_url=self.url,
                region_name=region,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
                config=Config(retries={"max_attempts": 1}),
            )
            self.clients[(principal, region)] = found
        return found

    def records(self) -> dict[str, dict[str, Any]]:
        """The audit trail so far, by request id."""
        self.audit.flush()
        found = {}
        for path in sorted(self.audit.directory.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if "requestID" in record:
                    found[record["requestID"]] = record
        return found


@contextmanager
def authz_server(
    hsm: Hsm, directory: Path, token_env: TokenEnv, xks_server: XksServer
) -> Iterator[AuthzServer]:
    store = SqliteStore(directory / "hsmkms.db")
    km = KeyManager(Deployment(store, hsm, account_id=ACCOUNT), REGION)
    register_cluster(store, Cluster(CLUSTER, token_env.cluster_module, token_env.cluster_label))
    register_route(store, HOST, xks_server.url)
    credentials = CredentialStore(store, hsm)
    audit = AuditLog(directory / "audit")
    app = create_app(
        km.context, SigV4Verifier(credentials.lookup), maintenance_seconds=0, audit=audit
    )
    try:
        with running(app) as url:
            server = AuthzServer(url, km, audit, credentials)
            for principal in POLICIES:
                server.client(principal)
            yield server
    finally:
        km.context.tokens.close_all()
        audit.close()
        store.close()


def xks_store(admin: Any, name: str = "xks-authz") -> str:
    store_id: str = admin.create_custom_key_store(
        CustomKeyStoreName=name,
        CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint=ENDPOINT,
        XksProxyUriPath=PATH,
        XksProxyAuthenticationCredential=CREDENTIAL,
        XksProxyConnectivity="PUBLIC_ENDPOINT",
    )["CustomKeyStoreId"]
    connect(admin, store_id)
    return store_id


def cloudhsm_store(admin: Any, token_env: TokenEnv, name: str = "cloudhsm-authz") -> str:
    store_id: str = admin.create_custom_key_store(
        CustomKeyStoreName=name,
        CloudHsmClusterId=CLUSTER,
        TrustAnchorCertificate=ANCHOR,
        KeyStorePassword=token_env.cluster_pin,
    )["CustomKeyStoreId"]
    connect(admin, store_id)
    return store_id


def connect(admin: Any, store_id: str, attempts: int = 3) -> None:
    """Connect a store as an operator would: a connection that FAILED (on a busy machine
    the proxy may miss AWS's 250 ms budget) is disconnected and tried again."""
    for _ in range(attempts):
        admin.connect_custom_key_store(CustomKeyStoreId=store_id)
        [store] = admin.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"]
        if store["ConnectionState"] == "CONNECTED":
            return
        admin.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    raise AssertionError(f"{store_id} did not connect: {store['ConnectionState']}")


def refusal(call: Any, **members: Any) -> tuple[str, str, str]:
    """(error code, message, request id) of a call that must fail."""
    with pytest.raises(ClientError) as caught:
        answer = call(**members)
        pytest.fail(f"not refused: {answer}")
    response = caught.value.response
    return (
        response["Error"]["Code"],
        response["Error"]["Message"],
        response["ResponseMetadata"]["RequestId"],
    )
