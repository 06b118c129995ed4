"""The AWS KMS JSON 1.1 protocol: `X-Amz-Target: TrentService.<Operation>` -> the
operation table's handler, called with the request members as snake_case keywords;
responses carry KMS's member names, blobs as base64 and timestamps as epoch seconds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

from hsmkms.api.errors import UnknownOperationException
from hsmkms.api.shapes import (
    SerializationException,
    empty_listing,
    operation,
    required_members,
    validate_request,
)
from hsmkms.errors import UnsupportedOperationException
from hsmkms.operations.context import OperationContext
from hsmkms.operations.dryrun import dry_run
from hsmkms.operations.table import OPERATIONS, Operation, snake
from hsmkms.policy.needs import Access, ignores_ciphertext

TARGET_PREFIX = "TrentService."
# Accepted and not acted on: grants take effect at once, so tokens have nothing to do.
# DryRun and its modifiers are acted on here, not by the handler.
IGNORED_MEMBERS = frozenset({"GrantTokens", "DryRun", "DryRunModifiers"})


@cache
def resolve_operation(target: str | None) -> Operation:
    if not target or not target.startswith(TARGET_PREFIX):
        raise UnknownOperationException()
    name = target[len(TARGET_PREFIX) :]
    if operation(name) is None:
        raise UnknownOperationException()
    op = OPERATIONS.get(name)
    if op is None:
        raise UnsupportedOperationException(f"{name} is not supported by this hsmkms release.")
    return op


def parse_body(body: bytes) -> Any:
    if not body:
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SerializationException(
            "Start of structure or map found where not expected."
        ) from None


def call(
    op: Operation,
    ctx: OperationContext,
    body: Any,
    authorize: Callable[[Operation, dict[str, Any]], Access] | None = None,
) -> dict[str, Any]:
    """Validate (the model's constraints, then the operation's own checks), authorize
    (when a caller made the request), then run the operation, or only check it when
    the request says DryRun. A listing by a caller of another account shows that
    account, which this server does not hold: empty."""
    model = operation(op.name)
    assert model is not None
    request = validate_request(model, body, required_members(op.name, op.required))
    arguments: dict[str, Any] = {}
    for member, value in request.items():
        if member in IGNORED_MEMBERS:
            continue
        name = snake(member)
        if name not in op.parameters:
            raise UnsupportedOperationException(
                f"{member} is not supported by this hsmkms release."
            )
        arguments[name] = value
    if op.check is not None:
        op.check(arguments)
    if authorize is not None and authorize(op, request) is Access.EMPTY_ACCOUNT:
        return empty_listing(model)
    if request.get("DryRun") is True:
        dry_run(op, ctx, arguments, ignore_ciphertext=ignores_ciphertext(request))
    return op.handler(ctx, **arguments)


def _wire(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def encode_response(result: dict[str, Any]) -> bytes:
    return json.dumps(_wire(result), separators=(",", ":")).encode()
