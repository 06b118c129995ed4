"""`hsmkms key list --long`: every key of the region with what an operator asks about
it (aliases, spec, usage, state, origin, key store, rotation, creation, last use from
the audit trail), as a table or, with --json, as JSON.

The listing is recorded in the audit trail as the ListKeys and ListAliases calls it
makes; the per-key reads (DescribeKey, GetKeyRotationStatus) go through the same
handlers unrecorded, so an inventory of N keys adds a few records, not 2N."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hsmkms.audit.summary import last_uses
from hsmkms.cli.tables import table, when
from hsmkms.errors import KMSError
from hsmkms.library import KeyManager


def _all(page: Any, member: str) -> list[dict[str, Any]]:
    """Every item of a paged KMS listing; `page(marker)` returns one page."""
    items: list[dict[str, Any]] = []
    marker = None
    while True:
        answer = page(marker)
        items.extend(answer[member])
        if not answer["Truncated"]:
            return items
        marker = answer["NextMarker"]


def _rotation(reader: KeyManager, meta: dict[str, Any]) -> dict[str, Any] | None:
    """Automatic rotation, for the keys that can have it (AWS's rule: symmetric keys
    with material KMS made, not in a custom key store)."""
    if (
        meta["KeySpec"] != "SYMMETRIC_DEFAULT"
        or meta["Origin"] != "AWS_KMS"
        or meta.get("CustomKeyStoreId")
    ):
        return None
    try:
        status = reader.get_key_rotation_status(key_id=meta["KeyId"])
    except KMSError:
        return None  # a replica, or a key whose state refuses the question
    return {
        "Enabled": status["KeyRotationEnabled"],
        "PeriodInDays": status.get("RotationPeriodInDays"),
        "NextRotationDate": status.get("NextRotationDate"),
    }


def inventory(km: KeyManager, audit_directory: Path) -> list[dict[str, Any]]:
    keys = _all(lambda marker: km.list_keys(marker=marker), "Keys")
    aliases = _all(lambda marker: km.list_aliases(marker=marker), "Aliases")
    names: dict[str, list[str]] = {}
    for alias in aliases:
        if alias.get("TargetKeyId"):
            names.setdefault(alias["TargetKeyId"], []).append(alias["AliasName"])
    uses = last_uses(audit_directory)
    reader = km.for_region(km.region)  # no audit trail: see the module's documentation
    found = []
    for key in keys:
        meta = reader.describe_key(key_id=key["KeyId"])["KeyMetadata"]
        found.append({
            "KeyId": meta["KeyId"], "Arn": meta["Arn"],
            "Aliases": sorted(names.get(meta["KeyId"], [])),
            "Description": meta.get("Description", ""),
            "KeySpec": meta["KeySpec"], "KeyUsage": meta["KeyUsage"],
            "KeyState": meta["KeyState"], "Origin": meta["Origin"],
            "CustomKeyStoreId": meta.get("CustomKeyStoreId"),
            "MultiRegion": meta.get("MultiRegion", False),
            "Rotation": _rotation(reader, meta),
            "CreationDate": meta["CreationDate"],
            "DeletionDate": meta.get("DeletionDate"),
            "ValidTo": meta.get("ValidTo"),
            "LastUsed": uses.get(meta["KeyId"]),
        })  # fmt: skip
    return found


def _rotation_cell(rotation: dict[str, Any] | None) -> str:
    if rotation is None:
        return "n/a"
    if not rotation["Enabled"]:
        return "off"
    return f"{rotation['PeriodInDays']}d, next {when(rotation['NextRotationDate'])[:10]}"


def inventory_table(keys: list[dict[str, Any]]) -> str:
    headers = ("KEY ID", "ALIASES", "SPEC", "USAGE", "STATE", "ORIGIN", "KEY STORE",
               "ROTATION", "CREATED", "LAST USED")  # fmt: skip
    rows = [
        (
            key["KeyId"],
            ",".join(key["Aliases"]) or "-",
            key["KeySpec"],
            key["KeyUsage"],
            key["KeyState"],
            key["Origin"],
            key["CustomKeyStoreId"] or "-",
            _rotation_cell(key["Rotation"]),
            when(key["CreationDate"]),
            when(key["LastUsed"]) if key["LastUsed"] else "never",
        )
        for key in keys
    ]
    summary = f"{len(keys)} key{'s' if len(keys) != 1 else ''}"
    return table(headers, rows) + "\n" + summary if rows else summary
