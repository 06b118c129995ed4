"""`hsmkms audit query`: which records name a key, an event, a principal, since when.

A finished (rotated) record file gets a small index next to it on first query,
`<file>.index.json`: its size, time span and the keys, events and principals it
names. Later queries skip every file whose index rules it out and read the rest, with
a byte search before any JSON is parsed. The file being written is always read.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hsmkms.audit.files import segments

INDEX_SUFFIX = ".index.json"
KEY_PARAMETERS = ("KeyId", "TargetKeyId", "SourceKeyId", "DestinationKeyId")


def _key_forms(value: str) -> set[str]:
    """A key as given and, for a key ARN, its bare id (for an alias ARN, its name)."""
    forms = {value}
    if value.startswith("arn:") and ":key/" in value:
        forms.add(value.rsplit("/", 1)[-1])
    elif value.startswith("arn:") and ":alias/" in value:
        forms.add("alias/" + value.split(":alias/", 1)[1])
    return forms


def record_keys(record: dict[str, Any]) -> set[str]:
    keys: set[str] = set()
    for resource in record.get("resources") or ():
        if isinstance(resource, dict) and isinstance(resource.get("ARN"), str):
            keys |= _key_forms(resource["ARN"])
    parameters = record.get("requestParameters") or {}
    for name in KEY_PARAMETERS:
        if isinstance(parameters.get(name), str):
            keys |= _key_forms(parameters[name])
    return keys


def record_principal(record: dict[str, Any]) -> str | None:
    identity = record.get("userIdentity")
    if not isinstance(identity, dict):
        return None
    name = identity.get("arn") or identity.get("userName")
    return name if isinstance(name, str) else None


def record_time(record: dict[str, Any]) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(str(record.get("eventTime")))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def parse_since(text: str) -> datetime:
    """An ISO 8601 time (UTC unless it says otherwise)."""
    stamp = datetime.fromisoformat(text)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _event_name(name: str) -> str:
    """How event names compare: in any letter case, `kms:` (a policy's spelling) or not."""
    return name.lower().removeprefix("kms:")


@dataclass(frozen=True)
class Query:
    """`key`: any form a record may name it by; `also_keys`: other names of the same
    key (the key an alias points to, looked up by the caller); `event` in any case, or
    any of `events`."""

    key: str | None = None
    since: datetime | None = None
    event: str | None = None
    principal: str | None = None
    until: datetime | None = None  # records before this time only
    also_keys: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()

    @property
    def _events(self) -> set[str]:
        return {_event_name(name) for name in (*self.events, self.event) if name}

    @property
    def _keys(self) -> set[str]:
        forms = set(self.also_keys)
        for given in (self.key, *self.also_keys) if self.key else ():
            forms |= _key_forms(given)
        return forms

    def _needles(self) -> list[tuple[bytes, ...]]:
        """For each criterion, byte strings one of which every matching line contains
        (canonical JSON has no spaces); the event's are lower-case, for a lowered line."""
        needles: list[tuple[bytes, ...]] = []
        if self.key:
            needles.append(tuple(form.encode() for form in self._keys))
        if self.principal:
            needles.append((json.dumps(self.principal, ensure_ascii=False).encode(),))
        return needles

    def _line_may_match(self, line: bytes, needles: list[tuple[bytes, ...]]) -> bool:
        if not all(any(form in line for form in forms) for forms in needles):
            return False
        if self.event or self.events:
            lowered = line.lower()
            return any(
                b'"eventname":' + json.dumps(event, ensure_ascii=False).encode() in lowered
                for event in self._events
            )
        return True

    def matches(self, record: dict[str, Any]) -> bool:
        if self.key and not (self._keys & record_keys(record)):
            return False
        if self._events and _event_name(str(record.get("eventName"))) not in self._events:
            return False
        if self.principal and record_principal(record) != self.principal:
            return False
        if self.since or self.until:
            stamp = record_time(record)
            return (
                stamp is not None
                and (self.since is None or stamp >= self.since)
                and (self.until is None or stamp < self.until)
            )
        return True

    def may_match(self, index: dict[str, Any]) -> bool:
        if self.key and not (self._keys & set(index["keys"])):
            return False
        events = {_event_name(name) for name in index["events"]}
        if self._events and not self._events & events:
            return False
        if self.principal and self.principal not in index["principals"]:
            return False
        if self.since and index["until"]:
            return parse_since(index["until"]) >= self.since
        return True


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as handle:
        for line in handle:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    yield record


def build_index(path: Path) -> dict[str, Any]:
    keys: set[str] = set()
    events: set[str] = set()
    principals: set[str] = set()
    until = ""
    size = path.stat().st_size
    for record in _records(path):
        keys |= record_keys(record)
        events.add(str(record.get("eventName")))
        if (principal := record_principal(record)) is not None:
            principals.add(principal)
        stamp = record_time(record)
        if stamp is not None and (not until or stamp > parse_since(until)):
            until = stamp.isoformat()
    return {"size": size, "until": until, "keys": sorted(keys), "events": sorted(events),
            "principals": sorted(principals)}  # fmt: skip


def file_index(path: Path) -> dict[str, Any]:
    """The index of a finished file, made (and kept, where the directory allows) on
    first use; remade when the file's size no longer matches."""
    index_path = path.with_name(path.name + INDEX_SUFFIX)
    with contextlib.suppress(OSError, ValueError, KeyError):
        index: dict[str, Any] = json.loads(index_path.read_text())
        if index["size"] == path.stat().st_size:
            return index
    index = build_index(path)
    with contextlib.suppress(OSError):  # a read-only auditor still gets answers
        draft = index_path.with_name(f".{index_path.name}.{os.getpid()}")
        draft.write_text(json.dumps(index))
        os.chmod(draft, 0o600)  # it names keys and principals, like the records
        draft.replace(index_path)
    return index


def _chain_matches(files: list[tuple[int, Path]], query: Query) -> Iterator[dict[str, Any]]:
    needles = query._needles()
    for position, (_, path) in enumerate(files):
        finished = position < len(files) - 1
        if finished and not query.may_match(file_index(path)):
            continue
        with path.open("rb") as handle:
            for line in handle:
                if not query._line_may_match(line, needles):
                    continue
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and query.matches(record):
                        yield record


def query(directory: Path, what: Query) -> Iterator[dict[str, Any]]:
    """Matching records of every chain, merged in time order."""
    streams = [_chain_matches(files, what) for files in segments(directory).values()]
    return heapq.merge(*streams, key=lambda record: str(record.get("eventTime", "")))
