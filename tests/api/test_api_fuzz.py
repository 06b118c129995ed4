"""No 500 for bad input: every operation of botocore's KMS model, exposed or not, fed
an empty body, each required member missing, each member (and each member of a
nested structure or list) of a wrong JSON type, oversize strings and blobs, junk
JSON and JSON that is not an object. Every answer must be a 4xx in KMS's error
shape (`{"__type": ..., "message": ...}`, or `{"__type": ...}` alone for the errors AWS
sends without a message), never a 5xx and never a traceback.

AWS answers bad input with 400 and a named error, as every operation's "Errors"
section of the API Reference lists them, and KMSInternalException only for its own
faults: https://docs.aws.amazon.com/kms/latest/APIReference/CommonErrors.html
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.model import Shape

from hsmkms.api.errors import SENT_WITHOUT_MESSAGE
from hsmkms.api.shapes import REQUIRED_UNLESS_IGNORED, service_model
from hsmkms.operations.table import OPERATIONS
from tests.api.test_api_validation import sample
from tests.conftest import Server

MODEL = service_model()
# A value of a JSON type each model type is not.
WRONG_TYPE: dict[str, Any] = {
    "string": 12345,
    "integer": "7",
    "long": "7",
    "boolean": "yes",
    "blob": 5,
    "list": "x",
    "map": ["x"],
    "structure": "x",
    "timestamp": "soon",
}
JUNK = [b"{not json", b"\xff\xfe", b"[1, 2]", b"[]", b"null", b"3", b'"text"', b"{", b"{}}"]


MAYBE_VALID = ("empty body", "empty object", "every member")


def required(op: str) -> bool:
    """Whether the operation needs members: by the model, or by its handler's keywords."""
    shape = MODEL.operation_model(op).input_shape
    needed_by_handler = op in OPERATIONS and bool(OPERATIONS[op].required)
    return (
        bool(shape and shape.required_members)
        or op in REQUIRED_UNLESS_IGNORED
        or (needed_by_handler)
    )


MESSAGELESS = {error.code for error in SENT_WITHOUT_MESSAGE}


def well_shaped(error: Any) -> bool:
    """KMS's error body: `__type` and a `message` string, or `__type` alone where AWS
    sends no message."""
    if not isinstance(error, dict) or not isinstance(error.get("__type"), str):
        return False
    if set(error) == {"__type"}:
        return error["__type"] in MESSAGELESS
    return (
        set(error) == {"__type", "message"}
        and isinstance(error["message"], str)
        and "Traceback" not in error["message"]
    )


def oversize(shape: Shape) -> Any | None:
    high = shape.metadata.get("max")
    if high is None:
        return None
    if shape.type_name == "string":
        return "a" * (high + 1)
    if shape.type_name == "blob":
        return "A" * (4 * ((high + 3) // 3 + 1))
    if shape.type_name == "list":
        return [sample(shape.member)] * (high + 1)
    return None


def bodies(op: str) -> Iterator[tuple[str, bytes]]:
    shape = MODEL.operation_model(op).input_shape
    yield "empty body", b""
    yield "empty object", b"{}"
    for junk in JUNK:
        yield f"junk {junk!r}", junk
    if shape is None:
        return
    base = sample(shape)
    full = {n: sample(m) for n, m in shape.members.items()}
    yield "every member", json.dumps(full).encode()
    for name in shape.required_members:
        yield f"{name} missing", json.dumps({k: v for k, v in base.items() if k != name}).encode()
        yield f"{name} null", json.dumps({**base, name: None}).encode()
    for name, member in shape.members.items():
        yield (
            f"{name} wrong type",
            json.dumps({**base, name: WRONG_TYPE[member.type_name]}).encode(),
        )
        big = oversize(member)
        if big is not None:
            yield f"{name} oversize", json.dumps({**base, name: big}).encode()
        if member.type_name == "string" and not member.enum and member.metadata.get("min", 0):
            yield f"{name} empty", json.dumps({**base, name: ""}).encode()
        inner = member.member if member.type_name == "list" else member
        if inner.type_name == "structure":
            for sub, sub_shape in inner.members.items():
                value = {**sample(inner), sub: WRONG_TYPE[sub_shape.type_name]}
                wrapped = [value] if member.type_name == "list" else value
                yield f"{name}.{sub} wrong type", json.dumps({**base, name: wrapped}).encode()
        if member.type_name == "map":
            yield f"{name} value wrong type", json.dumps({**base, name: {"k": 5}}).encode()


@pytest.mark.parametrize("op", MODEL.operation_names)
def test_bad_input_is_a_kms_4xx(server: Server, op: str) -> None:
    failures = []
    for label, body in bodies(op):
        response = server.raw(op, body)
        try:
            error = response.json()
        except ValueError:
            error = None
        shaped = well_shaped(error)
        if response.status_code == 200 and label in MAYBE_VALID and not required(op):
            continue  # a valid request after all (ListKeys with no members, ...)
        if not (400 <= response.status_code < 500 and shaped):
            failures.append(f"{label}: {response.status_code} {response.text[:200]}")
        elif error["__type"] not in documented(op):
            failures.append(f"{label}: {error['__type']} is not in {op}'s documented errors")
    assert not failures, f"{op}:\n" + "\n".join(failures)


# Errors every operation can answer (https://docs.aws.amazon.com/kms/latest/APIReference/CommonErrors.html),
# and hsmkms's answer for what it does not implement (README, "Not yet").
COMMON = {"ValidationException", "SerializationException", "AccessDeniedException",
          "UnsupportedOperationException"}  # fmt: skip


def documented(op: str) -> set[str]:
    """The errors the API Reference lists for the operation (botocore's model carries
    the same list), and the common ones."""
    return COMMON | {e.name for e in MODEL.operation_model(op).error_shapes}


KEY_MEMBERS = {"KeyId", "TargetKeyId", "SourceKeyId", "DestinationKeyId"}


@pytest.mark.parametrize("op", sorted(op for op in MODEL.operation_names if op in OPERATIONS))
def test_well_typed_samples_on_a_real_key_never_fault(server: Server, op: str) -> None:
    """Past validation: the model's samples aimed at a real key reach the handlers, which
    must answer success or a documented 4xx, never a 5xx."""
    key = server.client().create_key()["KeyMetadata"]["KeyId"]
    shape = MODEL.operation_model(op).input_shape
    failures = []
    for members in (
        {n: sample(m) for n, m in shape.members.items() if n in shape.required_members},
        {n: sample(m) for n, m in shape.members.items() if n not in ("DryRun",)},
    ):
        body = {n: key if n in KEY_MEMBERS else v for n, v in members.items()}
        response = server.raw(op, json.dumps(body))
        if response.status_code >= 500:
            failures.append(f"{sorted(body)}: {response.status_code} {response.text[:200]}")
        elif response.status_code != 200 and response.json()["__type"] not in documented(op):
            failures.append(f"{sorted(body)}: {response.json()['__type']} is not documented")
    assert not failures, f"{op}:\n" + "\n".join(failures)


@pytest.mark.parametrize("body", [b"", b"{}"])
def test_every_operation_without_members_is_never_a_500(server: Server, body: bytes) -> None:
    """Every operation of the model, with an empty body and with `{}`: success where no
    member is needed, else a 4xx naming what is missing; never a handler called without
    the keywords it needs (ListRetirableGrants once answered 500 for it)."""
    failures = []
    for op in MODEL.operation_names:
        response = server.raw(op, body)
        if response.status_code == 200 and not required(op):
            continue
        error = response.json()
        if not (400 <= response.status_code < 500 and well_shaped(error)):
            failures.append(f"{op}: {response.status_code} {response.text[:200]}")
        elif (
            op in OPERATIONS
            and OPERATIONS[op].required
            and (error["__type"] != "ValidationException")
        ):
            failures.append(f"{op}: {error['__type']} for a request missing members")
    assert failures == []
