"""What a process keeps of the store's rows between requests (credentials with their
secrets unwrapped, XKS policies), trusted only while the store's generation — moved by
every committed write, on any node — is the one an entry was read under, and for
`seconds` at most (a row changed behind hsmkms's back: plain SQL, a database restore).

One mechanism for every such cache: a credential disabled, removed or rotated, or a
policy changed, through hsmkms on any node is seen by the next request on every node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from hsmkms.store.base import MetadataStore

V = TypeVar("V")
LIMIT = 10_000  # entries exist for ids that were asked for; the bound is a backstop


@dataclass(frozen=True)
class _Entry(Generic[V]):
    value: V
    generation: int  # the store's generation read before the row
    expires: float


class GenerationCache(Generic[V]):
    def __init__(self, store: MetadataStore, seconds: float, limit: int = LIMIT) -> None:
        self._store = store
        self._seconds = seconds
        self._limit = limit
        self._entries: dict[str, _Entry[V]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[V | None], V]) -> V:
        """The value for key: the cached one while it is current, else `load(previous)`
        (previous: what was cached before, or None, so a loader can keep what did not
        change — an unchanged wrapped secret need not be unwrapped by the token again)."""
        generation = self._store.generation()  # before the row: a later write outdates it
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry.generation == generation and entry.expires > now:
            return entry.value
        value = load(None if entry is None else entry.value)
        with self._lock:
            if len(self._entries) >= self._limit:
                self._entries.clear()
            self._entries[key] = _Entry(value, generation, now + self._seconds)
        return value

    def forget(self, key: str) -> None:
        """This process changed the row: its next read goes to the store."""
        with self._lock:
            self._entries.pop(key, None)
