"""The metadata repository interface. Every multi-row change is one transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Protocol

from hsmkms.store.model import (
    AccessKey,
    Alias,
    Grant,
    KeyRecord,
    KeyVersion,
    PendingMaterial,
    TokenBinding,
)


class Reader(Protocol):
    def get_key(self, key_id: str, region: str | None = None) -> KeyRecord | None:
        """The key's row in `region`; without one, its primary (or only) row. A
        multi-Region key has one row per region it is replicated to."""
        ...

    def list_keys(self, region: str | None, after: str | None, limit: int) -> list[KeyRecord]:
        """Keys ordered by key id, after `after`, `limit` key ids; region None lists
        every region (a multi-Region key's rows then follow each other, by region, and
        a page holds all rows of its key ids)."""
        ...

    def get_alias(self, region: str, name: str) -> Alias | None: ...

    def list_aliases(
        self, region: str, key_id: str | None, after: str | None, limit: int
    ) -> list[Alias]: ...

    def list_versions(self, key_id: str) -> list[KeyVersion]: ...

    def list_pending(self) -> list[PendingMaterial]: ...

    def get_access_key(self, access_key_id: str) -> AccessKey | None: ...

    def list_access_keys(self) -> list[AccessKey]: ...

    def principal_access_keys(self, principal_arn: str) -> list[AccessKey]:
        """One principal's access keys, oldest first (in a write transaction, the
        principal is locked until it ends: its quota of keys holds on every node)."""
        ...

    def identity_policies(self, principal_arn: str) -> dict[str, str]:
        """Policy name -> document, for one principal."""
        ...

    def policy_principals(self) -> list[str]:
        """Every principal with an identity policy, ordered."""
        ...

    def list_grants(self, key_id: str | None, region: str | None = None) -> list[Grant]:
        """A key's grants (every grant when key_id is None), oldest first; with a
        region, only the grants of the key's row in that region."""
        ...

    def list_grants_for(self, key_id: str, grantee: str, region: str | None = None) -> list[Grant]:
        """One grantee's grants on a key (every region's when region is None), oldest
        first: what authorization reads, by index, however many grants the key has."""
        ...

    def count_grants(self, key_id: str, region: str) -> int:
        """How many grants the key's row in `region` has (the grants-per-key quota)."""
        ...

    def get_document(self, kind: str, doc_id: str) -> str | None:
        """A small JSON document of an area that needs no table of its own (custom key
        stores, XKS credentials, import parameters, ...), by kind and id."""
        ...

    def list_documents(self, kind: str) -> dict[str, str]:
        """Every document of one kind: id -> body, ordered by id."""
        ...

    def token_binding(self) -> TokenBinding | None:
        """The token this database belongs to; None until one is bound."""
        ...


class Writer(Reader, Protocol):
    """Reads inside a transaction see its own writes."""

    def put_key(self, record: KeyRecord) -> None: ...

    def delete_key(self, key_id: str, region: str | None = None) -> None:
        """Remove a key with its versions, aliases and grants; with a region, only that
        region's row with its aliases and grants (versions go with the last row)."""
        ...

    def put_version(self, version: KeyVersion) -> None: ...

    def put_alias(self, alias: Alias) -> None: ...

    def delete_alias(self, region: str, name: str) -> None: ...

    def add_pending(self, pending: PendingMaterial) -> None: ...

    def remove_pending(self, key_id: str, version: int) -> None: ...

    def put_access_key(self, access_key: AccessKey) -> None:
        """Insert, or replace the key of that id (a status change)."""
        ...

    def delete_access_key(self, access_key_id: str) -> None: ...

    def record_access_key_use(self, access_key_id: str, when: datetime, region: str) -> None:
        """Stamp a key's last use. Moves no generation: it changes nobody's permissions,
        so no node need drop its caches for it."""
        ...

    def put_identity_policy(self, principal_arn: str, name: str, document: str) -> None: ...

    def delete_identity_policy(self, principal_arn: str, name: str) -> None: ...

    def put_grant(self, grant: Grant) -> None: ...

    def delete_grant(self, grant_id: str) -> None: ...

    def put_document(self, kind: str, doc_id: str, body: str) -> None: ...

    def delete_document(self, kind: str, doc_id: str) -> None: ...

    def bind_token(self, binding: TokenBinding) -> None:
        """Record the database's token; only while token_binding() is None."""
        ...


class MetadataStore(Reader, Protocol):
    def transaction(self) -> AbstractContextManager[Writer]:
        """All writes inside commit together, or none do."""
        ...

    def generation(self) -> int:
        """A counter every committed write transaction moves forward, on any node sharing
        the database; one indexed read (once per `one_generation` block). A cache filled
        after reading generation g is current while generation() still returns g."""
        ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


# The generation read first in a `one_generation` block (empty until then).
_pinned: ContextVar[list[int] | None] = ContextVar("store_generation", default=None)


@contextmanager
def one_generation() -> Iterator[None]:
    """One API request: the credential check and the key cache both ask for the
    generation at its start, microseconds apart; one database read answers both (a write
    committed between them is concurrent with the request either way). The request's
    own writes clear the caches they outdate."""
    token = _pinned.set([])
    try:
        yield
    finally:
        _pinned.reset(token)


def pinned_generation(read: Callable[[], int]) -> int:
    """`read()` the generation, or the value read before in this `one_generation` block."""
    pinned = _pinned.get()
    if pinned:
        return pinned[0]
    value = read()
    if pinned is not None:
        pinned.append(value)
    return value
