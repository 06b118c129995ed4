"""The evidence pack for an audit period: one ZIP archive an auditor can file.

- inventory.csv: every key the principal may list, as the inventory page shows it;
- rotation.csv: rotation compliance per symmetric key (enabled, period, next and last
  rotation, overdue);
- usage.csv: per key and operation, the calls in the period, their failures and the
  distinct principals (from the audit trail);
- audit-verification.json: the trail's verification verdict, run now;
- checkpoints.csv: per chain, records, checkpoints, the sequence covered and the time of
  its latest token-signed checkpoint;
- manifest.json: who made the pack, when, for which period, and each file's SHA-256.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hsmkms.audit.verify import verify
from hsmkms.console.inventory import ROTATING_SPECS, KeyRow, load_inventory, to_csv
from hsmkms.console.usage import usage_by_key
from hsmkms.console.web import Console, Visit
from hsmkms.errors import KMSError


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([["" if v is None else str(v) for v in row] for row in rows])
    return out.getvalue()


def _day(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value else ""


def _last_rotation(console: Console, visit: Visit, row: KeyRow) -> str:
    try:
        page = console.calls.run_as(
            visit.visitor, "ListKeyRotations", {"KeyId": row.key_id, "Limit": 1000}, row.region
        )
    except KMSError as exc:
        return f"unknown ({exc.code})"
    dates = [r["RotationDate"] for r in page.get("Rotations", []) if r.get("RotationDate")]
    return _day(max(dates)) if dates else "never"


def _rotation(console: Console, visit: Visit, rows: list[KeyRow]) -> str:
    lines = []
    for row in rows:
        if row.denied or row.key_spec not in ROTATING_SPECS:
            continue
        status = (
            "overdue" if row.overdue
            else "rotating" if row.rotation.startswith("every")
            else "not rotating"
        )  # fmt: skip
        lines.append([row.arn, row.alias, row.state, row.rotation, _day(row.next_rotation),
                      _last_rotation(console, visit, row), status])  # fmt: skip
    return _csv(
        ["Key ARN", "Alias", "State", "Rotation", "Next rotation", "Last rotation", "Status"],
        lines,
    )


def _usage(directory: Path, rows: list[KeyRow], since: datetime, until: datetime) -> str:
    by_key = usage_by_key(directory, [row.key_id for row in rows], since, until)
    lines = []
    for row in rows:
        usage = by_key[row.key_id]
        totals: Counter[str] = Counter()
        for (_, operation), n in usage.counts.items():
            totals[operation] += n
        principals = len(usage.principals)
        for operation, n in sorted(totals.items()):
            lines.append([row.arn, row.alias, operation, n, usage.failed[operation], principals])
        if not totals:
            lines.append([row.arn, row.alias, "", 0, 0, 0])
    return _csv(["Key ARN", "Alias", "Operation", "Calls", "Failures", "Principals"], lines)


def evidence_pack(
    console: Console, visit: Visit, directory: Path, since: datetime, until: datetime
) -> bytes:
    now = datetime.now(UTC)
    regions = console.regions or (console.calls.region,)
    rows = load_inventory(console.calls, visit.visitor, now, regions)
    verdict = verify(directory, console.anchor).verdict()
    checkpoints = [
        [chain, counts["records"], counts["checkpoints"], counts["covered"],
         verdict["ChainStatus"].get(chain, {}).get("latestCheckpoint"),
         len(verdict["ChainStatus"].get(chain, {}).get("problems", []))]
        for chain, counts in sorted(verdict["Chains"].items())
    ]  # fmt: skip
    files = {
        "inventory.csv": to_csv(rows),
        "rotation.csv": _rotation(console, visit, rows),
        "usage.csv": _usage(directory, rows, since, until),
        "audit-verification.json": json.dumps(verdict, indent=2, default=str),
        "checkpoints.csv": _csv(
            [
                "Chain",
                "Records",
                "Checkpoints",
                "Covered sequence",
                "Latest checkpoint",
                "Problems",
            ],
            checkpoints,
        ),
    }
    manifest = {
        "generatedAt": now.isoformat(),
        "generatedBy": visit.visitor.principal_arn,
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "auditTrailValid": verdict["Valid"],
        "files": {name: hashlib.sha256(body.encode()).hexdigest() for name, body in files.items()},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in {**files, "manifest.json": json.dumps(manifest, indent=2)}.items():
            archive.writestr(name, body)
    return buffer.getvalue()
