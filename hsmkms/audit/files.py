"""How a trail lies on disk: chains, their files, the record hash, torn-tail repair.

A trail directory holds one chain per writing process. A chain is named
`<node>.w<slot>`: the node id (host name by default) and the lowest slot no other live
process holds (an exclusive flock on `<chain>.lock`), so two servers on one data dir
never append to the same file, and a restarted server continues its chain. A chain's
records are in `<chain>.<NNNNNN>.jsonl` files (rotation adds the next number); its
signed checkpoints in `<chain>.checkpoints.jsonl`; a torn last record moved aside at
start-up in `<file>.torn`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

SEGMENT = re.compile(r"^(?P<chain>.+)\.(?P<index>\d{6})\.jsonl$")
CHECKPOINTS = re.compile(r"^(?P<chain>.+)\.checkpoints\.jsonl$")
TORN = re.compile(r"^(?P<segment>.+\.\d{6}\.jsonl)(\.\d+)?\.torn$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def canonical(record: Mapping[str, Any]) -> str:
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record).encode()).hexdigest()


def seal(event: Mapping[str, Any], previous: str) -> tuple[str, str]:
    """One serialisation serves both the hash and the line: the canonical JSON of the
    record, with its hash appended as the last member."""
    body = canonical({**event, "previousHash": previous})
    hashed = hashlib.sha256(body.encode()).hexdigest()
    return body[:-1] + f',"hash":"{hashed}"}}\n', hashed


def sealed_line(event: Mapping[str, Any], previous: str) -> tuple[bytes, str]:
    """`seal`, as the bytes of the file. A string UTF-8 cannot carry (a lone surrogate,
    which Python's json lets in) is written with "?" in its place: the record is kept,
    and with it the rest of its batch, which one unwritable record used to fail."""
    try:
        line, hashed = seal(event, previous)
        return line.encode(), hashed
    except UnicodeEncodeError:
        repaired = json.loads(canonical(event).encode("utf-8", "replace"))
        line, hashed = seal(repaired, previous)
        return line.encode(), hashed


def genesis(chain: str) -> str:
    """The previousHash of a chain's first record: binds the records to their chain, so
    files cannot be moved from one chain to another."""
    return hashlib.sha256(f"hsmkms-audit-chain:{chain}".encode()).hexdigest()


def node_name(node_id: str | None) -> str:
    return _UNSAFE.sub("_", node_id or socket.gethostname()).strip("._") or "node"


def segment_name(chain: str, index: int) -> str:
    return f"{chain}.{index:06d}.jsonl"


def checkpoints_name(chain: str) -> str:
    return f"{chain}.checkpoints.jsonl"


def segments(directory: Path) -> dict[str, list[tuple[int, Path]]]:
    """Every chain's record files, in order."""
    found: dict[str, list[tuple[int, Path]]] = {}
    if directory.is_dir():
        for path in directory.iterdir():
            match = SEGMENT.match(path.name)
            if match:
                found.setdefault(match["chain"], []).append((int(match["index"]), path))
    return {chain: sorted(files) for chain, files in found.items()}


def chains(directory: Path) -> set[str]:
    names = set(segments(directory))
    if directory.is_dir():
        names.update(m["chain"] for p in directory.iterdir() if (m := CHECKPOINTS.match(p.name)))
    return names


TRAIL_ID = "trail.id"


def trail_id(directory: Path, create: bool, new_id: str | None = None) -> str | None:
    """The trail's random id: it names the trail's checkpoints and record in a token
    that other deployments may share. Made once, by whichever process gets there first
    (`new_id`: the id to make, else a random one)."""
    path = directory / TRAIL_ID
    if create and not path.exists():
        draft = directory / f".{TRAIL_ID}.{uuid.uuid4().hex}"
        with draft.open("x") as out:  # complete before it gets its name: never half-written
            os.chmod(draft, 0o600)
            out.write((new_id or uuid.uuid4().hex) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(draft, path)
            sync_directory(directory)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def sync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def claim_chain(directory: Path, node: str) -> tuple[str, IO[bytes]]:
    """The lowest free slot of this node; the returned lock file holds it until closed."""
    for slot in range(10_000):
        chain = f"{node}.w{slot}"
        lock = (directory / f"{chain}.lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return chain, lock
    raise OSError(f"no free audit chain slot for node {node!r}")


@dataclass(frozen=True)
class Tail:
    """Where a chain ends: the next file index to write, its last record, and any
    torn fragment moved aside on the way."""

    index: int
    sequence: int
    head: str
    torn: Path | None = None
    torn_bytes: int = 0


def _last_record(path: Path) -> dict[str, Any] | None:
    size = path.stat().st_size
    if size == 0:
        return None
    with path.open("rb") as handle:
        handle.seek(max(0, size - 1_048_576))
        last = handle.read().splitlines()[-1]
    record: dict[str, Any] = json.loads(last)
    return record


def _is_record(line: bytes) -> bool:
    with contextlib.suppress(ValueError):
        return isinstance(json.loads(line), dict)
    return False


def _cut_torn_tail(path: Path) -> tuple[Path | None, int]:
    """Move a partial last line (and an unreadable last line, e.g. zeros left by a
    power cut) into `<file>.torn` and truncate the file before it."""
    with path.open("r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - 1_048_576)
        handle.seek(start)
        tail = handle.read()
        cut = len(tail)
        if tail and not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1
        while cut > 0:
            begin = tail.rfind(b"\n", 0, cut - 1) + 1
            if _is_record(tail[begin:cut]):
                break
            cut = begin
        if cut == len(tail):
            return None, 0
        fragment = tail[cut:]
        torn = path.with_name(path.name + ".torn")
        number = 1
        while torn.exists():
            torn = path.with_name(f"{path.name}.{number}.torn")
            number += 1
        with torn.open("xb") as out:
            out.write(fragment)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(torn, 0o600)
        handle.truncate(start + cut)
        handle.flush()
        os.fsync(handle.fileno())
    sync_directory(path.parent)
    return torn, len(fragment)


def open_tail(directory: Path, chain: str) -> Tail:
    """Find where the chain ends, repairing a torn last record first."""
    files = segments(directory).get(chain, [])
    torn: Path | None = None
    torn_bytes = 0
    if files:
        torn, torn_bytes = _cut_torn_tail(files[-1][1])
    for _, path in reversed(files):
        record = _last_record(path)
        if record is not None:
            return Tail(files[-1][0], int(record.get("auditSequence", 0)), str(record["hash"]),
                        torn, torn_bytes)  # fmt: skip
    return Tail(files[-1][0] if files else 1, 0, genesis(chain), torn, torn_bytes)


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw line) of a record file."""
    with path.open("rb") as handle:
        yield from enumerate(handle, start=1)
