"""The one object every operation runs over: store, token, authorizer, clock, region.

Operations are plain functions `op(ctx, **members) -> response`; they reach the
world only through this context, so the same function serves the HTTP API, the
CLI and the library.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from hsmkms.errors import NotFoundException
from hsmkms.keys.clock import Clock, system_clock
from hsmkms.keys.material import CrashHook, MaterialKeeper
from hsmkms.keys.model import KeyRecord
from hsmkms.keys.resolved import Resolved
from hsmkms.keys.resolver import METADATA_CACHE_SECONDS, KeyResolver
from hsmkms.policy.authorize import Authorizer
from hsmkms.store.base import MetadataStore
from hsmkms.token import Hsm

Response = dict[str, Any]


class OperationContext:
    """Everything an operation may use, for one account and region."""

    def __init__(
        self,
        store: MetadataStore,
        hsm: Hsm,
        *,
        account_id: str,
        region: str,
        clock: Clock = system_clock,
        crash: CrashHook | None = None,
        cache_seconds: float = METADATA_CACHE_SECONDS,
    ) -> None:
        self.store = store
        self.hsm = hsm
        self.account_id = account_id
        self.region = region
        self.clock = clock
        self.material = MaterialKeeper(store, hsm, clock, crash)
        self.keys = KeyResolver(
            store, account_id=account_id, region=region, cache_seconds=cache_seconds
        )
        self.authorizer = Authorizer(self.keys, clock)
        self._regions: dict[str, OperationContext] = {region: self}
        self._regions_lock = threading.Lock()

    def for_region(self, region: str) -> OperationContext:
        """The context of another region: same token and database, its own keys."""
        context = self._regions.get(region)
        if context is None:
            with self._regions_lock:
                context = self._regions.get(region)
                if context is None:
                    context = OperationContext(
                        self.store,
                        self.hsm,
                        account_id=self.account_id,
                        region=region,
                        clock=self.clock,
                        crash=self.material.crash,
                        cache_seconds=self.keys.cache_seconds,
                    )
                    context._regions = self._regions
                    context._regions_lock = self._regions_lock
                    self._regions[region] = context
        return context

    # -- shorthands the operations use everywhere ---------------------------------------

    def resolve(self, key_id: str) -> KeyRecord:
        return self.keys.resolve(key_id)

    def cached(self, key_id: str) -> Resolved:
        return self.keys.cached(key_id)

    def changed(self) -> None:
        self.keys.changed()

    def key_arn(self, key_id: str) -> str:
        return self.keys.key_arn(key_id)

    def alias_arn(self, name: str) -> str:
        return self.keys.alias_arn(name)

    def update(self, record: KeyRecord, **changes: Any) -> KeyRecord:
        """Write one key record's changed fields, in one transaction, onto the row as
        it is now: a concurrent writer's other fields (a rotation's current_version)
        are kept, never overwritten with what this caller read earlier."""
        with self.store.transaction() as tx:
            current = tx.get_key(record.key_id)
            if current is None:
                raise NotFoundException(f"Key '{record.arn}' does not exist")
            updated = replace(current, **changes)
            tx.put_key(updated)
        self.changed()
        return updated
