"""The maintenance pass: due deletions and rotations in every region, then the
token/metadata reconcile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hsmkms.keys.material import ReconcileReport
from hsmkms.operations import imported, imports
from hsmkms.operations.context import OperationContext
from hsmkms.operations.replication import delete_replica, share
from hsmkms.store.model import (
    KeyState,
    RotationType,
)


@dataclass
class MaintenanceReport:
    deleted: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    # Deleted keys whose custom key store was disconnected: material left in its token.
    left_in_key_store: list[str] = field(default_factory=list)
    # Origin EXTERNAL: keys whose imported material expired (now PendingImport), and
    # import parameters whose wrapping key was destroyed.
    material_expired: list[str] = field(default_factory=list)
    import_parameters_destroyed: list[str] = field(default_factory=list)
    reconcile: ReconcileReport = field(default_factory=ReconcileReport)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "Deleted": self.deleted,
            "Rotated": self.rotated,
            "MaterialLeftInKeyStore": self.left_in_key_store,
            "ImportedMaterialExpired": self.material_expired,
            "ImportParametersDestroyed": self.import_parameters_destroyed,
            "OrphanObjectsDestroyed": self.reconcile.orphans_destroyed,
            "IntentsCleared": self.reconcile.intents_cleared,
            "MaterialMissing": self.reconcile.material_missing,
            "MaterialRestored": self.reconcile.material_restored,
            "UnknownObjectsLeftAlone": self.reconcile.unknown_objects,
            "DuplicateObjectsDestroyed": self.reconcile.duplicates_destroyed,
            "DuplicateObjectsUnresolved": self.reconcile.duplicates_unresolved,
        }


def maintain(ctx: OperationContext) -> MaintenanceReport:
    """Due deletions and rotations (every region), then token/metadata reconcile."""
    report = MaintenanceReport()
    now = ctx.clock()
    after: str | None = None
    while page := ctx.store.list_keys(None, after, 500):
        after = page[-1].key_id
        for record in page:
            # Each region's keys live on that region's token.
            region = ctx.for_region(record.region)
            if record.state is KeyState.PENDING_DELETION and (
                record.deletion_date is not None and record.deletion_date <= now
            ):
                if record.is_replica:
                    delete_replica(ctx, record)
                elif not region.material.destroy(record):
                    report.left_in_key_store.append(record.arn)
                report.deleted.append(record.arn)
            elif imported.expire(ctx, now, record):
                report.material_expired.append(record.arn)
            elif (
                record.state is KeyState.ENABLED
                and record.rotation_enabled
                and record.next_rotation_date is not None
                and record.next_rotation_date <= now
                and not record.is_replica  # replicas rotate with their primary
            ):
                region.material.rotate(record, RotationType.AUTOMATIC, now)
                if record.multi_region:
                    share(ctx, record.key_id)
                report.rotated.append(record.arn)
    report.import_parameters_destroyed = imports.destroy_expired_parameters(ctx, now)
    ctx.changed()
    # Keys of regions on other tokens are not checked against this one.
    report.reconcile = ctx.material.reconcile(
        on_token=lambda record: ctx.token_of_region(record.region) is ctx.hsm
    )
    ctx.changed()
    return report
