"""KeyId (any form) -> the key record, for one account and region, with a cache.

Operations and authorization both resolve keys through this: the cache is shared,
so a request resolves its key once. A cached entry is good while the store's
generation (bumped by every write on any node) is the one it was read under:
`refresh()`, called once per request, reads the generation, so no request is served
a key state, alias or policy older than the last write committed before it began.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, cast

from hsmkms.errors import InvalidCiphertextException, NotFoundException
from hsmkms.keys import ids
from hsmkms.keys.resolved import Resolved
from hsmkms.store.base import MetadataStore
from hsmkms.store.model import Grant, KeyRecord

# How long a process trusts cached key metadata that another process may change.
METADATA_CACHE_SECONDS = 1.0
# KeyIds are cached as given (a key by its id, its ARN, its aliases' names and ARNs):
# beyond this many entries the cache starts afresh.
MAX_CACHED_KEY_IDS = 10_000


class _RegionGrants:
    """The store as seen from one region: grants listed without a region are that
    region's. A multi-Region key's replicas share its key id but not its grants, and
    the authorizer lists a key's grants by key id through `KeyResolver.store`."""

    def __init__(self, store: MetadataStore, region: str) -> None:
        self._store = store
        self._region = region

    def list_grants(self, key_id: str | None, region: str | None = None) -> list[Grant]:
        return self._store.list_grants(key_id, region or self._region)

    def list_grants_for(self, key_id: str, grantee: str, region: str | None = None) -> list[Grant]:
        return self._store.list_grants_for(key_id, grantee, region or self._region)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class KeyResolver:
    def __init__(
        self,
        store: MetadataStore,
        *,
        account_id: str,
        region: str,
        cache_seconds: float = METADATA_CACHE_SECONDS,
    ) -> None:
        # Every other read and write passes straight through to the store.
        self.store = cast(MetadataStore, _RegionGrants(store, region))
        self.account_id = account_id
        self.region = region
        self.cache_seconds = cache_seconds
        # KeyId as given, and key UUID bytes -> a resolved key, until it expires.
        self._cache: dict[str | bytes, Resolved] = {}
        self.generation = -1  # the store's generation as last seen by refresh()

    def refresh(self) -> None:
        """One cheap read per request: forget everything if anything was written since."""
        generation = self.store.generation()
        if generation != self.generation:
            self.generation = generation
            self._cache.clear()

    @property
    def cached_key_ids(self) -> int:
        return len(self._cache)

    def changed(self) -> None:
        """Something was written: forget what was cached."""
        self._cache.clear()

    def key_arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{key_id}"

    def alias_arn(self, name: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:{name}"

    def _good(self, entry: Resolved) -> bool:
        return entry.generation == self.generation and entry.expires > time.monotonic()

    def resolve(self, key_id: str, account: str | None = None) -> KeyRecord:
        """Any KeyId form -> the key in this account and region, in any state. `account`:
        the caller's, where a key ID or alias name (not an ARN) is looked up, as AWS does;
        another account's is not held here."""
        ref = ids.parse_key_ref(key_id)
        if not ref.account and account not in (None, self.account_id):
            arn = f"arn:aws:kms:{self.region}:{account}:"
            if ref.alias is not None:
                raise NotFoundException(f"Alias {arn}{ref.alias} is not found.")
            raise NotFoundException(f"Key '{arn}key/{ref.key_id}' does not exist")
        if ref.region is not None and ref.region != self.region:
            raise NotFoundException(f"Invalid arn {ref.region}")  # AWS's text
        if (ref.account or self.account_id) != self.account_id:
            raise NotFoundException(f"Key '{key_id}' does not exist")
        if ref.alias is not None:
            alias = self.store.get_alias(self.region, ref.alias)
            if alias is None:
                raise NotFoundException(f"Alias {self.alias_arn(ref.alias)} is not found.")
            target = alias.key_id
        else:
            assert ref.key_id is not None
            target = ref.key_id
        record = self.store.get_key(target, self.region)
        if record is None:
            raise NotFoundException(f"Key '{self.key_arn(target)}' does not exist")
        return record

    def cached(self, key_id: str) -> Resolved:
        """The hot path's resolve: no database round trip for recently seen keys."""
        entry = self._cache.get(key_id)
        if entry is not None and self._good(entry):
            return entry
        generation = self.generation  # before the read: a write after it outdates the entry
        entry = Resolved(self.resolve(key_id), time.monotonic() + self.cache_seconds, generation)
        if len(self._cache) >= MAX_CACHED_KEY_IDS:
            self._cache.clear()
        self._cache[key_id] = entry
        self._cache[entry.key_uuid] = entry
        return entry

    def by_uuid(self, key_uuid: bytes) -> Resolved:
        """The key a ciphertext blob names; InvalidCiphertext when it is not here."""
        entry = self._cache.get(key_uuid)
        if entry is not None and self._good(entry):
            return entry
        for key_id in (str(uuid.UUID(bytes=key_uuid)), "mrk-" + key_uuid.hex()):
            record = self.store.get_key(key_id, self.region)
            if record is not None:
                return self.cached(key_id)
        raise InvalidCiphertextException()
