"""A key as the crypto hot path needs it, cached by KeyManager."""

from __future__ import annotations

from hsmkms.keys import blob
from hsmkms.store.model import KeyRecord, KeySpec, KeyState, KeyUsage
from hsmkms.token import MaterialRef, key_uuid_bytes


class Resolved:
    """A key as the hot path needs it, with what can be computed once per key."""

    __slots__ = (
        "expires", "generation", "header", "key_uuid", "record", "ref", "rsa", "symmetric_ready",
    )  # fmt: skip

    def __init__(self, record: KeyRecord, expires: float, generation: int = -1) -> None:
        self.record = record
        self.expires = expires
        self.generation = generation  # the store's generation when it was read
        self.key_uuid = key_uuid_bytes(record.key_id)
        self.ref = MaterialRef(record.key_id, record.current_version)
        self.header = blob.header(self.key_uuid, record.current_version)
        # Enabled symmetric encryption key: the checks every Encrypt/Decrypt makes.
        self.symmetric_ready = (
            record.state is KeyState.ENABLED
            and record.key_usage is KeyUsage.ENCRYPT_DECRYPT
            and record.key_spec is KeySpec.SYMMETRIC_DEFAULT
        )
        self.rsa = record.key_spec.value.startswith("RSA_")
