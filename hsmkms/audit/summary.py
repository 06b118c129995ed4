"""What `hsmkms status` and `hsmkms key list --long` read off the audit trail: where each
chain ends and its last checkpoint, when each key was last used, and the latest
successful record of an event (a backup, a security domain's creation). Records are
read through the query module (its file indexes skip what cannot match)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from hsmkms.audit.checkpoint import Checkpoint, read_history
from hsmkms.audit.files import chains, read_lines, segments
from hsmkms.audit.query import Query, query, record_keys

# The calls that use a key's material: what "last used" means.
KEY_USES = frozenset({
    "Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "Sign", "Verify",
    "GenerateMac", "VerifyMac", "DeriveSharedSecret",
})  # fmt: skip


def _last_line(path: Path) -> dict[str, Any] | None:
    last = None
    for _, line in read_lines(path):
        last = line
    with contextlib.suppress(ValueError, TypeError):
        record = json.loads(last) if last else None
        return record if isinstance(record, dict) else None
    return None


def chain_ends(directory: Path) -> list[dict[str, Any]]:
    """Each chain: its files, last record (sequence, time) and last checkpoint."""
    files = segments(directory)
    ends = []
    for chain in sorted(chains(directory)):
        own = files.get(chain, [])
        last = _last_line(own[-1][1]) if own else None
        history = read_history(directory, chain)
        checkpoint = None
        if history:
            with contextlib.suppress(ValueError):
                checkpoint = Checkpoint.parse(history[-1][1])
        ends.append({
            "Chain": chain,
            "Files": len(own),
            "LastRecord": None if last is None else {
                "Sequence": last.get("auditSequence"), "Time": last.get("eventTime"),
            },
            "LastCheckpoint": None if checkpoint is None else {
                "Number": checkpoint.number, "Sequence": checkpoint.sequence,
                "Time": checkpoint.time,
            },
        })  # fmt: skip
    return ends


def last_uses(directory: Path) -> dict[str, str]:
    """Key id -> the time of its latest successful use (KEY_USES) in the trail."""
    uses: dict[str, str] = {}
    for record in query(directory, Query(events=KEY_USES)):
        if record.get("errorCode"):
            continue
        when = str(record.get("eventTime", ""))
        for key in record_keys(record):
            if not key.startswith(("arn:", "alias/")) and when > uses.get(key, ""):
                uses[key] = when
    return uses


def latest(directory: Path, *events: str) -> dict[str, Any] | None:
    """The latest successful record of any of `events`, or None."""
    found = None
    for record in query(directory, Query(events=frozenset(events))):
        if not record.get("errorCode"):
            found = record
    return found
