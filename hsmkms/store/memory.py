"""An in-memory MetadataStore for unit tests of pure logic."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

from hsmkms.store.model import (
    AccessKey,
    Alias,
    Grant,
    KeyRecord,
    KeyVersion,
    PendingMaterial,
    TokenBinding,
)


@dataclass
class _State:
    keys: dict[tuple[str, str], KeyRecord] = field(default_factory=dict)  # (key id, region)
    versions: dict[tuple[str, int], KeyVersion] = field(default_factory=dict)
    aliases: dict[tuple[str, str], Alias] = field(default_factory=dict)
    pending: dict[tuple[str, int], PendingMaterial] = field(default_factory=dict)
    access_keys: dict[str, AccessKey] = field(default_factory=dict)
    identity_policies: dict[tuple[str, str], str] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    documents: dict[tuple[str, str], str] = field(default_factory=dict)
    # (key id, grantee) -> grant ids, as the SQL stores' grants_by_grantee index
    grants_by_grantee: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    binding: TokenBinding | None = None

    def copy(self) -> _State:
        return _State(
            dict(self.keys),
            dict(self.versions),
            dict(self.aliases),
            dict(self.pending),
            dict(self.access_keys),
            dict(self.identity_policies),
            dict(self.grants),
            dict(self.documents),
            dict(self.grants_by_grantee),
            self.binding,
        )


class _View:
    def __init__(self, state: _State) -> None:
        self._s = state

    def get_key(self, key_id: str, region: str | None = None) -> KeyRecord | None:
        if region is not None:
            return self._s.keys.get((key_id, region))
        rows = sorted(
            (k for (i, _), k in self._s.keys.items() if i == key_id),
            key=lambda k: (k.is_replica, k.region),
        )
        return rows[0] if rows else None

    def list_keys(self, region: str | None, after: str | None, limit: int) -> list[KeyRecord]:
        rows = sorted(
            (k for k in self._s.keys.values() if region is None or k.region == region),
            key=lambda k: (k.key_id, k.region),
        )
        rows = [k for k in rows if after is None or k.key_id > after]
        ids = sorted({k.key_id for k in rows})[:limit]  # whole keys: all their regions
        return [k for k in rows if k.key_id in set(ids)]

    def get_alias(self, region: str, name: str) -> Alias | None:
        return self._s.aliases.get((region, name))

    def list_aliases(
        self, region: str, key_id: str | None, after: str | None, limit: int
    ) -> list[Alias]:
        rows = sorted(
            (
                a
                for a in self._s.aliases.values()
                if a.region == region and (key_id is None or a.key_id == key_id)
            ),
            key=lambda a: a.name,
        )
        return [a for a in rows if after is None or a.name > after][:limit]

    def list_versions(self, key_id: str) -> list[KeyVersion]:
        return sorted(
            (v for v in self._s.versions.values() if v.key_id == key_id), key=lambda v: v.version
        )

    def list_pending(self) -> list[PendingMaterial]:
        return list(self._s.pending.values())

    def get_access_key(self, access_key_id: str) -> AccessKey | None:
        return self._s.access_keys.get(access_key_id)

    def list_access_keys(self) -> list[AccessKey]:
        return sorted(self._s.access_keys.values(), key=lambda k: k.access_key_id)

    def principal_access_keys(self, principal_arn: str) -> list[AccessKey]:
        return sorted(
            (k for k in self._s.access_keys.values() if k.principal_arn == principal_arn),
            key=lambda k: (k.created_at, k.access_key_id),
        )

    def policy_principals(self) -> list[str]:
        return sorted({arn for arn, _ in self._s.identity_policies})

    def list_grants(self, key_id: str | None, region: str | None = None) -> list[Grant]:
        return sorted(
            (
                g
                for g in self._s.grants.values()
                if (key_id is None or g.key_id == key_id) and region in (None, g.region)
            ),
            key=lambda g: g.creation_date,  # stable: insertion order breaks ties
        )

    def list_grants_for(self, key_id: str, grantee: str, region: str | None = None) -> list[Grant]:
        found = (self._s.grants[g] for g in self._s.grants_by_grantee.get((key_id, grantee), ()))
        return sorted(
            (g for g in found if region in (None, g.region)), key=lambda g: g.creation_date
        )

    def count_grants(self, key_id: str, region: str) -> int:
        return len(self.list_grants(key_id, region))

    def identity_policies(self, principal_arn: str) -> dict[str, str]:
        return {
            name: document
            for (arn, name), document in sorted(self._s.identity_policies.items())
            if arn == principal_arn
        }

    def get_document(self, kind: str, doc_id: str) -> str | None:
        return self._s.documents.get((kind, doc_id))

    def list_documents(self, kind: str) -> dict[str, str]:
        return {d: body for (k, d), body in sorted(self._s.documents.items()) if k == kind}

    def token_binding(self) -> TokenBinding | None:
        return self._s.binding


class _MemoryWriter(_View):
    def __init__(self, state: _State) -> None:
        super().__init__(state)
        self.wrote = False  # the store bumps the generation at commit when set

    def put_key(self, record: KeyRecord) -> None:
        self.wrote = True
        self._s.keys[(record.key_id, record.region)] = record

    def delete_key(self, key_id: str, region: str | None = None) -> None:
        self.wrote = True

        def ours(other_key: str, other_region: str) -> bool:
            return other_key == key_id and region in (None, other_region)

        for row in [r for r in self._s.keys if ours(*r)]:
            del self._s.keys[row]
        for alias in [r for r, a in self._s.aliases.items() if ours(a.key_id, a.region)]:
            del self._s.aliases[alias]
        for grant in [g for g, v in self._s.grants.items() if ours(v.key_id, v.region)]:
            self.delete_grant(grant)
        if not any(i == key_id for i, _ in self._s.keys):
            for version in [r for r in self._s.versions if r[0] == key_id]:
                del self._s.versions[version]

    def put_version(self, version: KeyVersion) -> None:
        self.wrote = True
        self._s.versions[(version.key_id, version.version)] = version

    def put_alias(self, alias: Alias) -> None:
        self.wrote = True
        self._s.aliases[(alias.region, alias.name)] = alias

    def delete_alias(self, region: str, name: str) -> None:
        self.wrote = True
        self._s.aliases.pop((region, name), None)

    def add_pending(self, pending: PendingMaterial) -> None:
        self.wrote = True
        self._s.pending[(pending.key_id, pending.version)] = pending

    def remove_pending(self, key_id: str, version: int) -> None:
        self.wrote = True
        self._s.pending.pop((key_id, version), None)

    def put_identity_policy(self, principal_arn: str, name: str, document: str) -> None:
        self.wrote = True
        self._s.identity_policies[(principal_arn, name)] = document

    def put_grant(self, grant: Grant) -> None:
        self.wrote = True
        if not grant.region:  # made without one: the grant is on the key's primary row
            record = self.get_key(grant.key_id)
            grant = replace(grant, region=record.region if record else "")
        old = self._s.grants.get(grant.grant_id)
        self._s.grants[grant.grant_id] = grant  # a rewritten grant keeps its place
        where = (grant.key_id, grant.grantee_principal)
        if old is None or (old.key_id, old.grantee_principal) != where:
            self._unindex(old)
            index = self._s.grants_by_grantee
            index[where] = (*index.get(where, ()), grant.grant_id)

    def delete_grant(self, grant_id: str) -> None:
        self.wrote = True
        self._unindex(self._s.grants.pop(grant_id, None))

    def _unindex(self, grant: Grant | None) -> None:
        if grant is not None:
            where = (grant.key_id, grant.grantee_principal)
            index = self._s.grants_by_grantee
            index[where] = tuple(g for g in index.get(where, ()) if g != grant.grant_id)

    def put_access_key(self, access_key: AccessKey) -> None:
        self.wrote = True
        self._s.access_keys[access_key.access_key_id] = access_key

    def delete_access_key(self, access_key_id: str) -> None:
        self.wrote = True
        self._s.access_keys.pop(access_key_id, None)

    def record_access_key_use(self, access_key_id: str, when: datetime, region: str) -> None:
        found = self._s.access_keys.get(access_key_id)  # no generation: nobody's permissions
        if found is not None:
            self._s.access_keys[access_key_id] = replace(
                found, last_used_at=when, last_used_region=region
            )

    def delete_identity_policy(self, principal_arn: str, name: str) -> None:
        self.wrote = True
        self._s.identity_policies.pop((principal_arn, name), None)

    def put_document(self, kind: str, doc_id: str, body: str) -> None:
        self.wrote = True
        self._s.documents[(kind, doc_id)] = body

    def delete_document(self, kind: str, doc_id: str) -> None:
        self.wrote = True
        self._s.documents.pop((kind, doc_id), None)

    def bind_token(self, binding: TokenBinding) -> None:
        if self._s.binding is not None:
            raise ValueError("the store is bound to a token already")
        self.wrote = True
        self._s.binding = binding


class MemoryStore(_View):
    def __init__(self) -> None:
        super().__init__(_State())
        self._lock = threading.Lock()
        self._generation = 0

    @contextmanager
    def transaction(self) -> Iterator[_MemoryWriter]:
        with self._lock:
            draft = self._s.copy()
            writer = _MemoryWriter(draft)
            yield writer
            self._s = draft  # only reached when the block did not raise
            if writer.wrote:
                self._generation += 1

    def generation(self) -> int:
        return self._generation  # no lock: a transaction holds it, and this is one read

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
