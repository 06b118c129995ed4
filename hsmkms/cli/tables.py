"""Plain-text tables and sections for people reading a terminal (`status`,
`key list --long`); scripts ask for `--json` and get the same facts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any


def when(value: Any) -> str:
    """A time as a person reads it: to the minute, UTC; "-" for none."""
    if value is None or value == "":
        return "-"
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return stamp.strftime("%Y-%m-%d %H:%M") + ("" if stamp.utcoffset() is None else " UTC")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as wide as their widest cell, two spaces apart, headers first."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]
    return "\n".join(lines)


def section(title: str, pairs: Sequence[tuple[str, str]]) -> str:
    """`title` and its name: value lines, names aligned."""
    width = max((len(name) for name, _ in pairs), default=0)
    return "\n".join([title, *(f"  {name.ljust(width)}  {value}" for name, value in pairs)])
