"""Running a KMS operation as an authenticated principal: the one call path the KMS
JSON 1.1 face and the browser console share.

    outcome = invoke(ctx, caller, "DisableKey", {"KeyId": key_id})
    await record(audit, outcome, request_id=..., source_ip=..., user_agent=...)

`invoke` validates the members against botocore's KMS model and the operation's own
checks, authorizes the caller (key policy, identity policies, grants, accounts), runs
the handler (or only checks it, for DryRun) and returns an Outcome: the result or the
error, and everything the call's audit record says. It never raises for a failed call;
an unexpected fault is logged here with its traceback and becomes
KMSInternalException. `record` (hsmkms/api/audit_step.py) is the one audit step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hsmkms.api.shapes import empty_listing, required_members, validate_request
from hsmkms.api.shapes import operation as operation_model
from hsmkms.audit.log import request_parameters
from hsmkms.audit.outcome import KMS_SOURCE, Outcome
from hsmkms.errors import KMSError, KMSInternalException, UnsupportedOperationException
from hsmkms.operations.context import OperationContext
from hsmkms.operations.dryrun import dry_run
from hsmkms.operations.table import OPERATIONS, Operation, snake
from hsmkms.policy.caller import CallerInfo, current_caller
from hsmkms.policy.needs import Access, ignores_ciphertext

log = logging.getLogger("hsmkms.api")

# Accepted and not acted on: grants take effect at once, so tokens have nothing to do.
# DryRun and its modifiers are acted on here, not by the handler.
IGNORED_MEMBERS = frozenset({"GrantTokens", "DryRun", "DryRunModifiers"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls, as the face that authenticated them knows it: SigV4 (the KMS face) or
    a console sign-in. `access_key_id`: the key that signed, or the session's."""

    arn: str
    region: str
    access_key_id: str | None = None
    source_ip: str | None = None
    secure_transport: bool = False

    def identity(self) -> dict[str, Any]:
        """userIdentity, as CloudTrail shows an IAM user's."""
        return {
            "type": "IAMUser",
            "arn": self.arn,
            "accountId": self.arn.split(":")[4],
            "accessKeyId": self.access_key_id,
        }


def invoke(
    ctx: OperationContext,
    caller: Principal,
    operation: Operation | str,
    members: Any,
) -> Outcome:
    """Validate, authorize, run: `operation` by table entry or KMS name; `members` the
    request's members as the wire gives them (a JSON object, KMS's member names).
    `ctx`: any region's context of the deployment; the call runs in the caller's."""
    op = operation if isinstance(operation, Operation) else _named(operation)
    if isinstance(op, KMSError):
        return Outcome(KMS_SOURCE, str(operation)[:64], identity=caller.identity(),
                       region=caller.region, error=op)  # fmt: skip
    regional = ctx.for_region(caller.region)
    info = CallerInfo(caller.arn, caller.source_ip, caller.secure_transport)
    seen: dict[str, Any] = {}  # the validated members, once authorization saw them
    resources: list[str] = []  # the keys authorization checked

    def authorize(op: Operation, request: dict[str, Any]) -> Access:
        seen.update(request)
        return regional.authorizer.require(info, op.name, op.resource, request, resources)

    result: dict[str, Any] | None = None
    error: KMSError | None = None
    token = current_caller.set(info)
    try:
        regional.keys.refresh()  # see writes committed on any node before this request
        result = call(op, regional, members, authorize)
    except KMSError as exc:
        error = exc
    except Exception as exc:  # a real fault: its traceback here, a clean 500 to the caller
        log.exception("internal error in %s", op.name)
        error = KMSInternalException("An internal error occurred.")
        error.__cause__ = exc
    finally:
        current_caller.reset(token)
    return Outcome(
        KMS_SOURCE,
        op.name,
        op.read_only,
        caller.identity(),
        caller.region,
        request_parameters(seen),
        resources or _named_key(result, seen),
        result,
        error,
    )


def _named(name: str) -> Operation | KMSError:
    op = OPERATIONS.get(name)
    if op is not None:
        return op
    return UnsupportedOperationException(f"{name[:64]} is not supported by this hsmkms release.")


def _named_key(result: Mapping[str, Any] | None, members: Mapping[str, Any]) -> list[str]:
    """The key a call made or named, when authorization checked none (CreateKey)."""
    for found in ((result or {}).get("KeyId"), members.get("KeyId")):
        if isinstance(found, str):
            return [found]
    return []


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
    model = operation_model(op.name)
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
    result: dict[str, Any] = op.handler(ctx, **arguments)
    return result
