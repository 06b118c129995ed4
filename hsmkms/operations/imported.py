"""Imported key material in the token and in its key's record: unwrap (behind an
intent), remove (DeleteImportedKeyMaterial, expiry), and on-demand rotation to material
imported with ImportType NEW_KEY_MATERIAL.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from hsmkms.errors import (
    IncorrectKeyMaterialException,
    KMSInvalidStateException,
    NotFoundException,
    UnsupportedOperationException,
)
from hsmkms.keys import imported
from hsmkms.keys.availability import STATE_BEFORE_UNAVAILABLE
from hsmkms.keys.imported import ImportParameters, Material
from hsmkms.keys.specs import material_for
from hsmkms.operations.context import OperationContext
from hsmkms.store.model import (
    KeyRecord,
    KeyState,
    PendingMaterial,
    RotationType,
    VersionState,
)
from hsmkms.token import MaterialRef, import_material


def present_versions(ctx: OperationContext, key_id: str) -> set[int]:
    """Versions whose material is in the token (not deleted or expired)."""
    return {v.version for v in ctx.store.list_versions(key_id) if v.state is VersionState.ACTIVE}


def unwrap_to(
    ctx: OperationContext,
    record: KeyRecord,
    params: ImportParameters,
    encrypted: bytes,
    version: int,
) -> bytes:
    """Unwrap into the token as this version of the key (in the token: C_UnwrapKey);
    returns its check value. An intent names the object first, so a crash leaves
    nothing reconcile cannot remove; on success the caller drops the intent when it
    commits (or destroys a scratch copy)."""
    target = MaterialRef(record.key_id, version)
    with ctx.store.transaction() as tx:
        if tx.get_key(record.key_id) is None:
            raise NotFoundException(f"Key '{record.arn}' does not exist")
        if any(p.key_id == record.key_id and p.version == version for p in tx.list_pending()):
            raise KMSInvalidStateException(
                f"Key material is being imported into {record.arn}; retry."
            )
        tx.add_pending(PendingMaterial(record.key_id, version, ctx.clock()))
    try:
        ctx.hsm.destroy(target)  # leftovers of a crash (a scratch copy, a cut delete)
        kind = material_for(record.key_spec, record.key_usage)
        return import_material(
            ctx.hsm, params.wrapping_key, params.wrapping_algorithm, encrypted, target, kind
        )
    except BaseException:
        drop(ctx, record, version)
        raise


def drop(ctx: OperationContext, record: KeyRecord, version: int) -> None:
    """Destroy an unwrapped object that is not to be kept, and its intent."""
    ctx.hsm.destroy(MaterialRef(record.key_id, version))
    with ctx.store.transaction() as tx:
        tx.remove_pending(record.key_id, version)


def version_of(
    entries: dict[int, Material], check_value: bytes, key_material_id: str | None
) -> int:
    """Which of a key's materials was imported again: the one with this check value."""
    if key_material_id is not None and not any(
        m.key_material_id == key_material_id for m in entries.values()
    ):
        raise NotFoundException(f"No key material {key_material_id} in this KMS key.")
    for version, material in entries.items():
        if material.check_value == check_value.hex():
            if key_material_id not in (None, material.key_material_id):
                break
            return version
    raise IncorrectKeyMaterialException(
        "The key material is not the same key material that was previously imported "
        "into this KMS key."
    )


def remove(ctx: OperationContext, record: KeyRecord, versions: list[int]) -> None:
    """Destroy these materials in the token, then record it: their version rows stay
    (marked missing) so ciphertexts decrypt again after re-import; material pending
    rotation is forgotten; losing any other makes the key PendingImport (a key pending
    deletion keeps its state). Objects first: a crash in between leaves a key whose
    material is missing, which reconcile marks Unavailable and a re-import repairs."""
    for version in versions:
        ctx.hsm.destroy(MaterialRef(record.key_id, version))
    with ctx.store.transaction() as tx:
        current = tx.get_key(record.key_id)
        if current is None:
            return
        for row in tx.list_versions(record.key_id):
            if row.version in versions:
                tx.put_version(replace(row, state=VersionState.MISSING))
        entries = imported.materials(current)
        lost_current = any(v in entries and not entries[v].pending_rotation for v in versions)
        for version in versions:
            if version in entries and entries[version].pending_rotation:
                del entries[version]
        extra = imported.with_materials(current, entries)
        state = current.state
        if lost_current and state is not KeyState.PENDING_DELETION:
            state = KeyState.PENDING_IMPORT
            extra.pop(STATE_BEFORE_UNAVAILABLE, None)
        tx.put_key(replace(current, state=state, extra=extra))
    ctx.changed()


def expire(ctx: OperationContext, now: datetime, record: KeyRecord) -> bool:
    """The maintenance pass: delete imported material whose ValidTo has passed."""
    if not imported.materials(record):
        return False
    due = imported.expired_versions(record, now, present_versions(ctx, record.key_id))
    if due:
        remove(ctx, record, due)
    return bool(due)


def rotate_to_imported(ctx: OperationContext, record: KeyRecord, now: datetime) -> None:
    """RotateKeyOnDemand of an EXTERNAL key: the material imported with ImportType
    NEW_KEY_MATERIAL (PENDING_ROTATION) becomes current."""
    if record.multi_region:
        raise UnsupportedOperationException(
            "On-demand rotation of multi-Region keys with imported key material is not "
            "supported by this hsmkms release."
        )
    pending = [v for v, m in imported.materials(record).items() if m.pending_rotation]
    if not pending:
        raise KMSInvalidStateException(
            f"{record.arn} has no key material pending rotation: import new key material "
            "with ImportType NEW_KEY_MATERIAL first."
        )
    version = pending[0]
    with ctx.store.transaction() as tx:
        current = tx.get_key(record.key_id)
        if current is None or current.current_version != record.current_version:
            raise KMSInvalidStateException(f"{record.arn} changed meanwhile; retry.")
        rows = {row.version: row for row in tx.list_versions(record.key_id)}
        if version not in rows or rows[version].state is not VersionState.ACTIVE:
            raise KMSInvalidStateException(f"{record.arn}: the new key material is missing.")
        entries = imported.materials(current)
        entries[version] = replace(entries[version], pending_rotation=False)
        tx.put_version(replace(rows[version], created_at=now, rotation_type=RotationType.ON_DEMAND))
        tx.put_key(
            replace(
                current,
                current_version=version,
                on_demand_rotations=current.on_demand_rotations + 1,
                extra=imported.with_materials(current, entries),
            )
        )
    ctx.changed()
