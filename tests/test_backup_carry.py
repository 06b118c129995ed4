"""A key whose material is not in the token: never a 500, and nobody without permission
learns its state."""

from __future__ import annotations

import json
import uuid

import pytest
from botocore.exceptions import ClientError

from hsmkms.policy.principals import CredentialStore
from hsmkms.token import MaterialRef
from tests.conftest import REGION, Server


def test_a_key_without_material_answers_invalid_state_over_http(server: Server) -> None:
    client = server.client()
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    blob = client.encrypt(KeyId=key_id, Plaintext=b"gone soon")["CiphertextBlob"]
    assert server.km.hsm.destroy(MaterialRef(key_id, 1)) == 1
    server.km.context.changed()
    for attempt in ("before the maintenance pass", "after it"):
        with pytest.raises(ClientError) as caught:
            client.decrypt(CiphertextBlob=blob)
        error = caught.value.response
        assert error["Error"]["Code"] == "KMSInvalidStateException", attempt
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400, attempt
        server.km.maintain()
    assert client.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Unavailable"

    # Nobody else learns the key's state: authorization answers first.
    allow_all = {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}
    deny = {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}
    stranger = f"arn:aws:iam::444455556666:user/stranger-{uuid.uuid4().hex[:8]}"
    credential = CredentialStore(server.km.store, server.km.hsm).add(stranger)
    CredentialStore(server.km.store, server.km.hsm).attach_policy(
        stranger, "all", json.dumps({"Version": "2012-10-17", "Statement": [allow_all]})
    )
    others = [
        server.principal(f"nobody-{uuid.uuid4().hex[:8]}"),
        server.principal(
            f"denied-{uuid.uuid4().hex[:8]}",
            json.dumps({"Version": "2012-10-17", "Statement": [allow_all, deny]}),
        ),
        server._client(credential.access_key_id, credential.secret_access_key, REGION),
    ]
    for other in others:
        with pytest.raises(ClientError) as caught:
            other.decrypt(CiphertextBlob=blob)
        assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
