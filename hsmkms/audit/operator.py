"""Operator actions (CLI and library) in the same trail as API calls.

The integrator records each operator action with `AuditLog.record(operator_event(...))`;
the record names the OS user and host instead of an IAM principal. The CLI does it for
every command that changes something (hsmkms.cli.registry), the library per operation.
"""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from hsmkms.audit.log import request_parameters


def operator_identity() -> dict[str, Any]:
    """Who is acting: the OS user (by uid, so `su`/`sudo -E` cannot pose as another via
    $USER), the host and the process."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        user = f"uid:{uid}"
    return {"type": "Operator", "userName": user, "uid": uid, "host": socket.gethostname(),
            "pid": os.getpid()}  # fmt: skip


def operator_name() -> str:
    """user@host, as a retired trail's record names who retired it."""
    identity = operator_identity()
    return f"{identity['userName']}@{identity['host']}"


def operator_event(
    event_name: str,
    *,
    parameters: Mapping[str, Any] | None = None,
    response: Mapping[str, Any] | None = None,
    resources: Iterable[str] = (),
    error_code: str | None = None,
    error_message: str | None = None,
    region: str | None = None,
    source: str = "hsmkms.cli",
) -> dict[str, Any]:
    """A CloudTrail-shaped record of one operator action. `parameters` (what was asked)
    and `response` (what it made: ids, never secrets) pass the same allow-list as API
    calls (no plaintext, ciphertext or secrets); `resources` are key ids or ARNs."""
    event: dict[str, Any] = {
        "eventVersion": "1.08",
        "eventSource": source,
        "eventName": event_name,
        "eventType": "hsmkmsOperatorAction",
        "awsRegion": region,
        "userIdentity": operator_identity(),
        "requestParameters": request_parameters(parameters or {}),
        "readOnly": event_name.startswith(("Describe", "List", "Get")),
    }
    if response:
        event["responseElements"] = request_parameters(response)
    keys = list(resources)
    if keys:
        event["resources"] = [{"ARN": k, "type": "AWS::KMS::Key"} for k in keys]
    if error_code is not None:
        event["errorCode"] = error_code
        event["errorMessage"] = error_message or ""
    return event
