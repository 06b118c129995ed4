"""Bad input for every exposed operation, generated from botocore's KMS model: each
violation must come back as the KMS error a real client expects, naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.model import Shape

from hsmkms.api.shapes import service_model
from hsmkms.operations.table import OPERATIONS, snake
from tests.conftest import Server

MODEL = service_model()
EXPOSED = sorted(op for op in MODEL.operation_names if op in OPERATIONS)


def sample(shape: Shape) -> Any:
    """A value of the right type that satisfies the shape's own constraints."""
    kind = shape.type_name
    if kind == "string":
        return shape.enum[0] if shape.enum else "a" * max(1, shape.metadata.get("min", 1))
    if kind in ("integer", "long"):
        return shape.metadata.get("min", 1)
    if kind == "boolean":
        return False
    if kind == "blob":
        return "AAAA"
    if kind == "list":
        return [sample(shape.member)]
    if kind == "map":
        return {}
    if kind == "structure":
        return {
            name: sample(member)
            for name, member in shape.members.items()
            if name in shape.required_members
        }
    return None


def field(name: str) -> str:
    return name[:1].lower() + name[1:]


def cases() -> list[Any]:
    found = []
    for op in EXPOSED:
        shape = MODEL.operation_model(op).input_shape
        if shape is None:
            continue
        base = sample(shape)
        for name in shape.required_members:
            body = {k: v for k, v in base.items() if k != name}
            found.append(
                pytest.param(
                    op, body, "ValidationException", field(name), id=f"{op}-{name}-missing"
                )
            )
        for name, member in shape.members.items():
            meta, kind = member.metadata, member.type_name
            bad: list[tuple[str, Any, str]] = []
            if kind == "string":
                bad.append(("type", 12345, "SerializationException"))
                if "max" in meta:
                    bad.append(("long", "a" * (meta["max"] + 1), "ValidationException"))
                if meta.get("min", 0) >= 1 and not member.enum:
                    bad.append(("empty", "", "ValidationException"))
                if member.enum:
                    bad.append(("enum", "NOT_A_VALUE", "ValidationException"))
            elif kind in ("integer", "long"):
                bad.append(("type", "7", "SerializationException"))
                if "min" in meta:
                    bad.append(("low", meta["min"] - 1, "ValidationException"))
                if "max" in meta:
                    bad.append(("high", meta["max"] + 1, "ValidationException"))
            elif kind == "boolean":
                bad.append(("type", "yes", "SerializationException"))
            elif kind == "blob":
                bad.append(("base64", "***", "SerializationException"))
                if "max" in meta:
                    too_long = "A" * (4 * ((meta["max"] + 3) // 3 + 1))
                    bad.append(("long", too_long, "ValidationException"))
            elif kind == "map":
                bad.append(("type", ["x"], "SerializationException"))
            elif kind == "list":
                bad.append(("type", "x", "SerializationException"))
            for label, value, code in bad:
                found.append(
                    pytest.param(
                        op, {**base, name: value}, code, field(name), id=f"{op}-{name}-{label}"
                    )
                )
    return found


@pytest.mark.parametrize(("op", "body", "code", "path"), cases())
def test_bad_input(server: Server, op: str, body: dict[str, Any], code: str, path: str) -> None:
    response = server.raw(op, json.dumps(body))
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["__type"] == code, error
    assert path in error["message"], error


def test_every_exposed_parameter_is_a_model_member() -> None:
    assert len(EXPOSED) == len(OPERATIONS)  # every table operation is a KMS model operation
    for op in EXPOSED:
        members = {snake(m) for m in MODEL.operation_model(op).input_shape.members}
        parameters = set(OPERATIONS[op].parameters)
        assert parameters <= members, (op, parameters - members)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_malformed_json_is_a_serialization_error(server: Server, body: bytes) -> None:
    response = server.raw("ListKeys", body)
    assert response.status_code == 400
    assert response.json()["__type"] == "SerializationException"


DEEP = "[" * 5000  # deeper than the interpreter's recursion limit: json raises RecursionError


@pytest.mark.parametrize(
    ("op", "body", "code"),
    [
        ("ListKeys", DEEP, "SerializationException"),
        ("Encrypt", '{"KeyId": ' + DEEP, "SerializationException"),
        ("DescribeKey", '{"KeyId": "alias/\\ud800"}', "SerializationException"),
        ("PutKeyPolicy", {"PolicyName": "default", "Policy": DEEP},
         "MalformedPolicyDocumentException"),
    ],
)  # fmt: skip
def test_json_the_server_cannot_stand_behind_is_the_clients_error(
    server: Server, op: str, body: str | dict[str, str], code: str
) -> None:
    if isinstance(body, dict):
        body = json.dumps({"KeyId": server.km.create_key()["KeyMetadata"]["KeyId"], **body})
    response = server.raw(op, body)
    assert response.status_code == 400, response.text
    assert response.json()["__type"] == code


def test_several_failures_are_reported_together(server: Server) -> None:
    response = server.raw("GenerateRandom", json.dumps({"NumberOfBytes": 0}))
    assert response.json()["message"].startswith(
        "1 validation error detected: Value '0' at 'numberOfBytes'"
    )
    response = server.raw("ListKeys", json.dumps({"Limit": 0, "Marker": ""}))
    assert response.json()["message"].startswith("2 validation errors detected:")
