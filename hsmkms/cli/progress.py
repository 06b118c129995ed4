"""Progress bars for long work (backup, restore, audit verify, apply), on a terminal only:
piped or redirected output stays as it was. tqdm draws them on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Progress = Callable[[int, int], None]  # (done, total)


def on_terminal() -> bool:
    return sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, unit: str = "item") -> Iterator[Progress | None]:
    """A `progress(done, total)` callback drawing a bar on stderr, or None (no
    terminal: the work reports nothing)."""
    if not on_terminal():
        yield None
        return
    from tqdm import tqdm

    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=f"hsmkms: {description}", unit=unit, leave=False)
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
