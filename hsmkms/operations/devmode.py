"""Development mode: wipe every key, alias, grant, key policy and custom key store between
the tests of a suite written for moto_server or LocalStack (their reset endpoints).

Allowed only where nothing of value can be lost: every token is SoftHSM2 and none holds a
security domain (a domain means keys meant to survive: backups, other tokens). Keys go
through the paths deletion always takes (material destroyed crash-safely, rows removed in
one transaction per key); principals, access keys, identity policies, registered clusters
and the audit trail stay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hsmkms.config import is_softhsm
from hsmkms.errors import KMSInvalidStateException
from hsmkms.keystores.cloudhsm import list_clusters
from hsmkms.keystores.records import STORES, CustomKeyStore
from hsmkms.operations import imports, keystores
from hsmkms.operations.context import Deployment, OperationContext
from hsmkms.operations.replication import delete_replica
from hsmkms.store.model import KeyRecord
from hsmkms.token import Token, domain_info

SOFTHSM2_MANUFACTURER = "SoftHSM"  # CK_TOKEN_INFO.manufacturerID: "SoftHSM project"


def _tokens(deployment: Deployment) -> list[Token]:
    tokens = {id(t): t for t in (deployment.hsm, *deployment.region_tokens.values())}
    return list(tokens.values())


def refusal(deployment: Deployment) -> str | None:
    """Why development mode may not run over this deployment; None when it may."""
    for token in _tokens(deployment):
        if SOFTHSM2_MANUFACTURER not in token.info.manufacturer:
            return (
                f"token {token.token_label!r} is not SoftHSM2 ({token.info.manufacturer}); "
                "development mode wipes keys and runs on SoftHSM2 tokens only"
            )
        if domain_info(token) is not None:
            return (
                f"token {token.token_label!r} belongs to a security domain; development "
                "mode wipes keys and never runs where keys are meant to be kept"
            )
    for cluster in list_clusters(deployment.store):
        if not is_softhsm(cluster.module):
            return (
                f"custom key store cluster {cluster.cluster_id} is not a SoftHSM2 token "
                f"({cluster.module})"
            )
    return None


@dataclass
class ResetReport:
    keys: list[str] = field(default_factory=list)  # ARNs of the rows removed
    custom_key_stores: list[str] = field(default_factory=list)
    import_parameters: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_event_data(self) -> dict[str, Any]:
        return {
            "keysDeleted": len(self.keys),
            "customKeyStoresDeleted": len(self.custom_key_stores),
            "importParametersDeleted": len(self.import_parameters),
            "seconds": round(self.seconds, 4),
        }


def _all_keys(ctx: OperationContext) -> list[KeyRecord]:
    rows: list[KeyRecord] = []
    after: str | None = None
    while page := ctx.store.list_keys(None, after, 500):
        rows.extend(page)
        after = page[-1].key_id
    return rows


def reset_state(ctx: OperationContext) -> ResetReport:
    """Delete every key (each Region's row, its material, aliases, grants and key policy),
    every custom key store and the import parameters; KMSInvalidStateException where the
    deployment is not one development mode may wipe (checked again each time: a security
    domain may have been created since the server started)."""
    started = time.perf_counter()
    why = refusal(ctx.deployment)
    if why is not None:
        raise KMSInvalidStateException(f"Development mode reset refused: {why}.")
    report = ResetReport()
    rows = _all_keys(ctx)
    # Replicas first, so each primary goes last with the versions they shared.
    for record in (row for row in rows if row.is_replica):
        delete_replica(ctx.for_region(record.region), record)
    by_region: dict[str, list[KeyRecord]] = {}
    for record in (row for row in rows if not row.is_replica):
        by_region.setdefault(record.region, []).append(record)
    for name, records in by_region.items():
        # material in a disconnected key store's token stays there, as deletion leaves it
        ctx.for_region(name).material.destroy_all(records)
    report.keys = [row.arn for row in rows]
    for body in ctx.store.list_documents(STORES).values():
        store = CustomKeyStore.from_json(body)
        region = ctx.for_region(store.region)
        if store.connection_state != "DISCONNECTED":
            keystores.disconnect_custom_key_store(region, custom_key_store_id=store.store_id)
        keystores.delete_custom_key_store(region, custom_key_store_id=store.store_id)
        report.custom_key_stores.append(store.store_id)
    report.import_parameters = imports.destroy_expired_parameters(ctx, ctx.clock())
    ctx.changed()  # other Regions' caches see the store's generation move on their next call
    report.seconds = time.perf_counter() - started
    return report
