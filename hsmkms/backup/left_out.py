"""What a restore makes of keys whose material the backup did not carry.

The rows come back as they were, except that a version whose material is not in the
file is Missing and a key whose current version is among them is Unavailable, by the
rule the maintenance pass uses (hsmkms.keys.availability): it is never Enabled, Decrypt
and the like answer KMSInvalidStateException, and it gets its state back if the
material ever returns. AWS_CLOUDHSM key stores come back DISCONNECTED: their keys'
material is in the cluster's token, which connecting the store checks.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

from hsmkms.backup.snapshot import Snapshot
from hsmkms.keys.availability import material_state
from hsmkms.keys.placement import in_main_token
from hsmkms.keystores.records import STORES, CustomKeyStore
from hsmkms.store.model import KeyRecord, KeyState, KeyVersion
from hsmkms.store.rows import key_params, key_record, key_version, version_params
from hsmkms.token import MaterialRef

CLOUDHSM = "AWS_CLOUDHSM"


def _reason(record: KeyRecord) -> str:
    if in_main_token(record):
        return "its key material was not in the backup"
    return (
        f"its key material is in the token of custom key store {record.custom_key_store_id}: "
        "connect the store (the key becomes usable if that token holds it)"
    )


def mark_left_out(snapshot: Snapshot, carried: set[str]) -> list[dict[str, str]]:
    """Change the snapshot's rows for material not among `carried` (labels); returns one
    entry per key that comes back Unavailable, with the state it had and why."""
    versions: dict[str, list[KeyVersion]] = defaultdict(list)
    for row in snapshot.rows("key_versions"):
        versions[row["key_id"]].append(key_version(row))
    marked: dict[tuple[str, int], KeyVersion] = {}
    unavailable: list[dict[str, str]] = []

    def key_row(values: dict[str, Any]) -> dict[str, Any] | None:
        record = key_record(values)
        mine = versions[record.key_id]
        present = {v.version for v in mine if MaterialRef(v.key_id, v.version).label in carried}
        updated, changed = material_state(record, mine, present)
        marked.update({(v.key_id, v.version): v for v in changed})
        if updated is record:
            return None
        if updated.state is KeyState.UNAVAILABLE:
            unavailable.append({
                "key_id": record.key_id, "region": record.region,
                "state_before": record.state.value, "reason": _reason(record),
            })  # fmt: skip
        return key_params(updated)

    snapshot.update("keys", key_row)
    snapshot.update(
        "key_versions",
        lambda row: (
            version_params(marked[found])
            if (found := (row["key_id"], row["version"])) in marked
            else None
        ),
    )
    snapshot.update("documents", _disconnect_cloudhsm)
    return unavailable


def _disconnect_cloudhsm(row: dict[str, Any]) -> dict[str, Any] | None:
    if row["kind"] != STORES:
        return None
    store = CustomKeyStore.from_json(row["body"])
    if store.store_type != CLOUDHSM or store.connection_state == "DISCONNECTED":
        return None
    return {"body": replace(store, connection_state="DISCONNECTED", error_code=None).to_json()}
