"""The metadata repository interface. Every multi-row change is one transaction."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from hsmkms.keys.model import Alias, KeyRecord, KeyVersion, PendingMaterial


class Reader(Protocol):
    def get_key(self, key_id: str) -> KeyRecord | None: ...

    def list_keys(self, region: str | None, after: str | None, limit: int) -> list[KeyRecord]:
        """Keys ordered by key id, after `after`; region None lists every region."""
        ...

    def get_alias(self, region: str, name: str) -> Alias | None: ...

    def list_aliases(
        self, region: str, key_id: str | None, after: str | None, limit: int
    ) -> list[Alias]: ...

    def list_versions(self, key_id: str) -> list[KeyVersion]: ...

    def list_pending(self) -> list[PendingMaterial]: ...


class Writer(Reader, Protocol):
    """Reads inside a transaction see its own writes."""

    def put_key(self, record: KeyRecord) -> None: ...

    def delete_key(self, key_id: str) -> None:
        """Remove a key with its versions and aliases."""
        ...

    def put_version(self, version: KeyVersion) -> None: ...

    def put_alias(self, alias: Alias) -> None: ...

    def delete_alias(self, region: str, name: str) -> None: ...

    def add_pending(self, pending: PendingMaterial) -> None: ...

    def remove_pending(self, key_id: str, version: int) -> None: ...


class MetadataStore(Reader, Protocol):
    def transaction(self) -> AbstractContextManager[Writer]:
        """All writes inside commit together, or none do."""
        ...

    def ping(self) -> None: ...

    def close(self) -> None: ...
