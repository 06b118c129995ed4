"""Custom key stores as the database keeps them, whatever their type (AWS_CLOUDHSM,
EXTERNAL_KEY_STORE): the store documents, names unique per region, and the state of a
store's keys while it is disconnected. A store's state lives in the database, so every
process agrees on it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from hsmkms.errors import (
    CustomKeyStoreInvalidStateException,
    CustomKeyStoreNameInUseException,
    CustomKeyStoreNotFoundException,
)
from hsmkms.keys.availability import material_state
from hsmkms.store.base import Writer
from hsmkms.store.model import KeyRecord, KeyState
from hsmkms.token import MaterialRef

STORES = "custom-key-store"  # documents kind: custom key stores
CLOUDHSM, EXTERNAL = "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"  # CustomKeyStoreType
# Written into KeyRecord.extra while the key's store is disconnected.
STATE_BEFORE_DISCONNECT = "state_before_disconnect"


@dataclass(frozen=True)
class CustomKeyStore:
    store_id: str
    name: str
    store_type: str  # AWS_CLOUDHSM | EXTERNAL_KEY_STORE
    region: str
    creation_date: datetime
    connection_state: str = "DISCONNECTED"
    error_code: str | None = None
    cluster_id: str | None = None
    trust_anchor: str | None = None
    wrapped_password: bytes = b""  # the token's user PIN, AES-GCM under a main-token key
    xks: dict[str, Any] = field(default_factory=dict)  # EXTERNAL_KEY_STORE settings

    def to_json(self) -> str:
        data = asdict(self)
        data["creation_date"] = self.creation_date.isoformat()
        data["wrapped_password"] = base64.b64encode(self.wrapped_password).decode()
        return json.dumps(data)

    @staticmethod
    def from_json(text: str) -> CustomKeyStore:
        data = json.loads(text)
        data["creation_date"] = datetime.fromisoformat(data["creation_date"])
        data["wrapped_password"] = base64.b64decode(data["wrapped_password"])
        return CustomKeyStore(**data)


def get_store(reader: Any, store_id: str) -> CustomKeyStore | None:
    text = reader.get_document(STORES, store_id)
    return None if text is None else CustomKeyStore.from_json(text)


def existing_store(reader: Any, region: str, store_id: str) -> CustomKeyStore:
    """A store of the region; CustomKeyStoreNotFoundException for another region's too."""
    store = get_store(reader, store_id)
    if store is None or store.region != region:
        raise CustomKeyStoreNotFoundException(f"Custom key store {store_id} does not exist.")
    return store


def require_connected(reader: Any, region: str, store_id: str) -> CustomKeyStore:
    """The store CreateKey or GenerateRandom names, which must be connected."""
    store = existing_store(reader, region, store_id)
    if store.connection_state != "CONNECTED":
        raise CustomKeyStoreInvalidStateException(
            f"Custom key store {store_id} is {store.connection_state}, not CONNECTED."
        )
    return store


def regional_stores(reader: Any, region: str) -> list[CustomKeyStore]:
    """The custom key stores of one region (as a transaction or the store reads them)."""
    stores = [CustomKeyStore.from_json(t) for t in reader.list_documents(STORES).values()]
    return [s for s in stores if s.region == region]


def check_name_free(reader: Any, region: str, name: str, store_id: str | None = None) -> None:
    """CustomKeyStoreNameInUseException unless no other store of the region has the name."""
    if any(s.name == name and s.store_id != store_id for s in regional_stores(reader, region)):
        raise CustomKeyStoreNameInUseException(f"Custom key store name {name} is already in use.")


def put_store(tx: Writer, store: CustomKeyStore) -> None:
    tx.put_document(STORES, store.store_id, store.to_json())


def set_keys_available(
    tx: Writer, store_id: str, available: bool, in_token: set[MaterialRef] | None = None
) -> list[str]:
    """Keys of a store turn Unavailable while it is disconnected (AWS's rule) and get
    their state back when it connects; returns the key ids changed. `in_token`: what
    the store's token holds, when connecting to it: a key whose material it lacks
    stays Unavailable (hsmkms.keys.availability), e.g. after a restore elsewhere."""
    changed: list[str] = []
    after: str | None = None
    while page := tx.list_keys(None, after, 500):
        after = page[-1].key_id
        for record in page:
            if record.custom_key_store_id != store_id:
                continue
            updated = _availability(record, available)
            if available and in_token is not None:
                versions = tx.list_versions(record.key_id)
                present = {
                    v.version for v in versions if MaterialRef(v.key_id, v.version) in in_token
                }
                updated, marked = material_state(updated, versions, present)
                for version in marked:
                    tx.put_version(version)
            if updated is not record:
                tx.put_key(updated)
                changed.append(record.key_id)
    return changed


def _availability(record: KeyRecord, available: bool) -> KeyRecord:
    if not available and record.state in (KeyState.ENABLED, KeyState.DISABLED):
        extra = {**record.extra, STATE_BEFORE_DISCONNECT: record.state.value}
        return replace(record, state=KeyState.UNAVAILABLE, extra=extra)
    if available and STATE_BEFORE_DISCONNECT in record.extra:
        extra = dict(record.extra)
        previous = KeyState(extra.pop(STATE_BEFORE_DISCONNECT))
        state = previous if record.state is KeyState.UNAVAILABLE else record.state
        return replace(record, state=state, extra=extra)
    return record
