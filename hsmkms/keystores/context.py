"""What the custom key store code uses of an operation's context.

keystores/ sits below operations/ (docs/architecture.md), so it names the few things
it needs here; operations/context.py's OperationContext has them all.
"""

from __future__ import annotations

from typing import Any, Protocol

from hsmkms.keys.clock import Clock
from hsmkms.store.base import MetadataStore
from hsmkms.token import Token

Response = dict[str, Any]  # KMS response members, as operations return them


class KeyStoreContext(Protocol):
    @property
    def store(self) -> MetadataStore: ...
    @property
    def hsm(self) -> Token: ...  # the region's main token (wraps secrets, inner layers)
    @property
    def region(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def clock(self) -> Clock: ...
