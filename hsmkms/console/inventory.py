"""The key inventory, made of ListKeys, ListAliases, DescribeKey and GetKeyRotationStatus
called as the signed-in principal: a key it may list but not describe shows as such,
never with metadata it was not allowed to read.

Rotation status: symmetric encryption keys only (AWS rotates no other kind). A key is
overdue when automatic rotation is on and its next rotation date has passed (the
maintenance pass did not run); a key with rotation off is shown as not rotating.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hsmkms.console.calls import Calls, Visitor
from hsmkms.errors import KMSError

PAGE = 1000
ROTATING_SPECS = frozenset({"SYMMETRIC_DEFAULT"})
COLUMNS = (
    ("alias", "Alias"),
    ("key_id", "Key ID"),
    ("key_spec", "Spec"),
    ("key_usage", "Usage"),
    ("state", "State"),
    ("origin", "Origin"),
    ("key_store", "Key store"),
    ("region", "Region"),
    ("multi_region", "Multi-Region"),
    ("rotation", "Rotation"),
    ("next_rotation", "Next rotation"),
    ("material_expires", "Imported material expires"),
    ("created", "Created"),
)
SORTABLE = frozenset(name for name, _ in COLUMNS)


@dataclass
class KeyRow:
    key_id: str
    arn: str
    alias: str = ""
    aliases: list[str] = field(default_factory=list)
    key_spec: str = ""
    key_usage: str = ""
    state: str = ""
    origin: str = ""
    key_store: str = ""
    region: str = ""
    multi_region: str = ""  # "", "PRIMARY of <id>" / "REPLICA of <id>"
    group: str = ""  # the multi-Region key id shared by a primary and its replicas
    description: str = ""
    rotation: str = ""  # "every N days", "off", "on demand only", "n/a", or why unknown
    next_rotation: datetime | None = None
    overdue: bool = False
    material_expires: datetime | None = None
    created: datetime | None = None
    denied: str = ""  # DescribeKey was refused: nothing else is shown

    def cell(self, name: str) -> str:
        value = getattr(self, name)
        if isinstance(value, datetime):
            return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
        return str(value or "")

    def sort_key(self, name: str) -> tuple[int, str]:
        value = getattr(self, name)
        if isinstance(value, datetime):
            return (0, value.astimezone(UTC).isoformat())
        return (0 if value else 1, str(value or "").lower())


def _pages(
    calls: Calls,
    visitor: Visitor,
    operation: str,
    member: str,
    region: str | None = None,
    **members: Any,
) -> Iterator[Any]:
    marker: str | None = None
    while True:
        request = dict(members, Limit=PAGE if operation == "ListKeys" else 100)
        if marker:
            request["Marker"] = marker
        page = calls.run_as(visitor, operation, request, region)
        yield from page.get(member, [])
        if not page.get("Truncated"):
            return
        marker = page.get("NextMarker")


def list_aliases(
    calls: Calls, visitor: Visitor, key_id: str | None = None, region: str | None = None
) -> dict[str, list[str]]:
    """Key id -> its alias names (ListAliases)."""
    found: dict[str, list[str]] = {}
    members = {} if key_id is None else {"KeyId": key_id}
    for alias in _pages(calls, visitor, "ListAliases", "Aliases", region, **members):
        if alias.get("TargetKeyId"):
            found.setdefault(alias["TargetKeyId"], []).append(alias["AliasName"])
    return found


def describe_row(row: KeyRow, metadata: dict[str, Any]) -> None:
    row.key_spec = metadata.get("KeySpec", "")
    row.key_usage = metadata.get("KeyUsage", "")
    row.state = metadata.get("KeyState", "")
    row.origin = metadata.get("Origin", "")
    row.key_store = metadata.get("CustomKeyStoreId") or "default (token)"
    row.description = metadata.get("Description", "")
    row.created = metadata.get("CreationDate")
    row.material_expires = metadata.get("ValidTo")
    config = metadata.get("MultiRegionConfiguration")
    if metadata.get("MultiRegion") and config:
        primary = config.get("PrimaryKey", {})
        row.multi_region = (
            f"{config.get('MultiRegionKeyType', '')} (primary in {primary.get('Region', '?')})"
        )
        row.group = row.key_id


def rotation_row(
    row: KeyRow, status: dict[str, Any] | None, now: datetime, error: str = ""
) -> None:
    if error:
        row.rotation = error
        return
    if status is None:
        row.rotation = "n/a"
        return
    if status.get("KeyRotationEnabled"):
        row.rotation = f"every {status.get('RotationPeriodInDays', 365)} days"
        row.next_rotation = status.get("NextRotationDate")
        row.overdue = row.next_rotation is not None and row.next_rotation < now
    else:
        row.rotation = "off" if row.origin != "EXTERNAL" else "on demand only"


def replica_regions(metadata: dict[str, Any]) -> set[str]:
    """The regions a multi-Region key's configuration names."""
    config = metadata.get("MultiRegionConfiguration") or {}
    keys = [config.get("PrimaryKey") or {}, *(config.get("ReplicaKeys") or [])]
    return {k["Region"] for k in keys if isinstance(k.get("Region"), str)}


def load_inventory(
    calls: Calls, visitor: Visitor, now: datetime, regions: Iterable[str]
) -> list[KeyRow]:
    """Every key the visitor may list in `regions` and in the regions its multi-Region
    keys are replicated to, described as far as it may describe them. Raises the
    KMSError of the first region's ListKeys itself (e.g. AccessDeniedException)."""
    queue = list(dict.fromkeys(regions))
    done: set[str] = set()
    rows: list[KeyRow] = []
    while queue:
        region = queue.pop(0)
        done.add(region)
        try:
            found = _region_rows(calls, visitor, now, region)
        except KMSError:
            if not rows and not done - {region}:
                raise
            continue  # a replica region this principal may not list
        for row, more in found:
            rows.append(row)
            queue += [r for r in sorted(more) if r not in done and r not in queue]
    return rows


def _region_rows(
    calls: Calls, visitor: Visitor, now: datetime, region: str
) -> list[tuple[KeyRow, set[str]]]:
    keys = list(_pages(calls, visitor, "ListKeys", "Keys", region))
    try:
        aliases = list_aliases(calls, visitor, region=region)
    except KMSError:  # aliases are not the visitor's to list: the keys still are
        aliases = {}
    rows: list[tuple[KeyRow, set[str]]] = []
    for key in keys:
        row = KeyRow(key["KeyId"], key["KeyArn"], region=region)
        row.aliases = sorted(aliases.get(row.key_id, []))
        row.alias = row.aliases[0] if row.aliases else ""
        try:
            metadata = calls.run_as(visitor, "DescribeKey", {"KeyId": row.key_id}, region)
        except KMSError as exc:
            row.denied = exc.code
            rows.append((row, set()))
            continue
        describe_row(row, metadata["KeyMetadata"])
        rows.append((row, replica_regions(metadata["KeyMetadata"])))
        if row.key_spec not in ROTATING_SPECS or row.state.startswith("Pending"):
            rotation_row(row, None, now)
            continue
        try:
            status = calls.run_as(visitor, "GetKeyRotationStatus", {"KeyId": row.key_id}, region)
        except KMSError as exc:
            rotation_row(row, None, now, error=f"unknown ({exc.code})")
            continue
        rotation_row(row, status, now)
    return rows


def select(
    rows: Iterable[KeyRow],
    text: str = "",
    state: str = "",
    sort: str = "alias",
    descending: bool = False,
) -> list[KeyRow]:
    """Rows matching a text (any of id, alias, description, spec) and a state, sorted by
    a column; multi-Region keys stay next to each other within equal sort values."""
    needle = text.strip().lower()
    chosen = [
        row
        for row in rows
        if (not state or row.state == state)
        and (
            not needle
            or any(
                needle in value.lower()
                for value in (row.key_id, row.description, row.key_spec, *row.aliases)
            )
        )
    ]
    column = sort if sort in SORTABLE else "alias"
    ordered = sorted(chosen, key=lambda row: row.sort_key(column), reverse=descending)
    # A multi-Region key's rows (one per region) follow its first one.
    grouped: list[KeyRow] = []
    placed: set[int] = set()
    for row in ordered:
        if id(row) in placed:
            continue
        members = [r for r in ordered if row.group and r.group == row.group] or [row]
        for member in sorted(members, key=lambda r: (r is not row, r.region)):
            grouped.append(member)
            placed.add(id(member))
    return grouped


def to_csv(rows: Iterable[KeyRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Key ARN", *(title for _, title in COLUMNS), "Overdue", "Description"])
    for row in rows:
        writer.writerow(
            [
                row.arn,
                *(_safe(row.cell(name)) for name, _ in COLUMNS),
                "yes" if row.overdue else "",
                _safe(row.description),
            ]
        )
    return out.getvalue()


def _safe(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
