"""Request validation driven by botocore's KMS service model (the spec clients use).

Types that do not fit raise SerializationException, constraint failures raise one
ValidationException listing every failure, worded as AWS words them (list members at
`tags.1.member.tagKey`, enum sets in AWS's order); a value the model allows and hsmkms
does not implement then raises UnsupportedOperationException naming it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from functools import cache
from typing import Any

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from hsmkms.errors import KMSError, UnsupportedOperationException, ValidationException
from hsmkms.keys import context
from hsmkms.operations.enums import enum_constraint, unsupported
from hsmkms.operations.table import snake
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

# The members of nested request structures hsmkms implements, by model shape. The model
# grows (botocore added GrantConstraints.SourceArn): a member it has and this table lacks
# is refused as unsupported, never dropped, so a constraint cannot silently widen a grant.
# (Top-level members are checked against the handler's parameters, api/invoke.py.)
NESTED_MEMBERS: dict[str, frozenset[str]] = {
    "Tag": frozenset({"TagKey", "TagValue"}),
    "GrantConstraints": frozenset({"EncryptionContextSubset", "EncryptionContextEquals"}),
    "XksProxyAuthenticationCredentialType": frozenset({"AccessKeyId", "RawSecretAccessKey"}),
}


def _field(name: str) -> str:
    return name[:1].lower() + name[1:]


def _member_path(path: str, name: str) -> str:
    return f"{path}.{_field(name)}" if path else _field(name)


def _shown(value: Any) -> str:
    return "null" if value is None else f"'{value}'"


class _Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []
        # Model values hsmkms does not implement: refused once the request is valid.
        self.unsupported: list[UnsupportedOperationException] = []

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
                self.fail(path, value, enum_constraint(shape.name))
            elif shape.enum and (refusal := unsupported(shape.name, value)) is not None:
                self.unsupported.append(refusal)
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
            return [
                self.check(shape.member, item, f"{path}.{number}.member")
                for number, item in enumerate(value, start=1)
            ]
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

    def structure(
        self, shape: Shape, value: Any, path: str, required: Collection[str] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise SerializationException(f"Expected a structure at '{path or 'request'}'")
        result: dict[str, Any] = {}
        also = [n for n in shape.members if n in required and n not in shape.required_members]
        for name in [*shape.required_members, *also]:
            if value.get(name) is None:
                self.fail(_member_path(path, name), None, "Member must not be null")
        for name, member in shape.members.items():
            if value.get(name) is not None:
                result[name] = self.check(member, value[name], _member_path(path, name))
        if path:
            implemented = NESTED_MEMBERS.get(shape.name, frozenset())
            self.unsupported.extend(
                UnsupportedOperationException(
                    f"{shape.name}.{name} is not supported by this hsmkms release."
                )
                for name in result
                if name not in implemented
            )
        if shape.name == "GrantConstraints":
            self._grant_constraints(result, path)
        return result  # members the model does not know are ignored, as AWS does

    def _grant_constraints(self, constraints: dict[str, Any], path: str) -> None:
        """The limits CreateGrant documents for its Constraints and the model lacks."""
        most_pairs, longest = context.MAX_CONSTRAINT_PAIRS, context.MAX_CONSTRAINT_VALUE
        for name, pairs in constraints.items():
            if not isinstance(pairs, dict):  # not an encryption-context constraint
                continue
            where = _member_path(path, name)
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


@cache
def required_members(name: str, keywords: frozenset[str]) -> frozenset[str]:
    """The operation's members whose snake_case names are among `keywords` (those its
    handler takes without a default): required whatever the model says."""
    op = operation(name)
    members = op.input_shape.members if op is not None and op.input_shape is not None else {}
    return frozenset(m for m in members if snake(m) in keywords)


def validate_request(
    op: OperationModel, body: Any, required: Collection[str] = ()
) -> dict[str, Any]:
    """The request's members, checked against the model. `required`: members required
    beyond the model's own (those the handler cannot do without)."""
    if op.input_shape is None:
        return {}
    checker = _Checker()
    unless_ignored = REQUIRED_UNLESS_IGNORED.get(op.name)
    always = [name for name in required if name != unless_ignored]
    result = checker.structure(op.input_shape, body, "", always)
    if (
        unless_ignored is not None
        and unless_ignored not in result
        and not ignores_ciphertext(result)
    ):
        checker.fail(_field(unless_ignored), None, "Member must not be null")
    if checker.failures:
        count = len(checker.failures)
        noun = "error" if count == 1 else "errors"
        raise ValidationException(
            f"{count} validation {noun} detected: " + "; ".join(checker.failures)
        )
    if checker.unsupported:
        raise checker.unsupported[0]
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
