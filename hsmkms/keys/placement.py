"""Which token holds a key's material: the main token, or a custom key store's.

The custom key stores' own code (hsmkms/keystores/) sits above keys/; what keys/ needs
of it is named here as a Protocol, which keystores/cloudhsm.py's TokenRegistry fills.
"""

from __future__ import annotations

from typing import Protocol

from hsmkms.store.model import KeyRecord, Origin
from hsmkms.token import Token


def in_main_token(record: KeyRecord) -> bool:
    """Whether the main token holds the key's material: every key but an AWS_CLOUDHSM
    store's (an external key store's keys keep their inner layer there)."""
    return record.custom_key_store_id is None or record.origin is Origin.EXTERNAL_KEY_STORE


class KeyTokens(Protocol):
    """The main token, and the token holding any key's material."""

    @property
    def main(self) -> Token: ...

    def for_record(self, record: KeyRecord) -> Token: ...
