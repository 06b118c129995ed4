"""Key references a client can bend: validation patterns ended with `$`, which also
matches before a final newline, so "alias/x\\n" became an alias that listed as alias/x
and a key ARN with a newline named the key; and any `arn:aws*` partition named ours."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import REGION, Server


def call(server: Server, op: str, body: dict[str, Any]) -> tuple[int, str]:
    response = server.raw(op, json.dumps(body))
    return response.status_code, response.json().get("__type", "")


@pytest.fixture(scope="module")
def key(server: Server) -> dict[str, Any]:
    meta: dict[str, Any] = server.client().create_key()["KeyMetadata"]
    return meta


@pytest.mark.parametrize(
    "reference",
    [
        "{arn}\n",
        "{id}\n",
        "arn:aws-cn:{arn_rest}",
        "arn:aws-xyz:{arn_rest}",
    ],
)
def test_a_bent_key_reference_names_no_key(
    server: Server, key: dict[str, Any], reference: str
) -> None:
    rest = key["Arn"].removeprefix("arn:aws:")
    named = reference.format(arn=key["Arn"], id=key["KeyId"], arn_rest=rest)
    assert call(server, "DescribeKey", {"KeyId": named}) == (400, "NotFoundException")
    assert call(server, "DescribeKey", {"KeyId": key["Arn"]})[0] == 200  # the plain form works


def test_an_alias_name_with_a_newline_is_refused(server: Server, key: dict[str, Any]) -> None:
    name = "alias/newline-test"
    status, error = call(server, "CreateAlias", {"AliasName": name + "\n",
                                                 "TargetKeyId": key["KeyId"]})  # fmt: skip
    assert (status, error) == (400, "ValidationException")
    aliases = server.client().list_aliases(KeyId=key["KeyId"])["Aliases"]
    assert not [a for a in aliases if a["AliasName"].startswith(name)]
    arn = f"arn:aws:kms:{REGION}:{key['Arn'].split(':')[4]}:{name}\n"
    assert call(server, "DescribeKey", {"KeyId": arn}) == (400, "NotFoundException")
