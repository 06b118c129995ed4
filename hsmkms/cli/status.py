"""`hsmkms status`: the deployment at a glance, for the operator who did not write it.

The token (reachable, what it says of its free memory and sessions), the database, the
security domain and its custodians, the audit trail's chains and their last
checkpoints, keys due for deletion or rotation, imported material expiring, the last
backup and its age, custom key stores and the XKS proxy's key stores. A readable
report, or JSON with --json; each part that cannot be read says why instead of
stopping the report. Exit 1 when the token or the database cannot be reached.

Status only reads: the key reads go through the operations' handlers unrecorded, as
`domain status` and `audit verify` read without records.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hsmkms.audit.files import trail_id
from hsmkms.audit.summary import chain_ends, latest
from hsmkms.cli.registry import Outcome, command
from hsmkms.config import Settings
from hsmkms.errors import KMSError
from hsmkms.library import KeyManager
from hsmkms.store.base import MetadataStore
from hsmkms.token import Hsm

SOON = timedelta(days=30)  # rotations, deletions and expiries this close are listed
BACKUP_AGE_WARNING = timedelta(days=7)


def add_parser(commands: Any) -> None:
    status = commands.add_parser(
        "status", help="the deployment at a glance: token, database, domain, audit, keys, backups"
    )
    status.add_argument("--json", action="store_true", help="JSON, for scripts")


def _failure(exc: BaseException) -> str:
    return f"{exc.code}: {exc.message}" if isinstance(exc, KMSError) else str(exc)


def _attempt(part: dict[str, Any], problems: list[str], name: str, read: Callable[[], Any]) -> Any:
    """`read()`, or None with the failure noted in `part` and `problems`."""
    try:
        return read()
    except (KMSError, OSError, ValueError) as exc:
        part["Error"] = _failure(exc)
        problems.append(f"{name}: {_failure(exc)}")
        return None


def _token(hsm: Hsm) -> dict[str, Any]:
    from hsmkms.token import token_capacity

    hsm.probe()
    info = hsm.info
    return {
        "Label": info.label, "Serial": info.serial, "Manufacturer": info.manufacturer,
        "Model": info.model, "Firmware": info.firmware, "Reachable": True,
        "KeyMaterialObjects": sum(hsm.material_census().values()),
        **token_capacity(hsm).as_dict(),
    }  # fmt: skip


def _domain(hsm: Hsm, settings: Settings, problems: list[str]) -> dict[str, Any]:
    from hsmkms.token import domain_info, domain_key_modifiable

    info = domain_info(hsm)
    if info is None:
        problems.append("no security domain: key material cannot be backed up")
        return {"Domain": None, "Custody": "never-extractable"}
    made = latest(settings.data_dir / "audit", "CreateSecurityDomain")
    asked = (made or {}).get("requestParameters") or {}
    modifiable = domain_key_modifiable(hsm)
    if modifiable:
        problems.append("the domain key is modifiable (installed by an older hsmkms)")
    return {
        "Domain": info.domain_id, "CheckValue": info.check_value,
        "Custody": hsm.custody.value,
        "Custodians": asked.get("Custodians"), "Threshold": asked.get("Threshold"),
        "DomainKeyModifiable": modifiable,
        "UnenforcedProtections": list(info.unenforced),
    }  # fmt: skip


def _keys(reader: KeyManager, settings: Settings, now: datetime) -> dict[str, Any]:
    from hsmkms.cli.inventory import inventory

    keys = inventory(reader, settings.data_dir / "audit")
    states: dict[str, int] = {}
    for key in keys:
        states[key["KeyState"]] = states.get(key["KeyState"], 0) + 1

    def due(key: dict[str, Any], member: str) -> datetime | None:
        value = key.get(member)
        return value if isinstance(value, datetime) and value - now <= SOON else None

    deletions = [(k["DeletionDate"], k["KeyId"]) for k in keys if k["DeletionDate"]]
    rotations = [
        (when, k["KeyId"])
        for k in keys
        if k["Rotation"] and (when := due(k["Rotation"], "NextRotationDate"))
    ]
    expiring = [(when, k["KeyId"]) for k in keys if (when := due(k, "ValidTo"))]
    return {
        "Total": len(keys),
        "ByState": dict(sorted(states.items())),
        "PendingDeletion": [{"KeyId": i, "DeletionDate": t} for t, i in sorted(deletions)],
        "RotationDueWithin30Days": [
            {"KeyId": i, "NextRotationDate": t} for t, i in sorted(rotations)
        ],
        "ImportedMaterialExpiringWithin30Days": [
            {"KeyId": i, "ValidTo": t} for t, i in sorted(expiring)
        ],
    }


def _audit(settings: Settings, problems: list[str]) -> dict[str, Any]:
    directory = settings.data_dir / "audit"
    ends = chain_ends(directory)
    for end in ends:
        if end["LastRecord"] and not end["LastCheckpoint"]:
            problems.append(f"audit chain {end['Chain']}: no checkpoint yet")
    return {
        "Directory": str(directory), "Trail": trail_id(directory, create=False),
        "Scope": settings.audit.scope, "Durability": settings.audit.durability,
        "Chains": ends,
    }  # fmt: skip


def _backup(settings: Settings, now: datetime, problems: list[str]) -> dict[str, Any] | None:
    made = latest(settings.data_dir / "audit", "CreateBackup")
    if made is None:
        problems.append("no backup recorded in this data dir's audit trail")
        return None
    when = datetime.fromisoformat(made["eventTime"])
    age = now - when
    if age > BACKUP_AGE_WARNING:
        problems.append(f"the last backup is {age.days} days old")
    return {
        "Time": when, "AgeDays": round(age.total_seconds() / 86400, 1),
        "File": (made.get("requestParameters") or {}).get("File"),
    }  # fmt: skip


def _key_stores(reader: KeyManager, store: MetadataStore, hsm: Hsm, settings: Settings) -> Any:
    from hsmkms.xks.credentials import XksCredentialStore

    stores = reader.describe_custom_key_stores()["CustomKeyStores"]
    credentials = XksCredentialStore(store, hsm, reader.clock).list()
    return {
        "CustomKeyStores": [
            {
                "CustomKeyStoreId": s["CustomKeyStoreId"],
                "Name": s["CustomKeyStoreName"],
                "Type": s.get("CustomKeyStoreType", "AWS_CLOUDHSM"),
                "ConnectionState": s["ConnectionState"],
            }
            for s in stores
        ],
        "XksProxy": {
            "UriPrefixes": list(settings.xks.uri_prefixes),
            "Credentials": len(credentials),
        },
    }


def gather(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    from hsmkms.binding import check_or_bind
    from hsmkms.bootstrap import open_hsm, open_region_tokens
    from hsmkms.operations.context import Deployment
    from hsmkms.store import open_store
    from hsmkms.version import hsmkms_version

    now = now or datetime.now(UTC)
    problems: list[str] = []
    report: dict[str, Any] = {
        "Version": hsmkms_version(), "DataDir": str(settings.data_dir),
        "Account": settings.account_id, "Region": settings.region,
    }  # fmt: skip
    token: dict[str, Any] = {"Label": settings.token.label, "Module": settings.token.pkcs11_lib}
    database: dict[str, Any] = {"Url": settings.store.shown}
    report["Token"], report["Database"] = token, database
    hsm = _attempt(token, problems, "token", lambda: open_hsm(settings))
    store = _attempt(database, problems, "database", lambda: open_store(
        settings.store.database_url, pool_size=1))  # fmt: skip
    try:
        if hsm is not None:
            token.update(_attempt(token, problems, "token", lambda: _token(hsm)) or {})
            report["SecurityDomain"] = _domain(hsm, settings, problems)
        token.setdefault("Reachable", False)
        database["Reachable"] = store is not None
        report["Audit"] = _audit(settings, problems)
        report["LastBackup"] = _backup(settings, now, problems)
        bound = (
            hsm is not None
            and store is not None
            and _attempt(database, problems, "database", lambda: check_or_bind(store, hsm) and True)
        )
        if bound:
            deployment = Deployment(
                store, hsm, account_id=settings.account_id,
                region_tokens=open_region_tokens(settings, hsm),
                served_regions=frozenset(settings.regions.served),
            )  # fmt: skip
            reader = KeyManager(deployment, settings.region)  # unrecorded reads
            report["Keys"] = _keys(reader, settings, now)
            report.update(_key_stores(reader, store, hsm, settings))
            if unavailable := report["Keys"]["ByState"].get("Unavailable"):
                problems.append(f"{unavailable} keys are Unavailable (material or key store)")
            problems += [
                f"custom key store {s['CustomKeyStoreId']} is {s['ConnectionState']}"
                for s in report["CustomKeyStores"]
                if s["ConnectionState"] == "FAILED"
            ]
    finally:
        if store is not None:
            store.close()
        if hsm is not None:
            hsm.close()
    report["Problems"] = problems
    return report


@command("status", key_manager=False)
def _status(settings: Settings, args: argparse.Namespace) -> Outcome:
    from hsmkms.cli.status_view import status_text

    report = gather(settings)
    reachable = report["Token"].get("Reachable") and report["Database"].get("Reachable")
    code = 0 if reachable else 1
    if args.json:
        return Outcome(report, exit_code=code)
    print(status_text(report))
    return Outcome(None, exit_code=code)
