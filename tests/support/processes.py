"""The processes of a running `hsmkms serve`."""

from __future__ import annotations

from pathlib import Path


def workers_of(pid: int) -> set[int]:
    """The worker processes uvicorn started (multiprocessing's spawn children, not its
    resource tracker)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if parent == pid and b"spawn_main" in command:
            found.add(int(stat.parent.name))
    return found
