"""hsmkms as a Python library: `KeyManager(Deployment(store, hsm, account_id=...), region)`
with one method per KMS operation, named after it in snake_case
(`km.encrypt(key_id=..., plaintext=...)`).

The methods are the operation table's handlers bound to one OperationContext:
the same code the HTTP API runs, without SigV4 or policy checks (the library's
caller is the operator).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from hsmkms.audit.log import AuditLog
from hsmkms.audit.operator import operator_event
from hsmkms.errors import KMSError
from hsmkms.keys.clock import Clock
from hsmkms.keys.resolved import Resolved
from hsmkms.operations.context import Deployment, Response
from hsmkms.operations.maintenance import MaintenanceReport, maintain
from hsmkms.operations.table import BY_METHOD, Operation
from hsmkms.policy.authorize import Authorizer
from hsmkms.store.base import MetadataStore
from hsmkms.token import Token


class KeyManager:
    def __init__(
        self,
        deployment: Deployment,
        region: str,
        *,
        audit: AuditLog | None = None,
        audit_source: str = "hsmkms.library",
    ) -> None:
        """The operations of one region of `deployment`; with `audit`, each call is
        recorded with the operator's identity (`audit_source`: hsmkms.library or
        hsmkms.cli)."""
        self.deployment = deployment
        self.context = deployment.region(region)
        self.audit = audit
        self._audit_source = audit_source

    @property
    def store(self) -> MetadataStore:
        return self.context.store

    @property
    def hsm(self) -> Token:
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
        return KeyManager(self.deployment, region)

    def maintain(self) -> MaintenanceReport:
        report = maintain(self.context)
        if self.audit is not None:
            deleted = report.deleted + report.reconcile.orphans_destroyed
            self._record("Maintain", {}, deleted, None)
        return report

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()  # before the token: the last checkpoint is signed there
        self.deployment.close()

    def _changed(self) -> None:
        self.context.changed()

    def _cached(self, key_id: str) -> Resolved:
        return self.context.cached(key_id)

    def __getattr__(self, name: str) -> Callable[..., Response]:
        """`km.encrypt(...)` etc.: the operation table's handler for that method name."""
        op = BY_METHOD.get(name)
        if op is None:
            raise AttributeError(f"KeyManager has no operation {name!r}")
        if self.audit is None and op.check is None:
            handler, context, keys = op.handler, self.context, self.context.keys

            def bound(**arguments: Any) -> Response:
                keys.refresh()  # see writes other processes committed
                return handler(context, **arguments)

        else:
            bound = functools.partial(self._run, op)
        self.__dict__[name] = bound  # found directly from now on: no lookup per call
        return bound

    def _run(self, op: Operation, **arguments: Any) -> Response:
        """The same checks the HTTP API makes before anything else, the operation, and
        (with an audit trail) a record with the operator's identity, failed or not."""
        try:
            if op.check is not None:
                op.check(arguments)
            self.context.keys.refresh()
            result = op.handler(self.context, **arguments)
        except KMSError as exc:
            if self.audit is not None:
                self._record(op.name, arguments, _keys(arguments), exc)
            raise
        if self.audit is not None:
            self._record(op.name, arguments, _keys({**arguments, **result}), None)
        return result

    def _record(
        self, name: str, arguments: dict[str, Any], keys: list[str], failure: KMSError | None
    ) -> None:
        assert self.audit is not None
        self.audit.record(
            operator_event(
                name,
                parameters={camel(k): v for k, v in arguments.items()},
                resources=keys,
                error_code=None if failure is None else failure.code,
                error_message=None if failure is None else failure.message,
                region=self.region,
                source=self._audit_source,
            )
        )


def camel(name: str) -> str:
    """key_id -> KeyId: KMS's member names, as the audit allow-list knows them."""
    return "".join(part.capitalize() for part in name.split("_"))


def _keys(values: dict[str, Any]) -> list[str]:
    metadata = values.get("KeyMetadata")
    found = [metadata.get("Arn") if isinstance(metadata, dict) else None] + [
        values.get(k) for k in ("KeyId", "key_id", "target_key_id", "destination_key_id")
    ]
    return [k for k in found if isinstance(k, str)][:1]
