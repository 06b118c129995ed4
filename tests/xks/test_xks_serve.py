"""`hsmkms xks ...` and `hsmkms serve` as an XKS proxy: subprocesses on their own
`hsmkms init` data dir and SoftHSM2 token, over TLS with a client-certificate check."""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cli.test_cli import Cli, serve, stop
from tests.support.xks_support import b64, metadata, unb64

KMS_CN = "cks.kms.us-east-1.amazonaws.com"


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    runner = Cli(tmp_path_factory.mktemp("xks-cli") / "data")
    runner.ok("init")
    runner.env["HSMKMS_XKS_URI_PREFIX"] = "keystores/one,keystores/two"
    return runner


def test_credential_and_key_usage_commands(cli: Cli) -> None:
    generated = cli.ok("xks", "credential", "add")
    assert generated["XksProxyUriPath"] == "/keystores/one/kms/xks/v1"
    secret = generated["XksProxyAuthenticationCredential"]["RawSecretAccessKey"]
    assert len(secret) == 44
    given = cli.ok("xks", "credential", "add", "--uri-prefix", "keystores/two",
                   "--access-key-id", "A" * 20, "--secret-access-key", "s" * 43)  # fmt: skip
    assert given == {"XksProxyUriPath": "/keystores/two/kms/xks/v1",
                     "XksProxyAuthenticationCredential": {"AccessKeyId": "A" * 20}}  # fmt: skip
    assert "ValidationException" in cli.fails("xks", "credential", "add", "--access-key-id", "a1")
    listed = cli.ok("xks", "credential", "list", "--uri-prefix", "keystores/two")["Credentials"]
    assert [c["AccessKeyId"] for c in listed] == ["A" * 20]
    assert secret not in json.dumps(cli.ok("xks", "credential", "list"))
    assert cli.ok("xks", "credential", "remove", "A" * 20) is None
    assert "NotFoundException" in cli.fails("xks", "credential", "remove", "A" * 20)
    key = cli.ok("key", "create")["KeyMetadata"]["KeyId"]
    assert cli.ok("xks", "key-usage", key, "DECRYPT") == {"KeyId": key, "XksKeyUsage": ["DECRYPT"]}
    signing = cli.ok("key", "create", "--key-spec", "ECC_NIST_P256", "--key-usage", "SIGN_VERIFY")
    assert "InvalidKeyUsageException" in cli.fails(
        "xks", "key-usage", signing["KeyMetadata"]["KeyId"], "ENCRYPT"
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(
    directory: Path, stem: str, cn: str, issuer: tuple[Any, x509.Name] | None, *, ca: bool = False
) -> tuple[Any, x509.Name]:
    key = ec.generate_private_key(ec.SECP256R1())
    signer, issuer_name = issuer or (key, _name(cn))
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if cn == "127.0.0.1":
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(cn))]), critical=False
        )
    cert = builder.sign(signer, hashes.SHA256())
    (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{stem}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return key, _name(cn)


class Proxy:
    def __init__(self, url: str, directory: Path, access_key_id: str, secret: str) -> None:
        self.url, self.directory = url, directory
        self.credentials = Credentials(access_key_id, secret)

    def post(self, route: str, body: dict[str, Any], client: str | None = "kms") -> Any:
        request = AWSRequest(method="POST", url=f"{self.url}/keystores/one/kms/xks/v1/{route}",
                             data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})  # fmt: skip
        SigV4Auth(self.credentials, "kms-xks-proxy", "us-east-1").add_auth(request)
        context = ssl.create_default_context(cafile=str(self.directory / "ca.crt"))
        if client is not None:
            stem = self.directory / client
            context.load_cert_chain(f"{stem}.crt", f"{stem}.key")
        with httpx.Client(verify=context) as http:
            return http.post(request.url, content=request.body, headers=dict(request.headers))

    def health(self) -> str:
        body = {"requestMetadata": {"kmsRequestId": "r", "kmsOperation": "KmsHealthCheck"}}
        status: str = self.post("health", body).json()["ekmFleetDetails"][0]["healthStatus"]
        return status

    def encrypt(self, key: str) -> Any:
        body = {"requestMetadata": metadata(), "plaintext": b64(b"data"),
                "encryptionAlgorithm": "AES_GCM"}  # fmt: skip
        return self.post(f"keys/{key}/encrypt", body)


def test_serve_as_xks_proxy_over_mutual_tls(cli: Cli, tmp_path: Path) -> None:
    ca = _certificate(tmp_path, "ca", "hsmkms test CA", None, ca=True)
    _certificate(tmp_path, "server", "127.0.0.1", ca)
    _certificate(tmp_path, "kms", KMS_CN, ca)
    _certificate(tmp_path, "intruder", "cks.kms.evil.example.com", ca)
    _certificate(tmp_path, "selfsigned", KMS_CN, None)
    credential = cli.ok("xks", "credential", "add")["XksProxyAuthenticationCredential"]
    key = cli.ok("key", "create")["KeyMetadata"]["KeyId"]
    cli.env["HSMKMS_XKS_HEALTH_CACHE_SECONDS"] = "0"
    tls = ("--tls-cert", str(tmp_path / "server.crt"), "--tls-key", str(tmp_path / "server.key"),
           "--tls-client-ca", str(tmp_path / "ca.crt"), "--tls-client-subject", KMS_CN)  # fmt: skip
    process, port = serve(cli, *tls, one_process=False)
    proxy = Proxy(f"https://127.0.0.1:{port}", tmp_path, credential["AccessKeyId"],
                  credential["RawSecretAccessKey"])  # fmt: skip
    tokens = Path(cli.env["HSMKMS_DATA_DIR"]) / "tokens"
    [token_dir] = list(tokens.iterdir())
    try:
        _wait_active(proxy, process)
        encrypted = proxy.encrypt(key)
        assert encrypted.status_code == 200 and len(unb64(encrypted.json()["ciphertext"])) == 4
        for client in (None, "intruder", "selfsigned"):  # no certificate, other CN, other CA
            with pytest.raises(httpx.TransportError):
                proxy.post("health", {}, client=client)
        # The token's store goes away: health says so, and operations fail cleanly.
        shutil.move(token_dir, tmp_path / "token-away")
        # Each worker answers either way AWS KMS reads as "unavailable": one that still
        # holds the caller's signing key says so in the health body; one that must unwrap
        # the XKS secret first cannot (the token holds its wrapping key) and answers 500.
        body = {"requestMetadata": {"kmsRequestId": "r", "kmsOperation": "KmsHealthCheck"}}
        for _ in range(8):
            answer = proxy.post("health", body)
            if answer.status_code == 200:
                [fleet] = answer.json()["ekmFleetDetails"]
                assert fleet["healthStatus"] == "UNAVAILABLE"
            else:
                assert answer.status_code == 500, answer.text
                assert answer.json() == {
                    "errorName": "InternalException",
                    "errorMessage": "The token is not reachable; retry later.",
                }
        failed = proxy.encrypt(key)
        assert failed.status_code == 500 and failed.json()["errorName"] == "InternalException"
    finally:
        if not token_dir.exists():
            shutil.move(tmp_path / "token-away", token_dir)
        stop(process)
    # SoftHSM2 forgets a token whose store vanished until the module is loaded again.
    process, port = serve(cli, *tls, one_process=False)
    proxy.url = f"https://127.0.0.1:{port}"
    try:
        _wait_active(proxy, process)
        assert proxy.encrypt(key).status_code == 200
    finally:
        stop(process)


def _wait_active(proxy: Proxy, process: Any) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            assert proxy.health() == "ACTIVE"
            return
        except httpx.ConnectError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
