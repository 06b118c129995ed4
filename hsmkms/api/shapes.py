"""Request validation driven by botocore's KMS service model (the spec clients use).

Types that do not fit raise SerializationException, constraint failures raise one
ValidationException listing every failure, worded as AWS words them.
"""

from __future__ import annotations

import base64
import binascii
from functools import cache
from typing import Any

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from hsmkms.errors import KMSError, ValidationException
from hsmkms.keys import context
from hsmkms.policy.needs import ignores_ciphertext


class SerializationException(KMSError):
    code = "SerializationException"
    status = 400


@cache
def service_model() -> ServiceModel:
    model: ServiceModel = botocore.session.get_session().get_service_model("kms")
    return model


def operation(name: str) -> OperationModel | None:
    model = service_model()
    return model.operation_model(name) if name in model.operation_names else None


CONTEXT_SHAPE = "EncryptionContextType"  # every request member holding an encryption context


def _field(name: str) -> str:
    return name[:1].lower() + name[1:]


def _shown(value: Any) -> str:
    return "null" if value is None else f"'{value}'"


class _Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def fail(self, path: str, value: Any, constraint: str, *, sensitive: bool = False) -> None:
        # AWS leaves the value of a member the model marks sensitive out of the message.
        shown = "" if sensitive else f" {_shown(value)}"
        self.failures.append(f"Value{shown} at '{path}' failed to satisfy constraint: {constraint}")

    def _length(self, shape: Shape, path: str, value: Any, size: int, shown: Any) -> None:
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        sensitive = bool(shape.metadata.get("sensitive"))
        if low is not None and size < low:
            self.fail(
                path,
                shown,
                f"Member must have length greater than or equal to {low}",
                sensitive=sensitive,
            )
        if high is not None and size > high:
            self.fail(
                path,
                shown,
                f"Member must have length less than or equal to {high}",
                sensitive=sensitive,
            )

    def check(self, shape: Shape, value: Any, path: str) -> Any:
        kind = shape.type_name
        if kind == "structure":
            return self.structure(shape, value, path)
        if kind == "string":
            if not isinstance(value, str):
                raise SerializationException(f"Expected a string at '{path}'")
            self._length(shape, path, value, len(value), value)
            if shape.enum and value not in shape.enum:
                self.fail(
                    path, value, f"Member must satisfy enum value set: [{', '.join(shape.enum)}]"
                )
            return value
        if kind in ("integer", "long"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise SerializationException(f"Expected a number at '{path}'")
            low, high = shape.metadata.get("min"), shape.metadata.get("max")
            if low is not None and value < low:
                self.fail(path, value, f"Member must have value greater than or equal to {low}")
            if high is not None and value > high:
                self.fail(path, value, f"Member must have value less than or equal to {high}")
            return value
        if kind == "boolean":
            if not isinstance(value, bool):
                raise SerializationException(f"Expected a boolean at '{path}'")
            return value
        if kind == "blob":
            if not isinstance(value, str):
                raise SerializationException(f"Expected base64 data at '{path}'")
            try:
                data = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise SerializationException(f"Invalid base64 at '{path}'") from None
            self._length(shape, path, data, len(data), "java.nio.HeapByteBuffer")
            return data
        if kind == "list":
            if not isinstance(value, list):
                raise SerializationException(f"Expected a list at '{path}'")
            self._length(shape, path, value, len(value), value)
            return [self.check(shape.member, item, f"{path}.member") for item in value]
        if kind == "map":
            if not isinstance(value, dict):
                raise SerializationException(f"Expected a map at '{path}'")
            checked = {
                self.check(shape.key, k, f"{path}.key"): self.check(shape.value, v, f"{path}.value")
                for k, v in value.items()
            }
            # A limit the model does not carry, checked before authorization reads it.
            if shape.name == CONTEXT_SHAPE and context.size(checked) > context.MAX_CONTEXT_BYTES:
                self.fail(path, None, context.SIZE_CONSTRAINT, sensitive=True)
            return checked
        if kind == "timestamp":
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise SerializationException(f"Expected a timestamp at '{path}'")
            return value
        return value

    def structure(self, shape: Shape, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise SerializationException(f"Expected a structure at '{path or 'request'}'")
        result: dict[str, Any] = {}
        for name in shape.required_members:
            if value.get(name) is None:
                self.fail(f"{path}{_field(name)}", None, "Member must not be null")
        for name, member in shape.members.items():
            if value.get(name) is not None:
                result[name] = self.check(member, value[name], f"{path}{_field(name)}")
        if shape.name == "GrantConstraints":
            self._grant_constraints(result, path)
        return result  # members the model does not know are ignored, as AWS does

    def _grant_constraints(self, constraints: dict[str, Any], path: str) -> None:
        """The limits CreateGrant documents for its Constraints and the model lacks."""
        most_pairs, longest = context.MAX_CONSTRAINT_PAIRS, context.MAX_CONSTRAINT_VALUE
        for name, pairs in constraints.items():
            where = f"{path}{_field(name)}"
            if len(pairs) > most_pairs:
                constraint = f"Member must have length less than or equal to {most_pairs}"
                self.fail(where, None, constraint, sensitive=True)
            for item in pairs.values():
                if len(item) > longest:
                    constraint = f"Member must have length less than or equal to {longest}"
                    self.fail(f"{where}.value", item, constraint)


# Members the API Reference requires that botocore's model leaves optional, because
# they may be left out only in a DryRun with the IGNORE_CIPHERTEXT modifier:
# https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html#KMS-Decrypt-request-CiphertextBlob
REQUIRED_UNLESS_IGNORED = {"Decrypt": "CiphertextBlob", "ReEncrypt": "CiphertextBlob"}


def validate_request(op: OperationModel, body: Any) -> dict[str, Any]:
    if op.input_shape is None:
        return {}
    checker = _Checker()
    result = checker.structure(op.input_shape, body, "")
    member = REQUIRED_UNLESS_IGNORED.get(op.name)
    if member is not None and member not in result and not ignores_ciphertext(result):
        checker.fail(_field(member), None, "Member must not be null")
    if checker.failures:
        count = len(checker.failures)
        noun = "error" if count == 1 else "errors"
        raise ValidationException(
            f"{count} validation {noun} detected: " + "; ".join(checker.failures)
        )
    return result


def empty_listing(op: OperationModel) -> dict[str, Any]:
    """A listing operation's answer with nothing in it (every list member empty, not
    truncated), in the model's own member names."""
    output = op.output_shape
    assert output is not None
    empty: dict[str, Any] = {
        name: [] for name, member in output.members.items() if member.type_name == "list"
    }
    if "Truncated" in output.members:
        empty["Truncated"] = False
    return empty
