"""One trail directory checked record by record: each chain's files in order, its
checkpoints (history file and the token's latest), and what the hash chain shows.
`hsmkms audit verify` (verify.py) runs this over the data dir's trail and each archive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hsmkms.audit import progress
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
)

LEGACY_FILE = "hsmkms-audit.jsonl"


@dataclass
class ChainCheck:
    name: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)  # by sequence
    latest: Checkpoint | None = None
    records: int = 0


@dataclass
class TrailCheck:
    """One trail directory's chains, and what was found about the directory itself."""

    chains: list[ChainCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def all_problems(self) -> list[str]:
        return self.problems + [p for c in self.chains for p in c.problems]

    def all_notes(self) -> list[str]:
        return [n for c in self.chains for n in c.notes] + self.notes

    def records(self) -> int:
        return sum(c.records for c in self.chains)


def _known_until(anchor: Anchor | None, trail: str, held: dict[str, list[bytes]]) -> str | None:
    """The time of the newest checkpoint of this trail the token holds (None: none)."""
    times = [
        point.time for chain, values in held.items()
        if anchor is not None and (point := latest_in_token(anchor, trail, chain, values))
    ]  # fmt: skip
    return max(times, key=datetime.fromisoformat, default=None)


def check_directory(
    directory: Path,
    trail: str | None,
    anchor: Anchor | None,
    held: dict[str, list[bytes]],
    registered: bool,
) -> TrailCheck:
    """Every chain of one trail directory against its checkpoints (and the token's
    latest ones, `held`). `registered`: the token knows the trail, so each of its chains
    was announced to the token before its first record (a chain without is forged)."""
    files = segments(directory)
    names = chains(directory)
    found = TrailCheck()
    if trail is None and names:
        missing = f"{TRAIL_ID} is missing: the trail's checkpoints cannot be found"
        found.problems.append(missing)
        return found
    known_until = _known_until(anchor, trail or "", held)
    for name in sorted(names | set(held)):
        chain = ChainCheck(name)
        _read_checkpoints(directory, trail or "", chain, anchor, held.get(name, []), known_until)
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
    directory: Path,
    trail: str,
    chain: ChainCheck,
    anchor: Anchor | None,
    token_values: list[bytes],
    known_until: str | None = None,
) -> None:
    name = checkpoints_name(chain.name)
    history = read_history(directory, chain.name)
    if history and anchor is None:
        chain.notes.append(f"{name}: checkpoint MACs not checked (no token)")
    previous: Checkpoint | None = None
    first: Checkpoint | None = None
    checked = 0  # the newest checkpoint number whose MAC the token could check
    unchecked: list[Checkpoint] = []  # signed by a key the token does not hold
    for line, raw in history:
        where = f"{name} line {line}"
        try:
            point = Checkpoint.parse(raw)
        except ValueError:
            chain.problems.append(f"{where}: not a checkpoint")
            return
        signed = anchor is None or point.authentic(anchor)
        if (point.trail, point.chain) != (trail, chain.name) or (
            not signed and anchor is not None and anchor.holds(point.key_id)
        ):
            chain.problems.append(
                f"{where}: checkpoint {point.number} is not signed by the "
                "audit key for this chain (forged or altered)"
            )
            return
        if signed:
            checked = point.number
        else:
            unchecked.append(point)
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
        previous, first = point, first or point
    chain.latest = previous
    if anchor is None:
        return
    held = latest_in_token(anchor, trail, chain.name, token_values)
    if held is not None:
        checked = max(checked, held.number)
    _vouch(chain, name, unchecked, checked)
    if held is None:
        if token_values:
            chain.problems.append(f"{chain.name}: the token's checkpoint is not authentic")
        elif first is not None and _later(first.time, known_until):
            chain.notes.append(
                f"{chain.name}: begun after the newest checkpoint this token holds for the "
                f"trail ({known_until}; was the token restored from a backup?): its "
                "checkpoints are authentic, but a cut-off tail cannot be detected"
            )
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
    elif held.number == previous.number and held.claims() != previous.claims():
        chain.problems.append(f"{name} line {history[-1][0]}: differs from the token's copy")
    elif held.number < previous.number - 1:
        chain.notes.append(
            f"{chain.name}: the token's checkpoint ({held.number}) is older than "
            f"the file's ({previous.number}); was the token restored?"
        )
    if chain.latest is None or held.number > chain.latest.number:
        chain.checkpoints[held.sequence] = held
        chain.latest = held


def _vouch(chain: ChainCheck, name: str, unchecked: list[Checkpoint], checked: int) -> None:
    """Checkpoints signed by a key this token does not hold (one that stayed on the
    token a backup came from) count only below one it can check: that one pins the
    chain's head, and the hash chain every record before it."""
    if not unchecked:
        return
    last = unchecked[-1]
    if last.number > checked:
        chain.problems.append(
            f"{name}: checkpoint {last.number} is signed by audit key {last.key_id}, which "
            "this token does not hold, and no later checkpoint signed by a key it holds "
            "covers it"
        )
        return
    keys = ", ".join(sorted({p.key_id for p in unchecked}))
    chain.notes.append(
        f"{name}: checkpoints {unchecked[0].number}-{last.number} are signed by audit key "
        f"{keys}, which this token does not hold; checkpoint {checked}, signed by a key "
        "it holds, covers them"
    )


def _later(time: str, than: str | None) -> bool:
    try:
        return than is not None and datetime.fromisoformat(time) > datetime.fromisoformat(than)
    except ValueError:
        return False


def _walk(chain: ChainCheck, files: list[tuple[int, Path]], strict: bool) -> None:
    if chain.problems:
        return
    covered = chain.latest.sequence if chain.latest else 0
    previous, sequence, where = genesis(chain.name), 0, ""
    registered = chain.checkpoints.get(0)  # made before the chain's first record
    if registered is not None and registered.head != previous:
        chain.problems.append(
            f"{chain.name}: checkpoint {registered.number} (before the first record) does "
            "not name the chain's start: the checkpoints were altered"
        )
        return
    last_file = files[-1][1] if files else None
    for _, path in files:
        for line, raw in read_lines(path):
            progress.read(len(raw))
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


def _legacy(path: Path) -> ChainCheck | None:
    """The single file of releases before per-process chains: a hash chain from zeros,
    without sequence numbers or checkpoints. Checked so that an upgrade loses nothing."""
    if not path.exists():
        return None
    chain, previous = ChainCheck(path.name), "0" * 64
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
