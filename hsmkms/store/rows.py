"""Row <-> model mapping shared by the SQL stores.

A row is anything indexable by column name (sqlite3.Row, psycopg's dict rows); the
parameters a model becomes are a dict keyed by column name, used as named SQL
parameters by both engines.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol

from hsmkms.store.model import (
    AccessKey,
    Alias,
    Grant,
    KeyRecord,
    KeySpec,
    KeyState,
    KeyUsage,
    KeyVersion,
    Origin,
    PendingMaterial,
    RotationType,
    TokenBinding,
    VersionState,
)


class Row(Protocol):
    def __getitem__(self, column: str) -> Any: ...


Params = dict[str, Any]

KEY_COLUMNS = (
    "key_id", "region", "account_id", "creation_date", "key_spec", "key_usage", "origin",
    "state", "current_version", "description", "deletion_date", "pending_window_days",
    "multi_region", "multi_region_config", "custom_key_store_id", "rotation_enabled",
    "rotation_period_days", "next_rotation_date", "on_demand_rotations", "extra", "tags",
    "policy", "replica",
)  # fmt: skip
VERSION_COLUMNS = ("key_id", "version", "created_at", "rotation_type", "state")
ALIAS_COLUMNS = (
    "region", "name", "key_id", "account_id", "creation_date", "last_updated_date",
)  # fmt: skip
PENDING_COLUMNS = ("key_id", "version", "created_at")
ACCESS_KEY_COLUMNS = (
    "access_key_id", "principal_arn", "wrapped_secret", "created_at", "status", "last_used_at",
    "last_used_region",
)  # fmt: skip
GRANT_COLUMNS = (
    "grant_id", "key_id", "grantee_principal", "operations", "creation_date",
    "issuing_account", "token", "name", "retiring_principal", "context_subset",
    "context_equals", "region",
)  # fmt: skip


def token_binding(row: Row) -> TokenBinding:
    return TokenBinding(
        row["label"], row["serial"], row["marker"], datetime.fromisoformat(row["bound_at"])
    )


def token_binding_params(binding: TokenBinding) -> Params:
    return {
        "label": binding.label, "serial": binding.serial, "marker": binding.marker,
        "bound_at": binding.bound_at.isoformat(),
    }  # fmt: skip


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _from_json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def key_params(r: KeyRecord) -> Params:
    return {
        "key_id": r.key_id, "region": r.region, "account_id": r.account_id,
        "creation_date": _ts(r.creation_date), "key_spec": r.key_spec.value,
        "key_usage": r.key_usage.value, "origin": r.origin.value, "state": r.state.value,
        "current_version": r.current_version, "description": r.description,
        "deletion_date": _ts(r.deletion_date), "pending_window_days": r.pending_window_days,
        "multi_region": int(r.multi_region), "multi_region_config": _json(r.multi_region_config),
        "custom_key_store_id": r.custom_key_store_id,
        "rotation_enabled": int(r.rotation_enabled),
        "rotation_period_days": r.rotation_period_days,
        "next_rotation_date": _ts(r.next_rotation_date),
        "on_demand_rotations": r.on_demand_rotations, "extra": json.dumps(r.extra),
        "tags": json.dumps(r.tags), "policy": r.policy, "replica": int(r.is_replica),
    }  # fmt: skip


def key_record(row: Row) -> KeyRecord:
    return KeyRecord(
        key_id=row["key_id"],
        region=row["region"],
        account_id=row["account_id"],
        creation_date=datetime.fromisoformat(row["creation_date"]),
        key_spec=KeySpec(row["key_spec"]),
        key_usage=KeyUsage(row["key_usage"]),
        origin=Origin(row["origin"]),
        state=KeyState(row["state"]),
        current_version=row["current_version"],
        description=row["description"],
        deletion_date=_dt(row["deletion_date"]),
        pending_window_days=row["pending_window_days"],
        multi_region=bool(row["multi_region"]),
        multi_region_config=_from_json(row["multi_region_config"]),
        custom_key_store_id=row["custom_key_store_id"],
        rotation_enabled=bool(row["rotation_enabled"]),
        rotation_period_days=row["rotation_period_days"],
        next_rotation_date=_dt(row["next_rotation_date"]),
        on_demand_rotations=row["on_demand_rotations"],
        extra=json.loads(row["extra"]),
        tags=json.loads(row["tags"]),
        policy=row["policy"],
    )


def version_params(v: KeyVersion) -> Params:
    rotation = None if v.rotation_type is None else v.rotation_type.value
    return {
        "key_id": v.key_id, "version": v.version, "created_at": v.created_at.isoformat(),
        "rotation_type": rotation, "state": v.state.value,
    }  # fmt: skip


def key_version(row: Row) -> KeyVersion:
    rotation = row["rotation_type"]
    return KeyVersion(
        row["key_id"],
        row["version"],
        datetime.fromisoformat(row["created_at"]),
        None if rotation is None else RotationType(rotation),
        VersionState(row["state"]),
    )


def alias_params(a: Alias) -> Params:
    return {
        "region": a.region, "name": a.name, "key_id": a.key_id, "account_id": a.account_id,
        "creation_date": a.creation_date.isoformat(),
        "last_updated_date": a.last_updated_date.isoformat(),
    }  # fmt: skip


def alias(row: Row) -> Alias:
    return Alias(
        row["name"],
        row["key_id"],
        row["region"],
        row["account_id"],
        datetime.fromisoformat(row["creation_date"]),
        datetime.fromisoformat(row["last_updated_date"]),
    )


def pending_params(p: PendingMaterial) -> Params:
    return {"key_id": p.key_id, "version": p.version, "created_at": p.created_at.isoformat()}


def pending(row: Row) -> PendingMaterial:
    return PendingMaterial(row["key_id"], row["version"], datetime.fromisoformat(row["created_at"]))


def access_key_params(k: AccessKey) -> Params:
    return {
        "access_key_id": k.access_key_id, "principal_arn": k.principal_arn,
        "wrapped_secret": k.wrapped_secret, "created_at": k.created_at.isoformat(),
        "status": k.status, "last_used_at": _ts(k.last_used_at),
        "last_used_region": k.last_used_region,
    }  # fmt: skip


def access_key(row: Row) -> AccessKey:
    return AccessKey(
        row["access_key_id"],
        row["principal_arn"],
        bytes(row["wrapped_secret"]),
        datetime.fromisoformat(row["created_at"]),
        row["status"],
        _dt(row["last_used_at"]),
        row["last_used_region"],
    )


def grant_params(g: Grant) -> Params:
    return {
        "grant_id": g.grant_id, "key_id": g.key_id, "grantee_principal": g.grantee_principal,
        "operations": json.dumps(list(g.operations)),
        "creation_date": g.creation_date.isoformat(), "issuing_account": g.issuing_account,
        "token": g.token, "name": g.name, "retiring_principal": g.retiring_principal,
        "context_subset": _json(g.context_subset), "context_equals": _json(g.context_equals),
        "region": g.region,
    }  # fmt: skip


def grant(row: Row) -> Grant:
    return Grant(
        grant_id=row["grant_id"],
        key_id=row["key_id"],
        grantee_principal=row["grantee_principal"],
        operations=tuple(json.loads(row["operations"])),
        creation_date=datetime.fromisoformat(row["creation_date"]),
        issuing_account=row["issuing_account"],
        token=row["token"],
        name=row["name"],
        retiring_principal=row["retiring_principal"],
        context_subset=_from_json(row["context_subset"]),
        context_equals=_from_json(row["context_equals"]),
        region=row["region"],
    )
