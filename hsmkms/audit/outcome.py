"""What one call did, as its handling path returns it, and the ONE CloudTrail-shaped
record built from that, for every call the edge answers: KMS JSON 1.1, the XKS proxy,
refusals at the edge and the console's calls alike.

The record is made from the Outcome alone (operation, identity, parameters, resources,
the error the caller was told), never from request objects changed on the way down,
so what the trail says is what the handler path returned. Parameters arrive already
allow-listed by whoever knows the protocol (KMS members through
`request_parameters`, XKS requestMetadata in full): never plaintext, ciphertext, AAD
or secrets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hsmkms.errors import KMSError

KMS_SOURCE = "kms.amazonaws.com"
MAX_USER_AGENT = 256  # a client's own words in the trail: capped


def kms_names(error: KMSError) -> tuple[str, str]:
    """(errorCode, errorMessage) as the KMS API names an error."""
    return error.code, error.message


@dataclass(slots=True)
class Outcome:
    """One call's result and everything its audit record says about it."""

    event_source: str  # kms.amazonaws.com, kms-xks-proxy
    operation: str  # eventName: the operation, or the (capped) name a refused call gave
    read_only: bool = False
    identity: Mapping[str, Any] | None = None  # userIdentity; None: never authenticated
    region: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)  # requestParameters
    resources: Sequence[str] = ()  # key ARNs (or ids) the call named
    response: Any = None  # the handler's result, for the wire; never in the record
    error: KMSError | None = None
    additional: Mapping[str, Any] | None = None  # additionalEventData


def call_record(
    outcome: Outcome,
    *,
    request_id: str,
    source_ip: str | None,
    user_agent: str | None = None,
    processing_seconds: float | None = None,
    names: Callable[[KMSError], tuple[str, str]] = kms_names,
) -> dict[str, Any]:
    """THE record of a call; denials carry the reason as errorMessage. `names`: how the
    caller's protocol names an error (XKS: its errorName), as the caller was told."""
    record: dict[str, Any] = {
        "eventVersion": "1.08",
        "eventTime": datetime.now(UTC).isoformat(),
        "eventSource": outcome.event_source,
        "eventName": outcome.operation,
        "awsRegion": outcome.region,
        "sourceIPAddress": source_ip,
        "userIdentity": None if outcome.identity is None else dict(outcome.identity),
        "requestParameters": dict(outcome.parameters),
        "requestID": request_id,
        "readOnly": outcome.read_only,
    }
    if user_agent:
        record["userAgent"] = user_agent[:MAX_USER_AGENT]
    if processing_seconds is not None:
        record["processingMillis"] = round(processing_seconds * 1000, 3)
    if outcome.resources:
        record["resources"] = [{"ARN": k, "type": "AWS::KMS::Key"} for k in outcome.resources]
    if outcome.error is not None:
        record["errorCode"], record["errorMessage"] = names(outcome.error)
    if outcome.additional:
        record["additionalEventData"] = dict(outcome.additional)
    return record
