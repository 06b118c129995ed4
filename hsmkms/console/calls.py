"""Every console page runs operations here, as the signed-in principal: THE place the
console meets the KMS edge's pieces (validation and the handler through
`hsmkms.api.kms.call`, the authorizer's `require`, the edge's one audit record), so it
can be pointed at a shared edge function in one place.

A KMS operation goes through the operation table exactly as a signed API request does:
the principal's request quota, the model's validation, the key and identity policies
and grants, then the handler; its record is the API's, with the console as user agent
and the browser's address as source, on disk before the page is answered. The
console's own actions (reading the audit trail) are authorized by identity policies
(`hsmkms:ReadAuditTrail`) and recorded the same way.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from hsmkms.api.app import _audit_event, _Call
from hsmkms.api.kms import call
from hsmkms.api.ratelimit import RateLimiter
from hsmkms.api.sigv4 import Caller
from hsmkms.audit.log import AuditLog
from hsmkms.errors import AccessDeniedException, KMSError, KMSInternalException
from hsmkms.operations.context import OperationContext
from hsmkms.operations.table import OPERATIONS, Operation
from hsmkms.policy.caller import CallerInfo, current_caller
from hsmkms.policy.needs import Access

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
        region = region or self.region
        call_ = self._call(visitor, f"TrentService.{op.name}", region)
        info = visitor.caller()
        failure: KMSError | None = None
        result: dict[str, Any] = {}
        token = current_caller.set(info)
        try:
            if self._rate_limiter is not None:
                self._rate_limiter.check(visitor.principal_arn, op.name)
            regional = self._ctx.for_region(region)
            regional.keys.refresh()  # writes committed on any node before this request

            def authorize(op: Operation, request: dict[str, Any]) -> Access:
                call_.members = request
                return regional.authorizer.require(
                    info, op.name, op.resource, request, call_.resources
                )

            result = call(op, regional, dict(members or {}), authorize)
            call_.result = result
        except KMSError as exc:
            failure = exc
        except Exception:  # a real fault: logged, a clean error page
            log.exception("internal error in console %s", op.name)
            failure = KMSInternalException("An internal error occurred.")
        finally:
            current_caller.reset(token)
        self._record(_audit_event(call_, op.name, _request_id(), failure))
        if failure is not None:
            raise failure
        return result

    def permit(
        self, visitor: Visitor, action: str, event: str, members: Mapping[str, Any] | None = None
    ) -> None:
        """Allow one of the console's own actions (e.g. hsmkms:ReadAuditTrail) by the
        visitor's identity policies, or raise AccessDeniedException; either way the
        attempt is recorded as `event`. Principals of another account never may: the
        trail is this account's."""
        call_ = self._call(visitor, "")
        call_.members = dict(members or {})
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
                info, action, None, call_.members, callers_own=True
            )
            if not decision.allowed:
                failure = AccessDeniedException(decision.message(request))
        self.record_own(call_, event, failure)
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
        call_ = self._call(None, "")
        call_.client, call_.secure = source_ip, secure
        if principal_arn is not None:
            call_.caller = Caller(principal_arn, access_key_id, self.region)
        event = _audit_event(call_, "ConsoleLogin", _request_id(), failure)
        event["responseElements"] = {"ConsoleLogin": "Failure" if failure else "Success"}
        if failure is not None:
            event["additionalEventData"] = {"claimedAccessKeyId": access_key_id[:128]}
        self._record(_as_own(event))

    def record_sign_out(self, visitor: Visitor, reason: str) -> None:
        call_ = self._call(visitor, "")
        event = _as_own(_audit_event(call_, "ConsoleLogout", _request_id(), None))
        event["additionalEventData"] = {"reason": reason}
        self._record(event)

    def record_own(self, call_: _Call, event: str, failure: KMSError | None) -> None:
        self._record(_as_own(_audit_event(call_, event, _request_id(), failure)))

    def _call(self, visitor: Visitor | None, target: str, region: str | None = None) -> _Call:
        call_ = _Call(
            "/console/",
            "",
            target,
            {"user-agent": [USER_AGENT]},
            b"",
            None if visitor is None else visitor.source_ip,
            False if visitor is None else visitor.secure,
        )
        if visitor is not None:
            call_.caller = Caller(
                visitor.principal_arn, visitor.access_key_id, region or self.region
            )
        return call_

    def _record(self, event: dict[str, Any]) -> None:
        """Durability `sync`: on disk before the page is answered; a record that cannot
        be written fails the page, as it fails an API call."""
        if self._audit is None:
            return
        event["userAgent"] = USER_AGENT
        durable: Future[None] | None = self._audit.submit(event)
        if durable is None:
            return
        try:
            durable.result()
        except Exception:
            log.exception("audit record for console %s not written", event.get("eventName"))
            raise KMSInternalException("The audit record could not be written.") from None


def _as_own(event: dict[str, Any]) -> dict[str, Any]:
    """A record of the console's own action (not a KMS operation)."""
    event["eventSource"] = EVENT_SOURCE
    event["readOnly"] = event["eventName"] not in ("ConsoleLogin", "ConsoleLogout")
    return event


def _request_id() -> str:
    return str(uuid.uuid4())
