"""The auditor's pages: the audit trail (search, verification), the security domain and
backups, and the evidence pack. Reading the trail needs hsmkms:ReadAuditTrail in the
principal's identity policies; every read is itself recorded. Search and verification
are hsmkms.audit's (query.py, verify.py): the console has no reader of its own.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.responses import Response

from hsmkms.audit.query import Query, parse_since, query
from hsmkms.audit.verify import verify
from hsmkms.console.calls import READ_AUDIT_TRAIL
from hsmkms.console.evidence import evidence_pack
from hsmkms.console.web import Console, Visit, page_context, render
from hsmkms.errors import KMSError, ValidationException
from hsmkms.token import domain_info

RESULTS_SHOWN = 200
FILTERS = ("key", "principal", "event", "since", "until")
DOMAIN_EVENTS = ("CreateSecurityDomain", "JoinSecurityDomain")


def _time(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        return parse_since(text)
    except ValueError:
        raise ValidationException(f"{name}: an ISO 8601 date or time, e.g. 2026-01-31.") from None


def _directory(console: Console) -> Any:
    if console.audit_dir is None:
        raise ValidationException("This server keeps no audit trail.")
    return console.audit_dir


def audit_page(console: Console, visit: Visit, verdict: dict[str, Any] | None = None) -> Response:
    directory = _directory(console)
    filters = {name: visit.param(name)[:256].strip() for name in FILTERS}
    console.calls.permit(
        visit.visitor, READ_AUDIT_TRAIL, "SearchAuditTrail",
        {"KeyId": filters["key"]} if filters["key"] else None,
    )  # fmt: skip
    what = Query(
        key=filters["key"] or None,
        since=_time(filters["since"], "since"),
        until=_time(filters["until"], "until"),
        event=filters["event"] or None,
        principal=filters["principal"] or None,
    )
    found: deque[dict[str, Any]] = deque(maxlen=RESULTS_SHOWN)
    total = 0
    for record in query(directory, what):
        found.append(record)
        total += 1
    return render(console, "audit.html", records=list(reversed(found)), total=total,
                  filters=filters, verdict=verdict or console.last_verification,
                  **page_context(visit))  # fmt: skip


def run_verification(console: Console) -> dict[str, Any]:
    """audit verify, as `hsmkms audit verify` runs it (hsmkms.audit.verify)."""
    result = verify(_directory(console), console.anchor)
    return {"at": datetime.now(UTC), **result.verdict()}


def verify_page(console: Console, visit: Visit) -> Response:
    _directory(console)
    console.calls.permit(visit.visitor, READ_AUDIT_TRAIL, "VerifyAuditTrail")
    verdict = run_verification(console)
    verdict["by"] = visit.visitor.principal_arn
    console.last_verification = verdict
    return audit_page(console, visit, verdict)


def _latest(console: Console, events: tuple[str, ...]) -> dict[str, Any] | None:
    latest: dict[str, Any] | None = None
    for event in events:
        for record in query(_directory(console), Query(event=event)):
            if latest is None or str(record.get("eventTime")) > str(latest.get("eventTime")):
                latest = record
    return latest


def security_page(console: Console, visit: Visit) -> Response:
    """The domain and the last backup (from the token and the trail, with
    hsmkms:ReadAuditTrail); custom key stores (DescribeCustomKeyStores)."""
    domain: dict[str, Any] | str
    try:
        console.calls.permit(visit.visitor, READ_AUDIT_TRAIL, "DescribeSecurityDomain")
        domain = _domain(console)
    except KMSError as exc:
        domain = exc.code
    try:
        stores: Any = console.calls.run_as(visit.visitor, "DescribeCustomKeyStores", {})[
            "CustomKeyStores"
        ]
    except KMSError as exc:
        stores = exc.code
    return render(console, "security.html", domain=domain, stores=stores,
                  now=datetime.now(UTC), **page_context(visit))  # fmt: skip


def _domain(console: Console) -> dict[str, Any]:
    info = domain_info(console.hsm)
    made = _latest(console, DOMAIN_EVENTS) if console.audit_dir else None
    backup = _latest(console, ("CreateBackup",)) if console.audit_dir else None
    parameters = (made or {}).get("requestParameters") or {}
    backup_time = parse_since(str(backup["eventTime"])) if backup else None
    return {
        "domain_id": info.domain_id if info else None,
        "check_value": info.check_value if info else None,
        "custodians": parameters.get("Custodians"),
        "threshold": parameters.get("Threshold"),
        "made": made,
        "backup": backup,
        "backup_file": ((backup or {}).get("requestParameters") or {}).get("File"),
        "backup_failed": (backup or {}).get("errorCode"),
        "backup_age": datetime.now(UTC) - backup_time if backup_time else None,
    }


def evidence_form(console: Console, visit: Visit) -> Response:
    today = datetime.now(UTC).date()
    return render(console, "evidence.html", since=(today - timedelta(days=90)).isoformat(),
                  until=(today + timedelta(days=1)).isoformat(), **page_context(visit))  # fmt: skip


def evidence_download(console: Console, visit: Visit) -> Response:
    since = _time(visit.param("since"), "since")
    until = _time(visit.param("until"), "until") or datetime.now(UTC)
    if since is None or since >= until:
        raise ValidationException("The audit period needs a start before its end.")
    directory = _directory(console)
    console.calls.permit(visit.visitor, READ_AUDIT_TRAIL, "ExportEvidencePack")
    archive = evidence_pack(console, visit, directory, since, until)
    name = f"hsmkms-evidence-{since.date().isoformat()}-{until.date().isoformat()}.zip"
    return Response(archive, media_type="application/zip",
                    headers={"content-disposition": f'attachment; filename="{name}"'})  # fmt: skip
