"""`hsmkms audit verify` and `hsmkms audit query`: what the CLI prints and returns."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hsmkms.audit.checkpoint import Anchor
from hsmkms.audit.query import Query, parse_since, query
from hsmkms.audit.verify import verify


def verify_command(directory: Path, anchor: Anchor | None) -> int:
    """Exit 0 with a summary (and notes: crashes, uncovered records) on stdout, or 1
    naming every problem on stderr."""
    result = verify(directory, anchor)
    if not result.ok:
        for problem in result.problems:
            print(f"hsmkms: audit log is not intact: {problem}", file=sys.stderr)
        return 1
    summary = {"Valid": True, "Records": result.records, "Chains": result.chains,
               "Notes": list(result.notes)}  # fmt: skip
    print(json.dumps(summary, indent=4))
    return 0


def query_command(
    directory: Path,
    key: str | None,
    since: str | None,
    event: str | None,
    principal: str | None,
) -> int:
    """Matching records as JSON lines, oldest first."""
    try:
        start = parse_since(since) if since else None
    except ValueError:
        print(f"hsmkms: --since takes an ISO 8601 time, not {since!r}", file=sys.stderr)
        return 2
    for record in query(directory, Query(key, start, event, principal)):
        sys.stdout.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    return 0
