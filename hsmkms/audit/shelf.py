"""The latest audit checkpoints kept in the database, for tokens that cannot hold data
objects (hsmkms.token.audit.CheckpointShelf). The values are MACed by the token's audit
key, so the database can lose or roll them back but never forge one."""

from __future__ import annotations

import base64
import json

from hsmkms.store.base import MetadataStore

KIND = "audit-checkpoint"


class DatabaseShelf:
    def __init__(self, store: MetadataStore) -> None:
        self._store = store

    def put(self, chain: str, value: bytes) -> None:
        with self._store.transaction() as tx:
            tx.put_document(KIND, chain, json.dumps(base64.b64encode(value).decode()))

    def all(self) -> dict[str, list[bytes]]:
        return {
            chain: [base64.b64decode(json.loads(body))]
            for chain, body in self._store.list_documents(KIND).items()
        }
