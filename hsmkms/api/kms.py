"""The KMS face of the edge: AWS KMS JSON 1.1 on `POST /`.

`X-Amz-Target: TrentService.<Operation>` names the operation table's entry; the
request is SigV4-verified, rate-limited, then run as its principal by api/invoke.py
(validation, authorization, handler). Responses carry KMS's member names, blobs as
base64 and timestamps as epoch seconds; errors are `{"__type": ..., "message": ...}`
with KMS's statuses.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime
from functools import cache
from typing import Any

from hsmkms.api.edge import Headers, Seen
from hsmkms.api.errors import UnknownOperationException, error_body
from hsmkms.api.invoke import Principal, invoke
from hsmkms.api.ratelimit import RateLimiter
from hsmkms.api.shapes import SerializationException, operation
from hsmkms.api.sigv4 import Caller, SigV4Verifier, claimed_access_key_id
from hsmkms.api.workers import LaneChooser
from hsmkms.audit.outcome import KMS_SOURCE, Outcome, kms_names
from hsmkms.errors import KMSError, UnsupportedOperationException
from hsmkms.json_input import parse_json
from hsmkms.operations.context import OperationContext
from hsmkms.operations.table import OPERATIONS, Operation

TARGET_PREFIX = "TrentService."
JSON_11 = [(b"content-type", b"application/x-amz-json-1.1")]


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


def operation_named(target: str) -> str:
    """The operation an X-Amz-Target names, as the audit trail shows it (unverified)."""
    return target.removeprefix(TARGET_PREFIX)[:64] or "Unknown"


def parse_body(body: bytes) -> Any:
    if not body:
        return {}
    try:
        return parse_json(body)
    except ValueError:  # UnicodeDecodeError and nesting too deep included
        raise SerializationException(
            "Start of structure or map found where not expected."
        ) from None


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


class KmsFace:
    protocol = "kms"
    max_body: int | None = None  # the server's bound (api/body.py) is the KMS one
    names = staticmethod(kms_names)

    def __init__(
        self,
        ctx: OperationContext,
        verifier: SigV4Verifier,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self._ctx = ctx
        self._verifier = verifier
        self._rate_limiter = rate_limiter
        self.lanes = LaneChooser()
        self.pending = 0

    def admit(self, seen: Seen) -> KMSError | None:
        return None

    def slow(self, seen: Seen) -> bool:
        return self.lanes.slow(operation_named(seen.header("x-amz-target")))

    def handle(self, seen: Seen) -> Outcome:
        started = time.perf_counter()
        try:
            caller = self._verifier.verify("POST", seen.path, seen.query, seen.headers, seen.body)
        except KMSError as exc:
            return self.refused(seen, exc)
        target = seen.header("x-amz-target")
        try:
            op = resolve_operation(target or None)
            if self._rate_limiter is not None:
                self._rate_limiter.check(caller.principal_arn, op.name)
            members = parse_body(seen.body)
        except KMSError as exc:
            return self._before_operation(seen, caller, exc)
        principal = Principal(caller.principal_arn, caller.region, caller.access_key_id,
                              seen.client, seen.secure)  # fmt: skip
        outcome = invoke(self._ctx, principal, op, members)
        self.lanes.observe(op.name, time.perf_counter() - started)
        return outcome

    def _before_operation(self, seen: Seen, caller: Caller, error: KMSError) -> Outcome:
        """A signed request refused before its operation ran (unknown, throttled, not JSON)."""
        return self._refusal(seen, error, caller)

    def refused(self, seen: Seen, error: KMSError) -> Outcome:
        return self._refusal(seen, error, None)

    def _refusal(self, seen: Seen, error: KMSError, caller: Caller | None) -> Outcome:
        name = operation_named(seen.header("x-amz-target"))
        known = OPERATIONS.get(name)
        read_only = known is not None and known.read_only
        if caller is not None:
            principal = Principal(caller.principal_arn, caller.region, caller.access_key_id)
            identity = principal.identity()
            return Outcome(KMS_SOURCE, name, read_only, identity, caller.region, error=error)
        claimed = claimed_access_key_id(seen.headers)  # refused before the signature was checked
        additional = None if claimed is None else {"claimedAccessKeyId": claimed}
        return Outcome(KMS_SOURCE, name, read_only, error=error, additional=additional)

    def respond(self, seen: Seen, outcome: Outcome) -> tuple[int, Headers, bytes]:
        if outcome.error is not None:
            return outcome.error.status, JSON_11, json.dumps(error_body(outcome.error)).encode()
        return 200, JSON_11, encode_response(outcome.response)
