"""Sign-in, the inventory, a key's page and the custodian's actions on it. Each page is
the operations a client would call, run as the signed-in principal (calls.py)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from hsmkms.api.errors import UnrecognizedClientException
from hsmkms.api.refusals import refusals_of
from hsmkms.console.calls import READ_AUDIT_TRAIL
from hsmkms.console.inventory import COLUMNS, load_inventory, select, to_csv
from hsmkms.console.signin import check_credentials
from hsmkms.console.usage import key_usage
from hsmkms.console.web import (
    COOKIE,
    PREFIX,
    SIGNIN_COOKIE,
    Console,
    Visit,
    page_context,
    render,
    same_origin,
    secure,
    tokens_match,
)
from hsmkms.errors import KMSError, ThrottlingException, ValidationException

USAGE_DAYS = 30
KEY_STATES = ("Enabled", "Disabled", "PendingDeletion", "PendingImport", "Unavailable",
              "Creating", "Updating", "PendingReplicaDeletion")  # fmt: skip
# The custodian's actions: form name -> KMS operation (ScheduleKeyDeletion has its own
# confirmation step).
ACTIONS = {
    "disable": "DisableKey",
    "enable": "EnableKey",
    "enable-rotation": "EnableKeyRotation",
    "rotate": "RotateKeyOnDemand",
    "cancel-deletion": "CancelKeyDeletion",
    "schedule-deletion": "ScheduleKeyDeletion",
}
SIGNIN_FAILED = "The access key id or secret access key is not valid."
REASONS = {
    "expired": "Your session has ended. Sign in again.",
    "revoked": "Your access key is no longer active. Sign in with another.",
    "signed-out": "You have signed out.",
}


# -- signing in and out -----------------------------------------------------------------


def signin_form(
    console: Console, request: Request, message: str = "", status: int = 200
) -> Response:
    token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
    reason = REASONS.get(request.query_params.get("reason", ""), "")
    response = render(console, "signin.html", status, csrf=token, message=message, notice=reason)
    response.set_cookie(SIGNIN_COOKIE, token, path=PREFIX, httponly=True, samesite="strict",
                        secure=secure(request))  # fmt: skip
    return response


def sign_in(console: Console, request: Request, form: dict[str, str]) -> Response:
    """POST /console/signin (in a worker thread)."""
    if not (
        same_origin(request)
        and tokens_match(form.get("csrf"), request.cookies.get(SIGNIN_COOKIE, ""))
    ):
        return signin_form(console, request, "The sign-in form expired: try again.", 403)
    access_key_id = form.get("access_key_id", "").strip()[:128]
    secret = form.get("secret_access_key", "")
    source = request.client.host if request.client else None
    wait = console.throttle.attempt(source, access_key_id)
    if wait > 0:
        failure: KMSError = ThrottlingException(
            f"Too many failed sign-ins: try again in {int(wait) + 1} seconds."
        )
        _record_failure(console, request, access_key_id, failure)
        return signin_form(console, request, failure.message, 429)
    credential = check_credentials(console.credentials, access_key_id, secret) if secret else None
    if credential is None:  # the attempt stays taken
        _record_failure(console, request, access_key_id, UnrecognizedClientException(SIGNIN_FAILED))
        return signin_form(console, request, SIGNIN_FAILED, 401)
    console.throttle.succeeded(source, access_key_id)
    token, _ = console.sessions.start(credential.principal_arn, credential.access_key_id)
    console.calls.record_sign_in(
        source, secure(request), access_key_id, credential.principal_arn, None
    )
    response = RedirectResponse(f"{PREFIX}/keys", status_code=303)
    response.set_cookie(
        COOKIE, token, path=PREFIX, httponly=True, samesite="strict", secure=secure(request)
    )
    response.delete_cookie(SIGNIN_COOKIE, path=PREFIX)
    return response


def _record_failure(
    console: Console, request: Request, access_key_id: str, failure: KMSError
) -> None:
    """A failed sign-in, within the edge's budget of refusals per source."""
    source = request.client.host if request.client else None
    refusals = refusals_of(request.scope.get("state"))
    if refusals is None or refusals.should_record(source, failure):
        console.calls.record_sign_in(source, secure(request), access_key_id, None, failure)


def sign_out(console: Console, visit: Visit) -> Response:
    console.sessions.end(visit.request.cookies.get(COOKIE, ""))
    console.calls.record_sign_out(visit.visitor, "signed out")
    response = RedirectResponse(f"{PREFIX}/signin?reason=signed-out", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


# -- the inventory ----------------------------------------------------------------------


def _inventory(console: Console, visit: Visit) -> tuple[list[Any], dict[str, Any]]:
    now = datetime.now(UTC)
    regions = console.regions or (console.calls.region,)
    rows = load_inventory(console.calls, visit.visitor, now, regions)
    choice = {
        "q": visit.param("q")[:200],
        "state": visit.param("state") if visit.param("state") in KEY_STATES else "",
        "sort": visit.param("sort", "alias"),
        "dir": "desc" if visit.param("dir") == "desc" else "asc",
    }
    chosen = select(rows, choice["q"], choice["state"], choice["sort"], choice["dir"] == "desc")
    return chosen, choice


def inventory(console: Console, visit: Visit) -> Response:
    rows, choice = _inventory(console, visit)
    return render(console, "inventory.html", rows=rows, columns=COLUMNS, states=KEY_STATES,
                  choice=choice, now=datetime.now(UTC), **page_context(visit))  # fmt: skip


def inventory_csv(console: Console, visit: Visit) -> Response:
    rows, _ = _inventory(console, visit)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    disposition = f'attachment; filename="hsmkms-keys-{stamp}.csv"'
    return Response(
        to_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": disposition},
    )


# -- a key ------------------------------------------------------------------------------


def _try(
    console: Console, visit: Visit, operation: str, members: dict[str, Any], region: str
) -> Any:
    """An operation's result, or its error code (the section shows it instead)."""
    try:
        return console.calls.run_as(visit.visitor, operation, members, region)
    except KMSError as exc:
        return exc.code


def key_page(console: Console, visit: Visit) -> Response:
    key_id = visit.request.path_params["key_id"]
    region = console.region_of(visit.request)
    metadata = console.calls.run_as(visit.visitor, "DescribeKey", {"KeyId": key_id}, region)[
        "KeyMetadata"
    ]
    key_id = metadata["KeyId"]
    one = {"KeyId": key_id}
    sections: dict[str, Any] = {
        "aliases": _try(console, visit, "ListAliases", one, region),
        "tags": _try(console, visit, "ListResourceTags", one, region),
        "policy": _try(console, visit, "GetKeyPolicy", {**one, "PolicyName": "default"}, region),
        "grants": _try(console, visit, "ListGrants", one, region),
    }
    if isinstance(sections["policy"], dict):
        sections["policy"] = json.dumps(json.loads(sections["policy"]["Policy"]), indent=2)
    if metadata.get("KeySpec") == "SYMMETRIC_DEFAULT":
        sections["rotation"] = _try(console, visit, "GetKeyRotationStatus", one, region)
        sections["rotations"] = _try(console, visit, "ListKeyRotations", one, region)
    sections["usage"] = _usage(console, visit, metadata["Arn"])
    return render(
        console, "key.html", key=metadata, region=region, sections=sections,
        done=visit.param("done")[:64], now=datetime.now(UTC), **page_context(visit),
    )  # fmt: skip


def _usage(console: Console, visit: Visit, key_arn: str) -> Any:
    """The key's use from the audit trail, for a principal allowed to read the trail."""
    if console.audit_dir is None:
        return "no audit trail is kept by this server"
    try:
        console.calls.permit(visit.visitor, READ_AUDIT_TRAIL, "GetKeyUsage", {"KeyId": key_arn})
    except KMSError as exc:
        return exc.code
    until = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return key_usage(
        console.audit_dir, key_arn.rsplit("/", 1)[-1], until - timedelta(days=USAGE_DAYS), until
    )


def confirm_deletion(console: Console, visit: Visit) -> Response:
    key_id = visit.request.path_params["key_id"]
    region = console.region_of(visit.request)
    metadata = console.calls.run_as(visit.visitor, "DescribeKey", {"KeyId": key_id}, region)[
        "KeyMetadata"
    ]
    return render(
        console, "confirm_deletion.html", key=metadata, region=region, **page_context(visit)
    )


def act(console: Console, visit: Visit) -> Response:
    """POST /console/keys/<id>/<action>: one operation through the table, as the visitor."""
    key_id = visit.request.path_params["key_id"]
    region = console.region_of(visit.request)
    name = visit.request.path_params["action"]
    operation = ACTIONS.get(name)
    if operation is None:
        raise ValidationException(f"{name[:64]!r} is not an action of the console.")
    members: dict[str, Any] = {"KeyId": key_id}
    if operation == "ScheduleKeyDeletion":
        if visit.form.get("confirm", "").strip() != key_id:
            raise ValidationException("Type the key ID to confirm its deletion.")
        members["PendingWindowInDays"] = _whole(visit.form.get("days", "30"), "waiting period")
    if operation == "EnableKeyRotation" and visit.form.get("period"):
        members["RotationPeriodInDays"] = _whole(visit.form["period"], "rotation period")
    console.calls.run_as(visit.visitor, operation, members, region)
    return RedirectResponse(
        f"{PREFIX}/keys/{key_id}?region={region}&done={operation}", status_code=303
    )


def _whole(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValidationException(f"The {what} is a whole number of days.") from None
