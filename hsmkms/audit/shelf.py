"""The latest audit checkpoints and the trail records kept in the database, for tokens
that cannot hold data objects (hsmkms.token.audit.CheckpointShelf). The values are MACed
by the token's audit key, so the database can lose or roll them back but never forge one."""

from __future__ import annotations

import base64
import json

from hsmkms.store.base import MetadataStore


def _document_kind(kind: str) -> str:
    return f"audit-{kind}"  # audit-checkpoint, audit-trail


class DatabaseShelf:
    def __init__(self, store: MetadataStore) -> None:
        self._store = store

    def put(self, kind: str, name: str, value: bytes) -> None:
        body = json.dumps(base64.b64encode(value).decode())
        with self._store.transaction() as tx:
            tx.put_document(_document_kind(kind), name, body)

    def all(self, kind: str) -> dict[str, list[bytes]]:
        return {
            name: [base64.b64decode(json.loads(body))]
            for name, body in self._store.list_documents(_document_kind(kind)).items()
        }
