"""Signed checkpoints: what makes a trail impossible to trim or rewrite unnoticed.

The hash chain alone shows edits inside the file, but whoever can write the file can
also cut its tail or rewrite the whole chain. So, every N records or T seconds, on
rotation and on close, a checkpoint `(chain, number, sequence, head hash, time)` is
MACed by the audit key inside the token and kept outside the record files: appended to
`<chain>.checkpoints.jsonl` (the history) and stored in the token (the latest one).
A record covered by a checkpoint can then not be changed, removed or cut off without
`verify` saying so; records after the last checkpoint can only be lost by a crash.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from hsmkms.audit.files import canonical, checkpoints_name, sync_directory


class Anchor(Protocol):
    """The token side: an HMAC key that never leaves it, a place per chain for the
    latest checkpoint and one per trail for its record (hsmkms.audit.trails)
    (hsmkms.token.audit.TokenAuditAnchor)."""

    @property
    def scope(self) -> str:
        """Which of the trails the token knows are this deployment's (hsmkms.audit.trails)."""
        ...

    def key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...

    def check(self, key_id: str, message: bytes, mac: bytes) -> bool: ...

    def holds(self, key_id: str) -> bool: ...

    def store(self, chain: str, value: bytes) -> None: ...

    def load_all(self) -> dict[str, list[bytes]]: ...

    def store_trail(self, trail: str, value: bytes) -> None: ...

    def load_everything(self) -> tuple[dict[str, list[bytes]], dict[str, list[bytes]]]:
        """(every chain's checkpoint values, every trail's record values), in one scan."""
        ...


def mac_matches(anchor: Anchor, key_id: str, body: bytes, mac: str) -> bool:
    """Whether `mac` (hex) is the audit key's MAC of `body`: checkpoints and trail
    records alike."""
    try:
        raw = bytes.fromhex(mac)
    except ValueError:
        return False
    return anchor.check(key_id, body, raw)


@dataclass(frozen=True)
class Checkpoint:
    trail: str  # the trail's id (files.trail_id): a checkpoint cannot move between trails
    chain: str
    number: int  # 1, 2, 3, ... per chain: a removed line leaves a gap
    sequence: int  # the last record covered
    head: str  # that record's hash
    file: str  # the file that record is in
    time: str
    key_id: str = ""
    mac: str = ""

    def body(self) -> bytes:
        members = {"trail": self.trail, "chain": self.chain, "number": self.number,
                   "sequence": self.sequence, "head": self.head, "file": self.file,
                   "time": self.time, "keyId": self.key_id}  # fmt: skip
        return canonical(members).encode()

    def line(self) -> bytes:
        return self.body()[:-1] + f',"mac":"{self.mac}"}}\n'.encode()

    @classmethod
    def parse(cls, raw: bytes) -> Checkpoint:
        """Raises ValueError for anything that is not a checkpoint line."""
        data: Any = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        try:
            return cls(
                str(data["trail"]), str(data["chain"]), int(data["number"]), int(data["sequence"]),
                str(data["head"]), str(data["file"]), str(data["time"]),
                str(data["keyId"]), str(data["mac"]),
            )  # fmt: skip
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or bad member: {exc}") from exc

    def claims(self) -> Checkpoint:
        """What it says about the chain, without who signed it (a checkpoint handed over
        to another key by a backup says the same)."""
        return dataclasses.replace(self, key_id="", mac="")

    def authentic(self, anchor: Anchor) -> bool:
        return mac_matches(anchor, self.key_id, self.body(), self.mac)


def read_history(directory: Path, chain: str) -> list[tuple[int, bytes]]:
    """(line number, raw line) of a chain's checkpoints file; [] when there is none."""
    path = directory / checkpoints_name(chain)
    if not path.exists():
        return []
    with path.open("rb") as handle:
        return [(n, line) for n, line in enumerate(handle, start=1) if line.strip()]


def in_token(anchor: Anchor, trail: str) -> dict[str, list[bytes]]:
    """This trail's checkpoints in the token, by chain (the token may serve others)."""
    prefix = f"{trail}/"
    return {name[len(prefix) :]: values for name, values in anchor.load_all().items()
            if name.startswith(prefix)}  # fmt: skip


def latest_in_token(
    anchor: Anchor, trail: str, chain: str, values: list[bytes] | None = None
) -> Checkpoint | None:
    """The newest authentic checkpoint the token holds for the chain (two may exist
    for a moment while one replaces the other)."""
    if values is None:
        values = in_token(anchor, trail).get(chain, [])
    best: Checkpoint | None = None
    for value in values:
        try:
            found = Checkpoint.parse(value)
        except ValueError:
            continue
        ours = (found.trail, found.chain) == (trail, chain)
        if ours and (best is None or found.number > best.number) and found.authentic(anchor):
            best = found
    return best


class CheckpointWriter:
    """Signs and keeps the checkpoints of one chain; used by the writer thread only."""

    def __init__(
        self,
        directory: Path,
        trail: str,
        chain: str,
        anchor: Anchor,
        token_values: list[bytes] | None = None,  # the chain's, when already read
    ) -> None:
        self.directory = directory
        self.trail = trail
        self.chain = chain
        self.anchor = anchor
        self.number = 0
        self.sequence = 0
        for _, raw in read_history(directory, chain)[-1:]:
            try:
                last = Checkpoint.parse(raw)
                self.number, self.sequence = last.number, last.sequence
            except ValueError:
                pass  # verify reports it; numbering continues from the token's
        token = latest_in_token(anchor, trail, chain, token_values)
        if token is not None and token.number > self.number:
            self.number, self.sequence = token.number, token.sequence

    def write(self, sequence: int, head: str, file: str) -> Checkpoint:
        """Only for records already fsync'd: a checkpoint never covers a record a crash
        could still lose."""
        unsigned = Checkpoint(self.trail, self.chain, self.number + 1, sequence, head, file,
                              datetime.now(UTC).isoformat(), self.anchor.key_id())  # fmt: skip
        signed = dataclasses.replace(unsigned, mac=self.anchor.sign(unsigned.body()).hex())
        path = self.directory / checkpoints_name(self.chain)
        new = not path.exists()
        with path.open("ab") as out:
            out.write(signed.line())
            out.flush()
            os.fsync(out.fileno())
        if new:
            os.chmod(path, 0o600)
            sync_directory(self.directory)
        self.anchor.store(
            f"{self.trail}/{self.chain}", signed.line()
        )  # after the file: the file is never behind
        self.number, self.sequence = signed.number, sequence
        return signed
