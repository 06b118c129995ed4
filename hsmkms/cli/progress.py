"""Progress bars for long work (backup, restore, audit verify, apply), on a terminal only:
piped or redirected output stays as it was. tqdm draws them on stderr."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Progress = Callable[[int, int], None]  # (done, total)


def on_terminal() -> bool:
    return sys.stderr.isatty()


def _bar(description: str, total: int, unit: str, **options: Any) -> Any:
    """A tqdm bar on stderr, sized to the terminal; 80x24 where the terminal does not
    say (on a 0x0 terminal tqdm draws nothing)."""
    from tqdm import tqdm

    size = shutil.get_terminal_size()
    return tqdm(
        total=total, desc=f"hsmkms: {description}", unit=unit, leave=False,
        ncols=size.columns, nrows=size.lines, **options,
    )  # fmt: skip


@contextmanager
def progress_bar(description: str, unit: str = "item") -> Iterator[Progress | None]:
    """A `progress(done, total)` callback drawing a bar on stderr, or None (no
    terminal: the work reports nothing)."""
    if not on_terminal():
        yield None
        return
    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = _bar(description, total, unit)
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def byte_bar(description: str, directory: Path) -> Iterator[Callable[[int], None] | None]:
    """A `read(count)` callback drawing a bar over the bytes of the record files under
    `directory` (audit verify), or None off a terminal."""
    if not on_terminal():
        yield None
        return
    total = sum(
        path.stat().st_size
        for path in directory.rglob("*.jsonl")
        if not path.name.endswith(".checkpoints.jsonl")
    )
    with _bar(description, total, "B", unit_scale=True) as bar:

        def read(count: int) -> None:
            bar.update(count)

        yield read
