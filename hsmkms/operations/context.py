"""The one object every operation runs over: store, token, authorizer, clock, region.

Operations are plain functions `op(ctx, **members) -> response`; they reach the
world only through this context, so the same function serves the HTTP API, the
CLI and the library.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from hsmkms.errors import KMSInvalidStateException, NotFoundException
from hsmkms.keys.clock import Clock, system_clock
from hsmkms.keys.keystores import TokenRegistry
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
        tokens: TokenRegistry | None = None,
        region_tokens: Mapping[str, Hsm] | None = None,
    ) -> None:
        self.store = store
        self.hsm = hsm
        self.account_id = account_id
        self.region = region
        self.clock = clock
        # The main token and custom key stores' tokens, shared by every region.
        self.tokens = tokens or TokenRegistry(hsm, store)
        self.material = MaterialKeeper(store, hsm, clock, crash, self.tokens)
        self.keys = KeyResolver(
            store, account_id=account_id, region=region, cache_seconds=cache_seconds
        )
        self.authorizer = Authorizer(self.keys, clock)
        self._regions: dict[str, OperationContext] = {region: self}
        self._regions_lock = threading.Lock()
        # Regions whose keys live on a token of their own (as separate HSMs per region
        # would): region -> its token. Other regions use `hsm`.
        self.region_tokens: dict[str, Hsm] = dict(region_tokens or {})
        self.default_hsm = hsm
        # The regions the edge serves (HSMKMS_REGIONS); empty: any. ReplicateKey
        # refuses others: a replica there could never be used.
        self.served_regions: frozenset[str] = frozenset()
        self._registries: dict[int, TokenRegistry] = {id(self.tokens.main): self.tokens}

    def for_region(self, region: str) -> OperationContext:
        """The context of another region: same token and database, its own keys."""
        context = self._regions.get(region)
        if context is None:
            with self._regions_lock:
                context = self._regions.get(region)
                if context is None:
                    hsm = self.token_of_region(region)
                    tokens = self._registries.get(id(hsm))
                    if tokens is None:
                        tokens = self._registries[id(hsm)] = TokenRegistry(hsm, self.store)
                    context = OperationContext(
                        self.store,
                        hsm,
                        account_id=self.account_id,
                        region=region,
                        clock=self.clock,
                        crash=self.material.crash,
                        cache_seconds=self.keys.cache_seconds,
                        tokens=tokens,
                        region_tokens=self.region_tokens,
                    )
                    context.default_hsm = self.default_hsm
                    context.served_regions = self.served_regions
                    context._registries = self._registries
                    context._regions = self._regions
                    context._regions_lock = self._regions_lock
                    self._regions[region] = context
        return context

    def token_of_region(self, region: str) -> Hsm:
        """The token holding the keys of a region (multi-Region replicas included)."""
        return self.region_tokens.get(region, self.default_hsm)

    # -- shorthands the operations use everywhere ---------------------------------------

    def token_for(self, record: KeyRecord) -> Hsm:
        """The token holding a key's material: the main one, or its custom key store's."""
        if record.custom_key_store_id is None:
            return self.hsm
        return self.tokens.for_record(record)

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
        """Write changed fields of a key in one transaction, onto the row as it is now
        (the row is locked there on PostgreSQL), so no other writer's change is lost.
        A change may be a function of the current row (e.g. tags merged into it)."""
        with self.store.transaction() as tx:
            current = tx.get_key(record.key_id, record.region)
            if current is None:
                raise NotFoundException(f"Key '{record.arn}' does not exist")
            if current.state is not record.state:  # checked against a state now gone
                raise KMSInvalidStateException(
                    f"{record.arn} changed state to {current.state.value} meanwhile; retry."
                )
            values = {k: v(current) if callable(v) else v for k, v in changes.items()}
            updated = replace(current, **values)
            tx.put_key(updated)
        self.changed()
        return updated
