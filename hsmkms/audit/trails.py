"""Which trails the token knows: what stops a trail being deleted, swapped or replaced.

Checkpoints protect the records of a trail whose files are there; they say nothing
when the whole trail is gone. So each trail has a record in the token (or the database,
for a token without data objects), MACed by the audit key like a checkpoint: its
scope (HSMKMS_AUDIT_SCOPE, for deployments sharing one token), when it was made, and
whether it is active or was retired by an operator (when, by whom, why, replaced by
which trail). A trail is registered before its first record is written.

No process starts a new trail over one the token knows: a data dir without trail.id,
with another trail.id, with a retired or another scope's trail, is refused until an
operator runs `hsmkms audit new-trail --reason ...` (hsmkms.audit.retire). `verify`
reports every trail of its scope: the data dir's, the missing ones, the retired ones.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hsmkms.audit.checkpoint import Anchor, Checkpoint, latest_in_token, mac_matches
from hsmkms.audit.files import TRAIL_ID, canonical, chains, trail_id
from hsmkms.errors import AuditTrailConflictException

DEFAULT_SCOPE = "default"
ACTIVE, RETIRED = "active", "retired"
NEW_TRAIL = "hsmkms audit new-trail --reason ..."


@dataclass(frozen=True)
class TrailRecord:
    trail: str
    scope: str
    state: str  # ACTIVE or RETIRED: a retired trail never becomes active again
    created: str
    replaces: tuple[str, ...] = ()  # the trails `audit new-trail` retired for this one
    reason: str = ""  # why it was started (audit new-trail)
    retired: str = ""  # when, by whom and why it was retired, and its successor
    retired_by: str = ""
    retired_reason: str = ""
    replaced_by: str = ""
    key_id: str = ""
    mac: str = ""

    def body(self) -> bytes:
        members = {
            "kind": "trail",
            "trail": self.trail,
            "scope": self.scope,
            "state": self.state,
            "created": self.created,
            "replaces": list(self.replaces),
            "reason": self.reason,
            "retired": self.retired,
            "retiredBy": self.retired_by,
            "retiredReason": self.retired_reason,
            "replacedBy": self.replaced_by,
            "keyId": self.key_id,
        }
        return canonical(members).encode()

    def line(self) -> bytes:
        return self.body()[:-1] + f',"mac":"{self.mac}"}}'.encode()

    @classmethod
    def parse(cls, raw: bytes) -> TrailRecord:
        """Raises ValueError for anything that is not a trail record."""
        data: Any = json.loads(raw)
        if not isinstance(data, dict) or data.get("kind") != "trail":
            raise ValueError("not a trail record")
        try:
            return cls(
                str(data["trail"]),
                str(data["scope"]),
                str(data["state"]),
                str(data["created"]),
                tuple(str(t) for t in data["replaces"]),
                str(data["reason"]),
                str(data["retired"]),
                str(data["retiredBy"]),
                str(data["retiredReason"]),
                str(data["replacedBy"]),
                str(data["keyId"]),
                str(data["mac"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or bad member: {exc}") from exc

    def authentic(self, anchor: Anchor) -> bool:
        return mac_matches(anchor, self.key_id, self.body(), self.mac)

    def describe(self) -> str:
        if self.state == RETIRED:
            return (
                f"retired by operator on {self.retired[:10]} ({self.retired_by}): "
                f"{self.retired_reason}"
            )
        return f"active since {self.created[:10]}"


def now() -> str:
    return datetime.now(UTC).isoformat()


def register(anchor: Anchor, record: TrailRecord) -> TrailRecord:
    """Sign the record with the audit key and keep it in the token (or database)."""
    unsigned = dataclasses.replace(record, key_id=anchor.key_id(), mac="")
    signed = dataclasses.replace(unsigned, mac=anchor.sign(unsigned.body()).hex())
    anchor.store_trail(record.trail, signed.line())
    return signed


@dataclass
class Registry:
    """What the token (and database) holds about trails, read in one scan. Only the
    records that matter here have their MAC checked: the scope's, and the data dir's
    trail's; the others are just counted by the scope they claim."""

    records: dict[str, TrailRecord] = field(default_factory=dict)  # authentic only
    forged: set[str] = field(default_factory=set)  # a stored record that is not authentic
    elsewhere: dict[str, str] = field(default_factory=dict)  # other scopes' trails (unchecked)
    checkpoints: dict[str, dict[str, list[bytes]]] = field(default_factory=dict)
    legacy: set[str] = field(default_factory=set)  # checkpoints, no record (older releases)

    @classmethod
    def load(cls, anchor: Anchor, disk: str | None = None) -> Registry:
        registry, scope = cls(), anchor.scope
        checkpoints, trails = anchor.load_everything()
        for trail, values in trails.items():
            found = [r for r in map(_parse, values) if r is not None and r.trail == trail]
            if trail != disk and found and all(r.scope != scope for r in found):
                registry.elsewhere[trail] = found[0].scope
                continue
            genuine = [r for r in found if r.authentic(anchor)]
            if genuine:  # a retirement wins: two values exist for a moment while one replaces
                genuine.sort(key=lambda r: r.state == RETIRED)
                registry.records[trail] = genuine[-1]
            else:
                registry.forged.add(trail)
        for name, values in checkpoints.items():
            trail, _, chain = name.partition("/")
            registry.checkpoints.setdefault(trail, {})[chain] = values
        for trail, by_chain in registry.checkpoints.items():
            relevant = trail not in trails and (scope == DEFAULT_SCOPE or trail == disk)
            signed = (_signed_checkpoint(anchor, trail, v) for v in by_chain.values())
            if relevant and any(signed):  # lazily: the MACs are checked only when relevant
                registry.legacy.add(trail)
        return registry

    def known(self, scope: str) -> list[str]:
        """The scope's trails that are not retired: each must be in the data dir. A trail
        of an older release (checkpoints, no record) counts in the default scope."""
        found = [t for t, r in self.records.items() if r.scope == scope and r.state == ACTIVE]
        if scope == DEFAULT_SCOPE:
            found += sorted(self.legacy)
        return sorted(found)

    def retired(self, scope: str) -> list[TrailRecord]:
        found = [r for r in self.records.values() if r.scope == scope and r.state == RETIRED]
        return sorted(found, key=lambda r: r.retired)

    def coverage(self, trail: str, anchor: Anchor) -> str:
        """What the token's checkpoints say of a trail's records, for a reader."""
        parts = []
        for chain, values in sorted(self.checkpoints.get(trail, {}).items()):
            latest = latest_in_token(anchor, trail, chain, values)
            if latest is not None:
                parts.append(
                    f"chain {chain} up to record {latest.sequence} (checkpoint {latest.number})"
                )
        return "; ".join(parts) or "no checkpoint yet"


def _parse(raw: bytes) -> TrailRecord | None:
    try:
        return TrailRecord.parse(raw)
    except ValueError:
        return None


def _signed_checkpoint(anchor: Anchor, trail: str, values: list[bytes]) -> bool:
    return any(
        point.trail == trail and point.authentic(anchor)
        for point in (_checkpoint(v) for v in values)
        if point is not None
    )


def _checkpoint(raw: bytes) -> Checkpoint | None:
    try:
        return Checkpoint.parse(raw)
    except ValueError:
        return None


# -- starting to write: the one check every AuditLog with a token makes ----------------


@dataclass(frozen=True)
class Snapshot:
    """The directory's trail id and chains, and the token's registry, read in an order
    that holds while other processes start: trail.id is made before the trail's record,
    and a chain's files after it, so whatever is seen on disk here is in the registry."""

    disk: str | None
    names: frozenset[str]
    registry: Registry

    @classmethod
    def take(cls, directory: Path, anchor: Anchor) -> Snapshot:
        while True:
            disk, names = trail_id(directory, create=False), frozenset(chains(directory))
            registry = Registry.load(anchor, disk)
            if trail_id(directory, create=False) == disk:
                return cls(disk, names, registry)


def conflict(snapshot: Snapshot, scope: str, directory: Path) -> str | None:
    """Why no process may write this directory's trail, or None."""
    registry, disk = snapshot.registry, snapshot.disk
    known = registry.known(scope)
    if disk is None:
        names = sorted(snapshot.names)
        if names:
            return (
                f"{directory} holds audit records ({', '.join(names)}) but no {TRAIL_ID}: "
                f"they cannot be checked (`hsmkms audit verify`); `{NEW_TRAIL}` archives them"
            )
        if known:
            return (
                f"the token knows audit trail {', '.join(known)} (scope {scope!r}), which "
                f"{directory} does not hold: deleted or moved? Restore it, or start "
                f"a new trail on the record: `{NEW_TRAIL}`"
            )
        return None
    record = registry.records.get(disk)
    if record is not None and record.scope != scope:
        return (
            f"audit trail {disk} in {directory} belongs to scope {record.scope!r}, not "
            f"{scope!r}: another deployment's trail?"
        )
    if record is not None and record.state == RETIRED:
        return (
            f"audit trail {disk} was retired ({record.describe()}) but is back in "
            f"{directory}: a retired trail is never written again (`{NEW_TRAIL}`)"
        )
    if record is not None or disk in registry.legacy:
        return None  # the token knows this trail (the legacy one gets its record now)
    others = [t for t in known if t != disk]
    if others:
        return (
            f"{TRAIL_ID} says {disk}, but the token's audit trail for scope {scope!r} "
            f"is {', '.join(others)}: the trail in {directory} was swapped or replaced; "
            f"restore it, or start a new trail on the record: `{NEW_TRAIL}`"
        )
    if snapshot.names:  # never sign a first checkpoint over records nobody vouched for
        return (
            f"audit trail {disk} in {directory} holds records the token never saw (no "
            f"record of the trail, no checkpoint): they cannot be trusted; `{NEW_TRAIL}`"
        )
    return None


def trail_problems(
    snapshot: Snapshot, directory: Path, anchor: Anchor
) -> tuple[list[str], list[str]]:
    """(problems, notes) about which trail the data dir holds, for `verify`."""
    problems, notes, scope = [], [], anchor.scope
    registry, disk = snapshot.registry, snapshot.disk
    if disk is not None:
        problem = conflict(snapshot, scope, directory)
        if problem is not None:
            problems.append(problem)
        if disk in registry.legacy:
            notes.append(
                f"trail {disk}: not registered in the token yet (written by an "
                "earlier release); the next start registers it"
            )
        elif disk not in registry.records and snapshot.names:
            problems.append(
                f"trail {disk} is unknown to the token: its records were not "
                "written with this token's audit key"
            )
    for missing in registry.known(scope):
        if missing == disk:
            continue
        record = registry.records.get(missing)
        since = f", {record.describe()}" if record else ""
        problems.append(
            f"trail {missing} is missing from the data dir: the token knows it "
            f"(scope {scope!r}{since}; {registry.coverage(missing, anchor)}); "
            "deleted or replaced?"
        )
    elsewhere = sorted(set(registry.elsewhere.values()))
    if elsewhere:  # a changed HSMKMS_AUDIT_SCOPE would hide a trail: say what else is there
        shown = ", ".join(elsewhere[:5]) + (", ..." if len(elsewhere) > 5 else "")
        notes.append(f"the token also keeps trails of {len(elsewhere)} other scope(s): {shown}")
    for forged in sorted(registry.forged):
        problems.append(f"the stored record of trail {forged} is not signed by the audit key")
    return problems, notes


def open_trail(directory: Path, anchor: Anchor) -> tuple[str, Registry]:
    """The id of the trail this directory holds, made and registered if there is none
    and the token knows none of the anchor's scope (and what the token holds, for the
    chain's checkpoints); raises AuditTrailConflictException otherwise."""
    scope, snapshot = anchor.scope, Snapshot.take(directory, anchor)
    registry, disk = snapshot.registry, snapshot.disk
    problem = conflict(snapshot, scope, directory)
    if problem is not None:
        raise AuditTrailConflictException(problem)
    if disk is None:
        disk = trail_id(directory, create=True) or ""
    if disk not in registry.records:  # new, or made before it could be registered
        register(anchor, TrailRecord(disk, scope, ACTIVE, now()))
    return disk, registry
