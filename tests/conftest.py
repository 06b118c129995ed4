"""Test fixtures: one real SoftHSM2 token per test session, a fresh database per test."""

from __future__ import annotations

import glob
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import httpx
import pytest
import uvicorn
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from hsmkms.api.app import create_app
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.audit.log import AuditLog
from hsmkms.config import default_pkcs11_lib
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.policy.principals import ADMIN_POLICY, CredentialStore
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm
from tests.support import loopback

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "111122223333"
REGION = "us-east-1"


@dataclass(frozen=True)
class TokenEnv:
    module: str
    label: str
    pin: str
    conf: str
    # A SoftHSM2 token for custom key stores' "clusters" (beside the main one, or, when
    # the main token is NSS softokn, the only SoftHSM2 token: another implementation).
    cluster_label: str = ""
    cluster_pin: str = ""
    init_params: str | None = None
    cluster_module: str = ""


class ManualClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(scope="session")
def token_env(tmp_path_factory: pytest.TempPathFactory) -> TokenEnv:
    if os.environ.get("HSMKMS_TEST_TOKEN", "softhsm") == "nss":
        return _with_cluster(nss_token_env(tmp_path_factory), tmp_path_factory)
    directory = tmp_path_factory.mktemp("softhsm")
    label, pin = "hsmkms-test", secrets.token_hex(8)
    conf = subprocess.run(
        [str(ROOT / "softhsm" / "make-token.sh"), str(directory), label, secrets.token_hex(8), pin],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Must be set before the module is first loaded in this process.
    os.environ["SOFTHSM2_CONF"] = conf
    cluster_label, cluster_pin = "hsmkms-cluster", secrets.token_hex(8)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", cluster_label,
         "--so-pin", secrets.token_hex(8), "--pin", cluster_pin],
        check=True, capture_output=True,
    )  # fmt: skip
    module = default_pkcs11_lib()
    return TokenEnv(module, label, pin, conf, cluster_label, cluster_pin, None, module)


def _with_cluster(main: TokenEnv, tmp_path_factory: pytest.TempPathFactory) -> TokenEnv:
    """A SoftHSM2 cluster token for a main token of another implementation."""
    label, pin = "hsmkms-cluster", secrets.token_hex(8)
    conf = subprocess.run(
        [str(ROOT / "softhsm" / "make-token.sh"), str(tmp_path_factory.mktemp("cluster")),
         label, secrets.token_hex(8), pin],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    os.environ["SOFTHSM2_CONF"] = conf
    return replace(main, cluster_label=label, cluster_pin=pin, cluster_module=default_pkcs11_lib())


@pytest.fixture(scope="session")
def hsm(token_env: TokenEnv) -> Iterator[Hsm]:
    token = Hsm(
        token_env.module, token_env.label, token_env.pin, pool_size=4,
        init_params=token_env.init_params,
    )  # fmt: skip
    yield token
    token.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    db = SqliteStore(tmp_path / "hsmkms.db")
    yield db
    db.close()


@pytest.fixture
def km(hsm: Hsm, store: SqliteStore, clock: ManualClock) -> KeyManager:
    return KeyManager(Deployment(store, hsm, account_id=ACCOUNT, clock=clock), REGION)


@pytest.fixture
def key_id(km: KeyManager) -> str:
    key: str = km.create_key(description="test key")["KeyMetadata"]["KeyId"]
    return key


# -- the HTTP server ---------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    access_key_id: str
    secret_access_key: str
    principal_arn: str
    km: KeyManager
    audit: AuditLog

    def client(self, region: str = REGION) -> Any:
        return self._client(self.access_key_id, self.secret_access_key, region)

    def _client(self, access_key_id: str, secret: str, region: str) -> Any:
        return boto3.client(
            "kms",
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}),
        )

    def principal(self, name: str, *identity_policies: str, region: str = REGION) -> Any:
        """A new IAM user with the given identity policies; returns its KMS client."""
        credentials = CredentialStore(self.km.store, self.km.hsm)
        arn = f"arn:aws:iam::{ACCOUNT}:user/{name}"
        credential = credentials.add(arn)
        for number, document in enumerate(identity_policies):
            credentials.attach_policy(arn, f"policy-{number}", document)
        return self._client(credential.access_key_id, credential.secret_access_key, region)

    def raw(
        self,
        target: str,
        body: bytes | str,
        *,
        region: str = REGION,
        secret: str | None = None,
        access_key_id: str | None = None,
        headers: dict[str, str] | None = None,
        sign: bool = True,
        mutate: Callable[[AWSRequest], None] | None = None,
        signed_at: datetime | None = None,
        sent_body: bytes | None = None,
    ) -> httpx.Response:
        """A request signed by botocore's own SigV4 signer, for bodies boto3 won't send."""
        data = body.encode() if isinstance(body, str) else body
        request = AWSRequest(
            method="POST",
            url=self.url + "/",
            data=data,
            headers={
                "X-Amz-Target": f"TrentService.{target}",
                "Content-Type": "application/x-amz-json-1.1",
                **(headers or {}),
            },
        )
        if sign:
            credentials = Credentials(
                access_key_id or self.access_key_id, secret or self.secret_access_key
            )
            with mock.patch(
                "botocore.auth.get_current_datetime",
                return_value=(signed_at or datetime.now(UTC)).replace(tzinfo=None),
            ):
                SigV4Auth(credentials, "kms", region).add_auth(request)
        if mutate is not None:
            mutate(request)
        content = request.body if sent_body is None else sent_body
        return loopback.post(request.url, content=content, headers=dict(request.headers.items()))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a loopback port; yields its URL."""
    port = free_port()
    runner = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not runner.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        runner.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def server(hsm: Hsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    store = SqliteStore(tmp_path_factory.mktemp("server") / "hsmkms.db")
    km = KeyManager(Deployment(store, hsm, account_id=ACCOUNT), REGION)
    credentials = CredentialStore(store, hsm)
    principal = f"arn:aws:iam::{ACCOUNT}:user/tester"
    credential = credentials.add(principal)
    credentials.attach_policy(principal, "kms-admin", ADMIN_POLICY)
    audit = AuditLog(tmp_path_factory.mktemp("audit"))
    app = create_app(
        km.context, SigV4Verifier(credentials.lookup), maintenance_seconds=0, audit=audit
    )
    with running(app) as url:
        yield Server(
            url, credential.access_key_id, credential.secret_access_key, principal, km, audit
        )
    audit.close()
    store.close()


# -- PostgreSQL: a real server per session, a fresh database per test (tests/support/pg.py) --

pytest_plugins = [
    "pytester",
    "tests.support.pg",
    "tests.support.parallel",
    "tests.support.token_needs",
]
# -- a second PKCS#11 implementation: NSS softokn (HSMKMS_TEST_TOKEN=nss) ------------

NSS_SOFTOKN_GLOBS = (
    "/usr/lib/*/libsoftokn3.so",
    "/usr/lib*/libsoftokn3.so",
    "/usr/lib/*/nss/libsoftokn3.so",
)
NSS_TOKEN_LABEL = "NSS Certificate DB"


def nss_token_env(tmp_path_factory: pytest.TempPathFactory) -> TokenEnv:
    """A fresh NSS database (certutil -N) whose password is the token's user PIN."""
    directory = tmp_path_factory.mktemp("nss")
    pin = secrets.token_hex(12)
    (directory / "db").mkdir()
    subprocess.run(  # the PIN goes through a pipe: never on disk or in argv
        ["certutil", "-N", "-d", f"sql:{directory / 'db'}", "-f", "/dev/stdin"],
        input=pin, text=True, check=True, capture_output=True,
    )  # fmt: skip
    found = [path for pattern in NSS_SOFTOKN_GLOBS for path in sorted(glob.glob(pattern))]
    module = os.environ.get("HSMKMS_TEST_NSS_SOFTOKN") or (found[0] if found else "")
    if not module:
        pytest.fail("libsoftokn3.so not found: run `make deps` or set HSMKMS_TEST_NSS_SOFTOKN")
    params = (
        f"configdir='sql:{directory / 'db'}' certPrefix='' keyPrefix='' secmod='secmod.db' flags="
    )
    return TokenEnv(module, NSS_TOKEN_LABEL, pin, conf="", init_params=params)


def skip_unless_supported(hsm: Hsm, create: Callable[[], Any]) -> Any:
    """create(), or a skip naming what the token lacks (its UnsupportedOperationException)."""
    from hsmkms.errors import UnsupportedOperationException

    try:
        return create()
    except UnsupportedOperationException as exc:
        pytest.skip(f"{hsm.token_label}: {exc}")


def assert_local(hsm: Hsm, *local: bool) -> None:
    """CKA_LOCAL set on every object; a skip on a token that never sets it (NSS softokn).
    Call it last, after the test's other assertions have run."""
    if hsm.reports_cka_local():
        assert all(local)
    else:
        pytest.skip(f"{hsm.token_label}: the token never sets CKA_LOCAL, not even on keys it made")


# -- more tokens (security domain, backup/restore, replication) -------------------------


@dataclass(frozen=True)
class PeerToken:
    module: str
    label: str
    so_pin: str
    pin: str


@pytest.fixture(scope="session", autouse=True)
def peer_tokens(token_env: TokenEnv) -> dict[str, PeerToken]:
    """More tokens in the session's token directory, with known SO PINs. Autouse:
    SoftHSM2 reads its token directory once, when the module is first loaded, so they
    must exist before any test loads it."""
    peers = {}
    env = dict(os.environ)  # SOFTHSM2_CONF: the session's SoftHSM2 token directory
    # d, e: multi-Region; f, g: the domain key against a user-PIN holder; h, i: a
    # deployment's backup restored onto a second token; j: development mode refused
    # once a security domain exists; k: two session pools on one token
    for name in (
        "peer-a",
        "peer-b",
        "peer-c",
        "peer-d",
        "peer-e",
        "peer-f",
        "peer-g",
        "peer-h",
        "peer-i",
        "peer-j",
        "peer-k",
    ):
        peer = PeerToken(token_env.cluster_module, f"hsmkms-{name}", secrets.token_hex(8),
                         secrets.token_hex(8))  # fmt: skip
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", peer.label,
             "--so-pin", peer.so_pin, "--pin", peer.pin],
            check=True, capture_output=True, env=env,
        )  # fmt: skip
        peers[name] = peer
    return peers


# -- the XKS proxy --------------------------------------------------------------------


@pytest.fixture(scope="session")
def xks_server(hsm: Hsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """hsmkms serving the XKS API under /xks and /tenant/b (each with a credential),
    for SigV4 regions us-east-1 and eu-west-1."""
    from hsmkms.config import XksSettings
    from hsmkms.xks.credentials import XksCredentialStore
    from tests.support import xks_support

    store = SqliteStore(tmp_path_factory.mktemp("xks") / "hsmkms.db")
    km = KeyManager(Deployment(store, hsm, account_id=ACCOUNT), REGION)
    credentials = XksCredentialStore(store, hsm)
    credentials.add("xks", xks_support.ACCESS_KEY_ID, xks_support.SECRET)
    credentials.add("tenant/b", xks_support.OTHER_ACCESS_KEY_ID, xks_support.OTHER_SECRET)
    audit = AuditLog(tmp_path_factory.mktemp("xks-audit"))
    settings = XksSettings(uri_prefixes=("xks", "tenant/b"), regions=("us-east-1", "eu-west-1"))
    app = create_app(
        km.context, SigV4Verifier(lambda _: None), maintenance_seconds=0, audit=audit, xks=settings
    )
    with running(app) as url:
        yield xks_support.XksServer(url, km, credentials, audit)
    audit.close()
    store.close()
