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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsmkms.audit.checkpoint import Anchor, Checkpoint, latest_in_token, read_history
from hsmkms.audit.files import (
    TORN,
    TRAIL_ID,
    chains,
    checkpoints_name,
    digest,
    genesis,
    read_lines,
    segments,
    trail_id,
)
from hsmkms.audit.trails import DEFAULT_SCOPE, Registry, Snapshot, TrailRecord, trail_problems

LEGACY_FILE = "hsmkms-audit.jsonl"
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
        }


@dataclass
class _Chain:
    name: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)  # by sequence
    latest: Checkpoint | None = None
    records: int = 0


@dataclass
class _Trail:
    """One trail directory's chains, and what was found about the directory itself."""

    chains: list[_Chain] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def all_problems(self) -> list[str]:
        return self.problems + [p for c in self.chains for p in c.problems]

    def all_notes(self) -> list[str]:
        return [n for c in self.chains for n in c.notes] + self.notes

    def records(self) -> int:
        return sum(c.records for c in self.chains)


def verify(directory: Path, anchor: Anchor | None = None) -> Verification:
    """Check the trail in the directory and every trail of the anchor's scope the token
    knows. Without an anchor (the token) neither checkpoint MACs nor the token's trails
    can be checked, and the result says so in its notes."""
    trail = trail_id(directory, create=False)
    if anchor is None:
        found = _check_directory(directory, trail, None, {}, registered=False)
        return _result(found, [], [], [], trail, DEFAULT_SCOPE)
    scope, snapshot = anchor.scope, Snapshot.take(directory, anchor)
    trail, registry = snapshot.disk, snapshot.registry
    found = _check_directory(
        directory,
        trail,
        anchor,
        registry.checkpoints.get(trail or "", {}),
        registered=trail in registry.records,
    )
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
    found: _Trail,
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
    found = _check_directory(
        archive, kept, anchor, registry.checkpoints.get(record.trail, {}), registered=True
    )
    problems = [f"{where}/{p}" for p in found.all_problems()]
    if kept != record.trail:
        problems.insert(0, f"{where}/{TRAIL_ID} says {kept}, not {record.trail}")
    entry["Records"] = f"archived in {where}: {found.records()} records verified" + (
        f", {len(problems)} problems" if problems else ""
    )
    return entry, problems


def _check_directory(
    directory: Path,
    trail: str | None,
    anchor: Anchor | None,
    held: dict[str, list[bytes]],
    registered: bool,
) -> _Trail:
    """Every chain of one trail directory against its checkpoints (and the token's
    latest ones, `held`). `registered`: the token knows the trail, so each of its chains
    was announced to the token before its first record (a chain without is forged)."""
    files = segments(directory)
    names = chains(directory)
    found = _Trail()
    if trail is None and names:
        missing = f"{TRAIL_ID} is missing: the trail's checkpoints cannot be found"
        found.problems.append(missing)
        return found
    for name in sorted(names | set(held)):
        chain = _Chain(name)
        _read_checkpoints(directory, trail or "", chain, anchor, held.get(name, []))
        _walk(chain, files.get(name, []), strict=registered)
        found.chains.append(chain)
    legacy = _legacy(directory / LEGACY_FILE)
    if legacy is not None:
        found.chains.append(legacy)
    if directory.is_dir():
        found.notes += [
            f"{p.name}: a torn record moved aside at start-up (a crash while writing)"
            for p in sorted(directory.iterdir())
            if TORN.match(p.name)
        ]
    return found


def _read_checkpoints(
    directory: Path, trail: str, chain: _Chain, anchor: Anchor | None, token_values: list[bytes]
) -> None:
    name = checkpoints_name(chain.name)
    history = read_history(directory, chain.name)
    if history and anchor is None:
        chain.notes.append(f"{name}: checkpoint MACs not checked (no token)")
    previous: Checkpoint | None = None
    for line, raw in history:
        where = f"{name} line {line}"
        try:
            point = Checkpoint.parse(raw)
        except ValueError:
            chain.problems.append(f"{where}: not a checkpoint")
            return
        if (point.trail, point.chain) != (trail, chain.name) or (
            anchor is not None and not point.authentic(anchor)
        ):
            chain.problems.append(
                f"{where}: checkpoint {point.number} is not signed by the "
                "audit key for this chain (forged or altered)"
            )
            return
        expected = previous.number + 1 if previous else 1
        if point.number != expected:
            chain.problems.append(
                f"{where}: checkpoint {point.number} where {expected} was due "
                f"(checkpoints {expected}-{point.number - 1} were removed)"
            )
            return
        if previous is not None and point.sequence < previous.sequence:
            chain.problems.append(f"{where}: checkpoint {point.number} goes back in the chain")
            return
        chain.checkpoints[point.sequence] = point
        previous = point
    chain.latest = previous
    if anchor is None:
        return
    held = latest_in_token(anchor, trail, chain.name, token_values)
    if held is None:
        if token_values:
            chain.problems.append(f"{chain.name}: the token's checkpoint is not authentic")
        elif previous is not None:
            chain.problems.append(f"{name}: the token holds no checkpoint for this chain")
        return
    if previous is None:
        chain.problems.append(
            f"{name} is missing or empty: the token holds checkpoint "
            f"{held.number} (records up to {held.sequence})"
        )
    elif held.number > previous.number:
        chain.problems.append(
            f"{name} ends at checkpoint {previous.number}, but the token "
            f"holds checkpoint {held.number}: the file was cut"
        )
    elif held.number == previous.number and held != previous:
        chain.problems.append(f"{name} line {history[-1][0]}: differs from the token's copy")
    elif held.number < previous.number - 1:
        chain.notes.append(
            f"{chain.name}: the token's checkpoint ({held.number}) is older than "
            f"the file's ({previous.number}); was the token restored?"
        )
    if chain.latest is None or held.number > chain.latest.number:
        chain.checkpoints[held.sequence] = held
        chain.latest = held


def _walk(chain: _Chain, files: list[tuple[int, Path]], strict: bool) -> None:
    if chain.problems:
        return
    covered = chain.latest.sequence if chain.latest else 0
    previous, sequence, where = genesis(chain.name), 0, ""
    last_file = files[-1][1] if files else None
    for _, path in files:
        for line, raw in read_lines(path):
            where = f"{path.name} record {line}"
            record = _parse(raw)
            if record is None:
                if path == last_file and not raw.endswith(b"\n") and sequence >= covered:
                    chain.notes.append(
                        f"{where}: torn (a crash while writing), after the last checkpoint"
                    )
                    break
                chain.problems.append(f"{where}: not valid JSON")
                return
            stated = record.pop("hash", None)
            number = record.get("auditSequence")
            if record.get("previousHash") != previous:
                chain.problems.append(
                    f"{where}: the chain is broken (previousHash does not "
                    f"match the record before){_gap(sequence, number)}"
                )
                return
            if stated != digest(record):
                chain.problems.append(
                    f"{where}: its hash does not match its content (the record was altered)"
                )
                return
            if number != sequence + 1:
                chain.problems.append(f"{where}: sequence {number} where {sequence + 1} was due")
                return
            point = chain.checkpoints.get(number)
            if point is not None and point.head != stated:
                chain.problems.append(
                    f"{where} (sequence {number}) does not match signed "
                    f"checkpoint {point.number}: the chain was rewritten"
                )
                return
            previous, sequence = str(stated), number
    chain.records = sequence
    if sequence < covered:
        end = f"{where} (sequence {sequence})" if where else "no records"
        latest = chain.latest.number if chain.latest else 0
        chain.problems.append(
            f"{chain.name}: the chain ends at {end}, but checkpoint {latest} "
            f"covers records up to {covered}: records {sequence + 1}-{covered} "
            "were removed (the tail was cut)"
        )
    elif chain.latest is None and sequence and strict:
        chain.problems.append(
            f"{chain.name}: unknown to the token (no checkpoint, while every chain of this "
            "trail gets one before its first record): forged, or written without the "
            "token's audit key"
        )
    elif chain.latest is None and sequence:
        chain.notes.append(
            f"{chain.name}: no checkpoints (written without the token's audit "
            "key): a cut-off tail or a rewritten chain cannot be detected"
        )
    elif chain.latest is not None and sequence > covered:
        chain.notes.append(
            f"{chain.name}: {sequence - covered} records after the last "
            "checkpoint are not covered yet"
        )


def _legacy(path: Path) -> _Chain | None:
    """The single file of releases before per-process chains: a hash chain from zeros,
    without sequence numbers or checkpoints. Checked so that an upgrade loses nothing."""
    if not path.exists():
        return None
    chain, previous = _Chain(path.name), "0" * 64
    chain.notes.append(f"{path.name}: written before checkpoints; a cut-off tail cannot be seen")
    for line, raw in read_lines(path):
        record = _parse(raw)
        stated = record.pop("hash", None) if record is not None else None
        if record is None or record.get("previousHash") != previous or stated != digest(record):
            chain.problems.append(f"{path.name} record {line}: bad JSON, a broken chain or "
                                  "an altered record")  # fmt: skip
            return chain
        previous, chain.records = str(stated), chain.records + 1
    return chain


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _gap(sequence: int, number: object) -> str:
    if not isinstance(number, int) or number == sequence + 1:
        return ""
    if number > sequence + 1:
        return f"; records {sequence + 1}-{number - 1} are missing"
    return f"; record {number} is out of place after {sequence}"
