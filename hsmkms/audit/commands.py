"""`hsmkms audit verify` and `hsmkms audit query`: what the CLI prints and returns."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hsmkms.audit.checkpoint import Anchor
from hsmkms.audit.query import Query, parse_since, query
from hsmkms.audit.verify import verify, verify_archive


def verify_command(directory: Path, anchor: Anchor | None, *, archive: bool = False) -> int:
    """The verdict as JSON on stdout, valid or not (problems, notes: crashes, uncovered
    records, retired trails); exit 1 when anything is wrong, with one line on stderr
    naming the first problem. `archive`: one trail kept outside the data dir."""
    if archive and anchor is not None:
        result = verify_archive(directory, anchor)
    else:
        result = verify(directory, anchor)
    print(json.dumps(result.verdict(), indent=4))
    if result.ok:
        return 0
    more = len(result.problems) - 1
    also = f" (and {more} more: see the verdict on stdout)" if more else ""
    print(f"hsmkms: audit log is not intact: {result.problem}{also}", file=sys.stderr)
    return 1


def query_command(
    directory: Path,
    key: str | None,
    since: str | None,
    event: str | None,
    principal: str | None,
    also_keys: frozenset[str] = frozenset(),
) -> int:
    """Matching records as JSON lines, oldest first (`also_keys`: see Query)."""
    try:
        start = parse_since(since) if since else None
    except ValueError:
        print(f"hsmkms: --since takes an ISO 8601 time, not {since!r}", file=sys.stderr)
        return 2
    for record in query(directory, Query(key, start, event, principal, also_keys=also_keys)):
        sys.stdout.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    return 0
