"""A real `hsmkms serve` on a real token for the console's tests, with principals that
may do everything, read but not the audit trail, nothing, are explicitly denied, or
belong to another account; and a console client that signs in as a browser does."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

from tests.cli.test_cli import Cli, serve, stop, wait_healthy
from tests.conftest import ROOT
from tests.support import loopback

ACCOUNT = "111122223333"
AUDITOR_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["kms:*", "hsmkms:ReadAuditTrail"], "Resource": "*"}
    ],
}
KMS_ONLY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}],
}
DENIED_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["kms:*", "hsmkms:*"], "Resource": "*"},
        {
            "Effect": "Deny",
            "Action": ["kms:DisableKey", "kms:ScheduleKeyDeletion"],
            "Resource": "*",
        },
    ],
}
EVERYTHING_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "*", "Resource": "*"}]}  # fmt: skip
# name -> (account, identity policy or None)
PRINCIPALS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "custodian": (ACCOUNT, AUDITOR_POLICY),
    "reader": (ACCOUNT, KMS_ONLY_POLICY),
    "nobody": (ACCOUNT, None),
    "denied": (ACCOUNT, DENIED_POLICY),
    "outsider": ("444455556666", EVERYTHING_POLICY),
}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Deployment:
    cli: Cli
    directory: Path
    url: str
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (id, secret)

    def arn(self, name: str) -> str:
        return f"arn:aws:iam::{PRINCIPALS[name][0]}:user/{name}"

    def kms(self, name: str = "custodian") -> Any:
        access_key_id, secret = self.keys[name]
        return boto3.client("kms", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=access_key_id, aws_secret_access_key=secret,
                            config=Config(retries={"max_attempts": 1}))  # fmt: skip

    def audit_records(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted((self.directory / "data" / "audit").glob("*.jsonl")):
            if "checkpoints" in path.name:
                continue
            found += [json.loads(line) for line in path.read_text().splitlines() if line]
        return found


def make_deployment(directory: Path) -> Deployment:
    """`hsmkms init` and the principals, not yet served."""
    cli = Cli(directory / "data")
    cli.env["PYTHONPATH"] = str(ROOT)
    cli.ok("init", "--keep-so-pin")  # the domain test creates a security domain
    deployment = Deployment(cli, directory, "")
    for name, (account, policy) in PRINCIPALS.items():
        arn = f"arn:aws:iam::{account}:user/{name}"
        credential = cli.ok("principal", "add", "--arn", arn)
        deployment.keys[name] = (credential["AccessKeyId"], credential["SecretAccessKey"])
        if policy is not None:
            document = directory / f"{name}.json"
            document.write_text(json.dumps(policy))
            cli.ok("principal", "attach-policy", arn, str(document))
    return deployment


@contextmanager
def serving(deployment: Deployment, **settings: str) -> Iterator[str]:
    """`hsmkms serve` on the deployment (HSMKMS_<NAME> settings over the defaults)."""
    saved = dict(deployment.cli.env)
    deployment.cli.env.update({f"HSMKMS_{k.upper()}": v for k, v in settings.items()})
    process: subprocess.Popen[bytes]
    try:
        process, port = serve(deployment.cli)
    finally:
        deployment.cli.env = saved
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        stop(process)


class Browserless:
    """The console as a browser without script uses it: cookies, forms, CSRF tokens."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = loopback.client(base_url=url, headers={"origin": url}, timeout=60)

    def sign_in(self, access_key_id: str, secret: str) -> httpx.Response:
        form = self.http.get("/console/signin")
        token = CSRF.search(form.text)
        assert token is not None, form.text
        return self.http.post("/console/signin", data={
            "csrf": token.group(1), "access_key_id": access_key_id,
            "secret_access_key": secret})  # fmt: skip

    def csrf(self, path: str = "/console/keys") -> str:
        page = self.http.get(path)
        token = CSRF.search(page.text)
        assert token is not None, page.text
        return token.group(1)

    def post(self, path: str, **form: str) -> httpx.Response:
        return self.http.post(path, data=form)

    def close(self) -> None:
        self.http.close()
