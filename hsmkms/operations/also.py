"""Permissions an operation needs besides the one its table entry checks: AWS checks
kms:TagResource when CreateKey or ReplicateKey tags the new key, and kms:CreateKey or
kms:UpdatePrimaryRegion in the other region of a multi-Region call. One place checks
them all, with the request's members (aws:RequestTag and aws:TagKeys conditions).
Operator calls (library, CLI) have no caller: nothing to check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hsmkms.errors import AccessDeniedException
from hsmkms.operations.context import OperationContext
from hsmkms.policy.caller import current_caller
from hsmkms.store.model import KeyRecord


def require_also(
    ctx: OperationContext,
    action: str,
    record: KeyRecord | None = None,
    members: Mapping[str, Any] | None = None,
) -> None:
    caller = current_caller.get()
    if caller is None:
        return
    request, decision = ctx.authorizer.decide(caller, action, record, dict(members or {}))
    if not decision.allowed:
        raise AccessDeniedException(decision.message(request))
