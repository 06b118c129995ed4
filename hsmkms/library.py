"""hsmkms as a Python library: `KeyManager(store, hsm, ...)` with one method per KMS
operation, named after it in snake_case (`km.encrypt(key_id=..., plaintext=...)`).

The methods are the operation table's handlers bound to one OperationContext:
the same code the HTTP API runs, without SigV4 or policy checks (the library's
caller is the operator).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from hsmkms.keys.clock import Clock, system_clock
from hsmkms.keys.material import CrashHook
from hsmkms.keys.resolved import Resolved
from hsmkms.keys.resolver import METADATA_CACHE_SECONDS
from hsmkms.operations.context import OperationContext, Response
from hsmkms.operations.maintenance import MaintenanceReport, maintain
from hsmkms.operations.table import BY_METHOD
from hsmkms.policy.authorize import Authorizer
from hsmkms.store.base import MetadataStore
from hsmkms.token import Hsm


class KeyManager:
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
        context: OperationContext | None = None,
    ) -> None:
        self.context = context or OperationContext(
            store,
            hsm,
            account_id=account_id,
            region=region,
            clock=clock,
            crash=crash,
            cache_seconds=cache_seconds,
        )

    @property
    def store(self) -> MetadataStore:
        return self.context.store

    @property
    def hsm(self) -> Hsm:
        return self.context.hsm

    @property
    def clock(self) -> Clock:
        return self.context.clock

    @property
    def region(self) -> str:
        return self.context.region

    @property
    def account_id(self) -> str:
        return self.context.account_id

    @property
    def authorizer(self) -> Authorizer:
        return self.context.authorizer

    def for_region(self, region: str) -> KeyManager:
        """The manager of another region: same token and database, its own keys."""
        ctx = self.context.for_region(region)
        return KeyManager(ctx.store, ctx.hsm, account_id=ctx.account_id, region=region, context=ctx)

    def maintain(self) -> MaintenanceReport:
        return maintain(self.context)

    def close(self) -> None:
        self.context.hsm.close()
        self.context.store.close()

    def _changed(self) -> None:
        self.context.changed()

    def _cached(self, key_id: str) -> Resolved:
        return self.context.cached(key_id)

    def __getattr__(self, name: str) -> Callable[..., Response]:
        """`km.encrypt(...)` etc.: the operation table's handler for that method name."""
        op = BY_METHOD.get(name)
        if op is None:
            raise AttributeError(f"KeyManager has no operation {name!r}")
        if op.check is None:
            return functools.partial(op.handler, self.context)
        check, handler, context = op.check, op.handler, self.context

        def checked(**arguments: Any) -> Response:
            check(arguments)  # the same checks the HTTP API makes before anything else
            return handler(context, **arguments)

        return checked
