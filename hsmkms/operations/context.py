"""The deployment (what one hsmkms process serves, built once) and the operation context
(one region of it), the one object every operation runs over.

Operations are plain functions `op(ctx, **members) -> response`; they reach the
world only through the context, so the same function serves the HTTP API, the
CLI and the library.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from hsmkms.errors import KMSInvalidStateException, NotFoundException
from hsmkms.keys.clock import Clock, system_clock
from hsmkms.keys.material import CrashHook, MaterialKeeper
from hsmkms.keys.resolved import Resolved
from hsmkms.keys.resolver import METADATA_CACHE_SECONDS, KeyResolver
from hsmkms.keystores.cloudhsm import TokenRegistry
from hsmkms.policy.authorize import Authorizer
from hsmkms.store.base import MetadataStore
from hsmkms.store.model import KeyRecord
from hsmkms.token import Token

Response = dict[str, Any]


class Deployment:
    """Process-wide state shared by every request and region: the store, the tokens (the
    main one, regions' own, custom key stores'), the account, the regions served, the
    clock. Nothing here is per request or per region."""

    def __init__(
        self,
        store: MetadataStore,
        hsm: Token,
        *,
        account_id: str,
        clock: Clock = system_clock,
        region_tokens: Mapping[str, Token] | None = None,
        served_regions: frozenset[str] = frozenset(),
        cache_seconds: float = METADATA_CACHE_SECONDS,
        crash: CrashHook | None = None,
    ) -> None:
        """`region_tokens`: regions whose keys live on a token of their own (as separate
        HSMs per region would); other regions use `hsm`. `served_regions`: the regions the
        edge serves (empty: any); ReplicateKey refuses others. `crash`: a test hook that
        stops key-material work at a chosen step."""
        self.store = store
        self.hsm = hsm
        self.account_id = account_id
        self.clock = clock
        self.region_tokens: dict[str, Token] = dict(region_tokens or {})
        self.served_regions = served_regions
        self.cache_seconds = cache_seconds
        self.crash = crash
        # One registry (a token and the custom key stores it serves) per token.
        self._registries: dict[int, TokenRegistry] = {}
        self._regions: dict[str, OperationContext] = {}
        self._lock = threading.Lock()

    def token_of_region(self, region: str) -> Token:
        """The token holding the keys of a region (multi-Region replicas included)."""
        return self.region_tokens.get(region, self.hsm)

    def registry(self, hsm: Token) -> TokenRegistry:
        with self._lock:
            registry = self._registries.get(id(hsm))
            if registry is None:
                registry = self._registries[id(hsm)] = TokenRegistry(hsm, self.store)
            return registry

    def region(self, region: str) -> OperationContext:
        """The context of one region, made once (the edge checks region names first)."""
        context = self._regions.get(region)
        if context is None:
            made = OperationContext(self, region)
            with self._lock:
                context = self._regions.setdefault(region, made)
        return context

    def close(self) -> None:
        """Custom key stores' tokens, region tokens, the main token, then the store."""
        for registry in list(self._registries.values()):
            registry.close_all()
        for token in {id(t): t for t in self.region_tokens.values()}.values():
            if token is not self.hsm:
                token.close()
        self.hsm.close()
        self.store.close()


class OperationContext:
    """Everything an operation may use, for one region of the deployment."""

    def __init__(self, deployment: Deployment, region: str) -> None:
        self.deployment = deployment
        self.region = region
        self.store = deployment.store
        self.clock = deployment.clock
        self.account_id = deployment.account_id
        self.hsm = deployment.token_of_region(region)
        # This region's token and custom key stores' tokens.
        self.tokens = deployment.registry(self.hsm)
        self.material = MaterialKeeper(
            self.store, self.hsm, self.clock, self.tokens, deployment.crash
        )
        self.keys = KeyResolver(
            self.store,
            account_id=self.account_id,
            region=region,
            cache_seconds=deployment.cache_seconds,
        )
        self.authorizer = Authorizer(self.keys, self.clock)

    def for_region(self, region: str) -> OperationContext:
        """The context of another region: same token and database, its own keys."""
        return self.deployment.region(region)

    @property
    def served_regions(self) -> frozenset[str]:
        return self.deployment.served_regions

    def token_of_region(self, region: str) -> Token:
        return self.deployment.token_of_region(region)

    # -- shorthands the operations use everywhere ---------------------------------------

    def token_for(self, record: KeyRecord) -> Token:
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
