"""`hsmkms audit new-trail --reason ...`: the one way to start a trail over one the token
knows (hsmkms.audit.trails), on the record.

While no process writes the directory (every chain's lock is free), in this order, so a
crash anywhere leaves a state a rerun completes: the scope's trails are marked retired
in the token (when, by whom, why, replaced by which trail); the directory's files move
to `retired/<trail>/`, where `verify` still checks them; the new trail.id is written
and the new trail registered, naming the trails it replaces and why. The command's own
record (StartAuditTrail) is then the first record of the new trail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hsmkms.audit.checkpoint import Anchor
from hsmkms.audit.files import sync_directory, trail_id
from hsmkms.audit.trails import ACTIVE, RETIRED, Snapshot, TrailRecord, now, register
from hsmkms.audit.verify import ARCHIVE
from hsmkms.errors import KMSInvalidStateException, ValidationException

MAX_REASON = 1024


@dataclass(frozen=True)
class NewTrail:
    trail: str
    scope: str
    retired: tuple[dict[str, str], ...]  # each retired trail and where its records are

    def as_dict(self) -> dict[str, Any]:
        return {"Trail": self.trail, "Scope": self.scope, "RetiredTrails": list(self.retired)}


@contextlib.contextmanager
def _every_chain_held(directory: Path) -> Iterator[None]:
    """Hold every chain's lock: refused while any process writes the trail."""
    held: list[IO[bytes]] = []
    try:
        for lock in sorted(directory.glob("*.lock")):
            handle: IO[bytes] = lock.open("ab")
            held.append(handle)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise KMSInvalidStateException(
                    f"a process is writing the trail (chain {lock.stem}): stop the servers "
                    f"and commands using {directory} first"
                ) from None
        yield
    finally:
        for handle in held:
            handle.close()


def _archive(directory: Path, trail: str | None) -> str | None:
    """Move the directory's trail files (not the locks) to retired/<trail>/."""
    moving = [p for p in directory.iterdir() if p.name != ARCHIVE and p.suffix != ".lock"]
    if not moving:
        return None
    name = trail or f"unnamed-{uuid.uuid4().hex[:8]}"
    target = directory / ARCHIVE / name
    while target.exists():
        target = target.with_name(f"{name}-{uuid.uuid4().hex[:8]}")
    target.mkdir(mode=0o700, parents=True)
    for path in moving:
        path.rename(target / path.name)
    sync_directory(target)
    sync_directory(directory)
    return f"{ARCHIVE}/{target.name}"


def start_new_trail(directory: Path, anchor: Anchor, reason: str, operator: str) -> NewTrail:
    """Retire the scope's trails and the directory's, archive its files, start a new one."""
    scope, reason = anchor.scope, reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise ValidationException(f"A new trail needs a reason of 1 to {MAX_REASON} characters.")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _every_chain_held(directory):
        snapshot = Snapshot.take(directory, anchor)
        disk, registry = snapshot.disk, snapshot.registry
        retiring = registry.known(scope)
        record = registry.records.get(disk or "")
        if disk is not None and disk not in retiring and record is None:
            retiring.append(disk)  # a trail the token never knew: retired on the record too
        new, when = uuid.uuid4().hex, now()
        for trail in retiring:
            old = registry.records.get(trail) or TrailRecord(trail, scope, ACTIVE, "")
            register(
                anchor,
                dataclasses.replace(
                    old,
                    state=RETIRED,
                    retired=when,
                    retired_by=operator,
                    retired_reason=reason,
                    replaced_by=new,
                ),
            )
        archived = _archive(directory, disk)
        trail_id(directory, create=True, new_id=new)
        os.chmod(directory, 0o700)
        register(anchor, TrailRecord(new, scope, ACTIVE, when, tuple(retiring), reason))
    return NewTrail(
        new,
        scope,
        tuple(
            {
                "Trail": t,
                "Records": f"archived in {archived}"
                if archived and t == disk
                else "no longer on disk",
            }
            for t in retiring
        ),
    )
