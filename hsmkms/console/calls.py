"""Every console page runs operations here, as the signed-in principal: THE place the
console meets the KMS edge — `hsmkms.api.invoke.invoke` (validation, the key and identity
policies and grants, the handler) and the one record builder and durability step of
hsmkms/api/audit_step.py — exactly as a signed API request does, with the console as
user agent and the browser's address as source, on disk before the page is answered.
The console's own actions (sign-in, sign-out, reading the audit trail, authorized by
identity policies: `hsmkms:ReadAuditTrail`) are recorded the same way, as Outcomes of
the console's event source.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hsmkms.api.audit_step import record_event_blocking
from hsmkms.api.invoke import Principal, invoke
from hsmkms.api.ratelimit import RateLimiter
from hsmkms.audit.log import AuditLog, request_parameters
from hsmkms.audit.outcome import KMS_SOURCE, Outcome, call_record
from hsmkms.errors import AccessDeniedException, KMSError
from hsmkms.operations.context import OperationContext
from hsmkms.operations.table import OPERATIONS
from hsmkms.policy.caller import CallerInfo

log = logging.getLogger("hsmkms.console")

USER_AGENT = "hsmkms-console"
EVENT_SOURCE = "hsmkms.console"
# The console's own permission, in identity policies only (`kms:*` does not cover it).
READ_AUDIT_TRAIL = "hsmkms:ReadAuditTrail"


@dataclass(frozen=True)
class Visitor:
    """Who the console acts for in one request, and from where."""

    principal_arn: str
    access_key_id: str
    source_ip: str | None
    secure: bool

    def caller(self) -> CallerInfo:
        return CallerInfo(
            self.principal_arn, source_ip=self.source_ip, secure_transport=self.secure
        )

    def principal(self, region: str) -> Principal:
        return Principal(
            self.principal_arn, region, self.access_key_id, self.source_ip, self.secure
        )


class Calls:
    def __init__(
        self,
        ctx: OperationContext,
        audit: AuditLog | None,
        region: str,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self._ctx = ctx
        self._audit = audit
        self.region = region
        self._rate_limiter = rate_limiter

    def run_as(
        self,
        visitor: Visitor,
        operation: str,
        members: Mapping[str, Any] | None = None,
        region: str | None = None,
    ) -> dict[str, Any]:
        """Run one KMS operation as the visitor, in `region` (the console's by default);
        its result, or its KMSError raised once the call's record is durable."""
        op = OPERATIONS[operation]
        principal = visitor.principal(region or self.region)
        try:
            if self._rate_limiter is not None:  # the principal's quota, as for the API
                self._rate_limiter.check(visitor.principal_arn, op.name)
        except KMSError as exc:
            outcome = Outcome(KMS_SOURCE, op.name, op.read_only, principal.identity(),
                              principal.region, error=exc)  # fmt: skip
        else:
            outcome = invoke(self._ctx, principal, op, dict(members or {}))
        self._record(outcome, visitor.source_ip)
        if outcome.error is not None:
            raise outcome.error
        result: dict[str, Any] = outcome.response or {}
        return result

    def permit(
        self, visitor: Visitor, action: str, event: str, members: Mapping[str, Any] | None = None
    ) -> None:
        """Allow one of the console's own actions (e.g. hsmkms:ReadAuditTrail) by the
        visitor's identity policies, or raise AccessDeniedException; either way the
        attempt is recorded as `event`. Principals of another account never may: the
        trail is this account's."""
        given = dict(members or {})
        regional = self._ctx.for_region(self.region)
        info = visitor.caller()
        failure: KMSError | None = None
        if regional.authorizer.foreign(info):
            failure = AccessDeniedException(
                f"User: {visitor.principal_arn} is not authorized to perform: {action} "
                "because it is not a principal of this account"
            )
        else:
            request, decision = regional.authorizer.decide(
                info, action, None, given, callers_own=True
            )
            if not decision.allowed:
                failure = AccessDeniedException(decision.message(request))
        self.record_own(visitor, event, given, failure)
        if failure is not None:
            raise failure

    def record_sign_in(
        self,
        source_ip: str | None,
        secure: bool,
        access_key_id: str,
        principal_arn: str | None,
        failure: KMSError | None,
    ) -> None:
        """ConsoleLogin: who signed in, or which access key id was tried and why not."""
        identity = None
        if principal_arn is not None:
            identity = Principal(principal_arn, self.region, access_key_id).identity()
        outcome = Outcome(
            EVENT_SOURCE, "ConsoleLogin", False, identity, self.region, error=failure,
            additional=None if failure is None else {"claimedAccessKeyId": access_key_id[:128]},
        )  # fmt: skip
        event = self._event(outcome, source_ip)
        event["responseElements"] = {"ConsoleLogin": "Failure" if failure else "Success"}
        self._write(event)

    def record_sign_out(self, visitor: Visitor, reason: str) -> None:
        outcome = Outcome(
            EVENT_SOURCE, "ConsoleLogout", False,
            visitor.principal(self.region).identity(), self.region,
            additional={"reason": reason},
        )  # fmt: skip
        self._record(outcome, visitor.source_ip)

    def record_own(
        self,
        visitor: Visitor,
        event: str,
        members: Mapping[str, Any],
        failure: KMSError | None,
    ) -> None:
        """A record of one of the console's own (reading) actions."""
        outcome = Outcome(
            EVENT_SOURCE, event, True, visitor.principal(self.region).identity(),
            self.region, request_parameters(members), error=failure,
        )  # fmt: skip
        self._record(outcome, visitor.source_ip)

    def _event(self, outcome: Outcome, source_ip: str | None) -> dict[str, Any]:
        return call_record(
            outcome, request_id=str(uuid.uuid4()), source_ip=source_ip, user_agent=USER_AGENT
        )

    def _record(self, outcome: Outcome, source_ip: str | None) -> None:
        self._write(self._event(outcome, source_ip))

    def _write(self, event: dict[str, Any]) -> None:
        """Durability `sync`: on disk before the page is answered; a record that cannot
        be written fails the page (KMSInternalException), as it fails an API call."""
        record_event_blocking(self._audit, event, f"of console {event.get('eventName')}")
