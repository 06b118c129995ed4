"""`hsmkms audit verify`: every chain of a trail, its files in order, its checkpoints.

What is found and where: an altered record (its hash), a removed, inserted or moved
record (the chain breaks there), a missing file (the sequence jumps), a chain rewritten
from some record on (it no longer meets a signed checkpoint), a cut-off tail (the chain
ends before its last checkpoint), a removed, cut or forged checkpoints file (gaps,
MACs, and the latest checkpoint kept in the token), a chain the token was never told of
(forged). Around the data dir's trail (hsmkms.audit.trails): a trail the token knows
that is missing, a trail.id that changed, a retired or another scope's trail put back;
trails an operator retired are listed, and their archives checked like the live one.
What is not a problem: records after the last checkpoint that a crash lost or tore
(noted, never covered by a checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsmkms.audit.checkpoint import Anchor
from hsmkms.audit.files import TRAIL_ID, trail_id
from hsmkms.audit.trail_check import TrailCheck, check_directory
from hsmkms.audit.trails import DEFAULT_SCOPE, Registry, Snapshot, TrailRecord, trail_problems

ARCHIVE = "retired"  # audit new-trail moves a retired trail's files to retired/<trail>/


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    problem: str = ""  # the first problem
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    chains: dict[str, dict[str, int]] = field(default_factory=dict)
    trail: str | None = None  # the data dir's trail id
    scope: str = DEFAULT_SCOPE
    retired: tuple[dict[str, str], ...] = ()  # trails retired by an operator
    # Per chain: its own problems and the time of its latest token-signed checkpoint.
    chain_status: dict[str, dict[str, Any]] = field(default_factory=dict)

    def verdict(self) -> dict[str, Any]:
        """What `hsmkms audit verify` prints, valid or not."""
        return {
            "Valid": self.ok,
            "Records": self.records,
            "Scope": self.scope,
            "Trail": self.trail,
            "Chains": self.chains,
            "RetiredTrails": list(self.retired),
            "Problems": list(self.problems),
            "Notes": list(self.notes),
            "ChainStatus": self.chain_status,
        }


def verify(directory: Path, anchor: Anchor | None = None) -> Verification:
    """Check the trail in the directory and every trail of the anchor's scope the token
    knows. Without an anchor (the token) neither checkpoint MACs nor the token's trails
    can be checked, and the result says so in its notes."""
    trail = trail_id(directory, create=False)
    if anchor is None:
        found = check_directory(directory, trail, None, {}, registered=False)
        return _result(found, [], [], [], trail, DEFAULT_SCOPE)
    scope, snapshot = anchor.scope, Snapshot.take(directory, anchor)
    trail, registry = snapshot.disk, snapshot.registry
    found = _against_token(directory, trail, anchor, registry)
    problems, notes = trail_problems(snapshot, directory, anchor)
    retired = []
    for record in registry.retired(scope):
        entry, archive_problems = _retired(directory, record, registry, anchor)
        retired.append(entry)
        problems += archive_problems
        where = entry["Records"].split(":", 1)[0]  # "archived in ..." or "no longer on disk"
        notes.append(f"trail {record.trail} was {record.describe()}; its records are {where}")
    return _result(found, problems, notes, retired, trail, scope)


def _result(
    found: TrailCheck,
    problems: list[str],
    notes: list[str],
    retired: list[dict[str, str]],
    trail: str | None,
    scope: str,
) -> Verification:
    every = tuple(found.all_problems() + problems)
    return Verification(
        ok=not every,
        records=found.records(),
        problem=every[0] if every else "",
        problems=every,
        notes=tuple(found.all_notes() + notes),
        chains={
            c.name: {
                "records": c.records,
                "checkpoints": len(c.checkpoints),
                "covered": c.latest.sequence if c.latest else 0,
            }
            for c in found.chains
        },
        trail=trail,
        scope=scope,
        retired=tuple(retired),
        chain_status={
            c.name: {
                "problems": list(c.problems),
                "latestCheckpoint": c.latest.time if c.latest else None,
            }
            for c in found.chains
        },
    )


def _retired(
    directory: Path, record: TrailRecord, registry: Registry, anchor: Anchor
) -> tuple[dict[str, str], list[str]]:
    """A retired trail as the verdict shows it; its archive, where kept, checked whole."""
    entry = {
        "Trail": record.trail,
        "Retired": record.retired,
        "RetiredBy": record.retired_by,
        "Reason": record.retired_reason,
        "ReplacedBy": record.replaced_by,
    }
    archive = directory / ARCHIVE / record.trail
    if not archive.is_dir():
        entry["Records"] = (
            "no longer on disk: the token's last checkpoints covered "
            f"{registry.coverage(record.trail, anchor)}"
        )
        return entry, []
    where = f"{ARCHIVE}/{record.trail}"
    kept = trail_id(archive, create=False)
    found = check_directory(
        archive, kept, anchor, registry.checkpoints.get(record.trail, {}), registered=True
    )
    problems = [f"{where}/{p}" for p in found.all_problems()]
    if kept != record.trail:
        problems.insert(0, f"{where}/{TRAIL_ID} says {kept}, not {record.trail}")
    entry["Records"] = f"archived in {where}: {found.records()} records verified" + (
        f", {len(problems)} problems" if problems else ""
    )
    return entry, problems


def verify_archive(directory: Path, anchor: Anchor) -> Verification:
    """`hsmkms audit verify --archive DIR`: one trail kept outside the data dir (retired,
    or carried by a backup from another deployment) against the checkpoints the token
    holds for it; the token's other trails are not looked for there."""
    registry = Snapshot.take(directory, anchor).registry
    trail = trail_id(directory, create=False)
    found = _against_token(directory, trail, anchor, registry)
    problems: list[str] = []
    notes: list[str] = []
    record = registry.records.get(trail or "")
    if trail is not None and record is None and trail not in registry.checkpoints:
        problems.append(f"trail {trail} is unknown to this token: nothing vouches for it")
    elif record is not None:
        notes.append(f"trail {trail}: {record.describe()}")
    return _result(found, problems, notes, [], trail, anchor.scope)


def _against_token(
    directory: Path, trail: str | None, anchor: Anchor, registry: Registry
) -> TrailCheck:
    """The directory's trail against what the token holds for it."""
    return check_directory(
        directory,
        trail,
        anchor,
        registry.checkpoints.get(trail or "", {}),
        registered=trail in registry.records,
    )
