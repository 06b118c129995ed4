"""RetireGrant's AccessDeniedException names what decided (trust review, finding 16).

A cross-account caller whose IAM policy allows kms:RetireGrant was refused with "...
because the key policy enables IAM policies and identity policy statement '(no Sid)'
allows it": the reason of an Allow. What decides RetireGrant is the grant
(https://docs.aws.amazon.com/kms/latest/developerguide/grant-delete.html): its retiring
principal, its grantee when it includes RetireGrant, or principals of the account it
was created in (or of the account named as its retiring principal) whom IAM lets retire
grants. kms:RetireGrant in a key policy has no effect, Allow or Deny."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from hsmkms.policy.principals import CredentialStore
from tests.conftest import ACCOUNT, Server

OTHER = "444455556666"


def identity(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


RETIRE = {"Sid": "Retire grants", "Effect": "Allow", "Action": "kms:RetireGrant", "Resource": "*"}
NO_RETIRE = {"Sid": "Never retire", "Effect": "Deny", "Action": "kms:RetireGrant", "Resource": "*"}


def principal(server: Server, account: str, *policies: str) -> tuple[str, Any]:
    """A new IAM user of `account` with these identity policies: (ARN, its KMS client)."""
    arn = f"arn:aws:iam::{account}:user/u-{uuid.uuid4().hex[:8]}"
    credentials = CredentialStore(server.km.store, server.km.hsm)
    credential = credentials.add(arn)
    for number, document in enumerate(policies):
        credentials.attach_policy(arn, f"policy-{number}", document)
    return arn, server._client(credential.access_key_id, credential.secret_access_key, "us-east-1")


def denial(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    error = caught.value.response["Error"]
    assert error["Code"] == "AccessDeniedException", error
    message: str = error["Message"]
    return message


@pytest.fixture
def key(server: Server) -> tuple[str, str]:
    """A key whose policy lets its account's IAM decide and explicitly denies the
    other account kms:RetireGrant (which a key policy cannot decide)."""
    root = f"arn:aws:iam::{ACCOUNT}:root"
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Enable IAM", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*",
         "Resource": "*"},
        {"Sid": "Other account never retires", "Effect": "Deny",
         "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"}, "Action": "kms:RetireGrant",
         "Resource": "*"},
    ]})  # fmt: skip
    metadata = server.client().create_key(Policy=policy)["KeyMetadata"]
    return metadata["KeyId"], metadata["Arn"]


def new_grant(server: Server, key_id: str, **extra: str) -> str:
    grantee = f"arn:aws:iam::{ACCOUNT}:user/grantee"
    made = server.client().create_grant(
        KeyId=key_id, GranteePrincipal=grantee, Operations=["Decrypt"], **extra
    )
    token: str = made["GrantToken"]
    return token


def test_cross_account_denial_names_the_grant_not_an_allowing_statement(
    server: Server, key: tuple[str, str]
) -> None:
    key_id, key_arn = key
    outsider, as_outsider = principal(server, OTHER, identity(RETIRE))
    message = denial(as_outsider.retire_grant, GrantToken=new_grant(server, key_id))
    assert message == (
        f"User: {outsider} is not authorized to perform: kms:RetireGrant on resource: "
        f"{key_arn} because no resource-based policy allows the kms:RetireGrant action"
    )
    assert "allows it" not in message


def test_an_identity_deny_is_told(server: Server, key: tuple[str, str]) -> None:
    key_id, key_arn = key
    outsider, as_outsider = principal(server, OTHER, identity(RETIRE, NO_RETIRE))
    message = denial(as_outsider.retire_grant, GrantToken=new_grant(server, key_id))
    assert message == (
        f"User: {outsider} is not authorized to perform: kms:RetireGrant on resource: "
        f"{key_arn} with an explicit deny in an identity-based policy"
    )  # AWS's words: no statement named
    # An explicit deny wins over being the grant's retiring principal too.
    token = new_grant(server, key_id, RetiringPrincipal=outsider)
    assert "explicit deny" in denial(as_outsider.retire_grant, GrantToken=token)


def test_same_account_without_permission_names_iam(server: Server, key: tuple[str, str]) -> None:
    key_id, key_arn = key
    insider, as_insider = principal(server, ACCOUNT)
    message = denial(as_insider.retire_grant, GrantToken=new_grant(server, key_id))
    assert message == (
        f"User: {insider} is not authorized to perform: kms:RetireGrant on resource: "
        f"{key_arn} because no identity-based policy allows the kms:RetireGrant action"
    )


def test_who_may_retire(server: Server, key: tuple[str, str]) -> None:
    """The retiring principal needs no policy (the key policy's Deny has no effect); an
    account named as retiring principal delegates through IAM, as the grant's own
    account does."""
    key_id, _ = key
    outsider, as_outsider = principal(server, OTHER)
    as_outsider.retire_grant(GrantToken=new_grant(server, key_id, RetiringPrincipal=outsider))
    _, as_delegate = principal(server, OTHER, identity(RETIRE))
    as_delegate.retire_grant(
        GrantToken=new_grant(server, key_id, RetiringPrincipal=f"arn:aws:iam::{OTHER}:root")
    )
    _, as_insider = principal(server, ACCOUNT, identity(RETIRE))
    as_insider.retire_grant(GrantToken=new_grant(server, key_id))
    # ... but no one else's IAM policy reaches it.
    _, as_third = principal(server, "777788889999", identity(RETIRE))
    token = new_grant(server, key_id, RetiringPrincipal=f"arn:aws:iam::{OTHER}:root")
    denial(as_third.retire_grant, GrantToken=token)
