"""How far long audit work (verify) has read, for a progress bar on a terminal: the CLI
sets a callback for the duration of the work, the checker reports the bytes it read.
Nothing is reported where nobody set one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_BYTES_READ: ContextVar[Callable[[int], None] | None] = ContextVar("audit_bytes_read", default=None)


def read(count: int) -> None:
    callback = _BYTES_READ.get()
    if callback is not None:
        callback(count)


@contextmanager
def reporting(callback: Callable[[int], None] | None) -> Iterator[None]:
    token = _BYTES_READ.set(callback)
    try:
        yield
    finally:
        _BYTES_READ.reset(token)
