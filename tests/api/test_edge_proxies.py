"""X-Forwarded-For / X-Forwarded-Proto over real HTTP: ignored unless the peer is a
configured trusted proxy, so a client cannot claim another source address or TLS for
`aws:SourceIp`, `aws:SecureTransport` and the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from hsmkms.config import load_settings
from hsmkms.policy.principals import CredentialStore
from hsmkms.token import Hsm
from tests.conftest import ACCOUNT, REGION, Server
from tests.support.edge_support import edge_server, trail

FROM_THE_OFFICE_OVER_TLS = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "kms:GenerateRandom",
                "Resource": "*",
                "Condition": {
                    "IpAddress": {"aws:SourceIp": "10.9.8.0/24"},
                    "Bool": {"aws:SecureTransport": "true"},
                },
            }
        ],
    }
)
FORWARDED = {"X-Forwarded-For": "10.9.8.7", "X-Forwarded-Proto": "https"}


def office_call(server: Server, peer: str = "127.0.0.1") -> tuple[int, str, dict[str, object]]:
    """GenerateRandom by a principal allowed only from 10.9.8.0/24 over TLS, sent over
    plain HTTP from `peer` with forwarded headers claiming both."""
    credentials = CredentialStore(server.km.store, server.km.hsm)
    arn = f"arn:aws:iam::{ACCOUNT}:user/office"
    credential = credentials.add(arn)
    credentials.attach_policy(arn, "office", FROM_THE_OFFICE_OVER_TLS)
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=b'{"NumberOfBytes": 8}',
        headers={"X-Amz-Target": "TrentService.GenerateRandom", **FORWARDED},
    )
    signer = Credentials(credential.access_key_id, credential.secret_access_key)
    SigV4Auth(signer, "kms", REGION).add_auth(request)
    with httpx.Client(transport=httpx.HTTPTransport(local_address=peer)) as client:
        response = client.post(request.url, content=request.body, headers=dict(request.headers))
    (record,) = [
        r
        for r in trail(server.audit)
        if (r.get("userIdentity") or {}).get("arn") == arn  # type: ignore[union-attr]
    ]
    return response.status_code, response.json().get("__type", ""), record


def test_forwarded_headers_are_ignored_by_default(hsm: Hsm, tmp_path: Path) -> None:
    with edge_server(hsm, tmp_path) as server:
        status, error, record = office_call(server)
    assert (status, error) == (400, "AccessDeniedException")
    assert record["sourceIPAddress"] == "127.0.0.1"


def test_a_trusted_proxy_sets_the_source_address_and_transport(hsm: Hsm, tmp_path: Path) -> None:
    with edge_server(hsm, tmp_path, trusted_proxies=("127.0.0.1/32",)) as server:
        status, error, record = office_call(server)
    assert (status, error) == (200, "")
    assert record["sourceIPAddress"] == "10.9.8.7"


def test_only_the_trusted_proxy_is_believed(hsm: Hsm, tmp_path: Path) -> None:
    with edge_server(hsm, tmp_path, trusted_proxies=("127.0.0.1",)) as server:
        status, error, record = office_call(server, peer="127.0.0.2")
    assert (status, error) == (400, "AccessDeniedException")
    assert record["sourceIPAddress"] == "127.0.0.2"


def test_trusted_proxies_are_read_from_the_configuration() -> None:
    env = {"HSMKMS_TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/16,::1"}
    assert load_settings(env).edge.trusted_proxies == ("10.0.0.1", "192.168.0.0/16", "::1")
    assert load_settings({}).edge.trusted_proxies == ()
    with pytest.raises(ValueError, match="HSMKMS_TRUSTED_PROXIES"):
        load_settings({"HSMKMS_TRUSTED_PROXIES": "proxy.example"})
