"""`hsmkms backup create` / `restore`: one sealed file with every metadata row and every
key-material version wrapped under the security domain key.

File: {"hsmkms_backup": 1, "payload": "<JSON text>", "seal": {...}}. The payload is kept
as the exact text the seal's MAC covers (no re-serialisation on restore). It holds the
metadata snapshot (snapshot.py), the wrapped material (token/backup.py), the audit
trail's keys and checkpoints (trail.py) and what could not be carried, each entry naming
its key and why. External key store keys are carried like any other: their inner layer
is material in this token. Restore checks everything (format, seal, target empty,
token's domain) before it writes, writes the token objects, then the rows in one
transaction, with keys whose material did not come along Unavailable (left_out.py); if
that fails the objects it made are destroyed again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hsmkms.backup.left_out import mark_left_out
from hsmkms.backup.snapshot import Snapshot, check_target, read_snapshot, write_snapshot
from hsmkms.backup.trail import TrailPart, carry_trail, restore_checkpoints, restore_keys
from hsmkms.errors import (
    AlreadyExistsException,
    KMSInvalidStateException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.keys.placement import in_main_token
from hsmkms.store.model import VersionState
from hsmkms.store.rows import key_record
from hsmkms.token import (
    CREDENTIALS_KEY,
    MaterialRef,
    Seal,
    Token,
    WrappedMaterial,
    discard,
    domain_info,
    holds,
    unwrap_material,
    wrap_material,
)
from hsmkms.token import seal_payload as seal
from hsmkms.token import verify_seal as verify

Progress = Callable[[int, int], None]  # (done, total), for a progress bar

FORMAT = 1
# Internal keys whose ciphertexts live in the metadata (stored secrets and PINs).
CARRIED_INTERNAL = (CREDENTIALS_KEY,)


@dataclass
class BackupReport:
    file: str
    domain: str
    keys: int
    versions_carried: int
    # Material that could not be carried: {"key_id" (KMS keys), "label", "reason"}.
    not_carried: list[dict[str, str]] = field(default_factory=list)
    # Material of AWS_CLOUDHSM key stores: in their cluster's token, backed up by that
    # HSM's own means; only the metadata is carried. Listed, not refused.
    held_elsewhere: list[dict[str, str]] = field(default_factory=list)
    # The audit trail's keys and checkpoints (trail.py).
    audit: dict[str, Any] = field(default_factory=dict)
    # Restore: the keys that came back Unavailable (their material did not come along).
    unavailable: list[dict[str, str]] = field(default_factory=list)


def _wrap_versions(
    hsm: Token,
    snapshot: Snapshot,
    missing: list[dict[str, str]],
    elsewhere: list[dict[str, str]],
    progress: Progress | None = None,
) -> list[WrappedMaterial]:
    keys = {row["key_id"]: key_record(row) for row in snapshot.rows("keys")}
    carried = []
    versions = snapshot.rows("key_versions")
    for done, version in enumerate(versions):
        if progress is not None:
            progress(done, len(versions))
        key = keys[version["key_id"]]
        ref = MaterialRef(version["key_id"], int(version["version"]))
        named = {"key_id": key.key_id, "label": ref.label}
        if not in_main_token(key):
            elsewhere.append({
                **named, "custom_key_store": key.custom_key_store_id or "",
                "reason": "its material is in the custom key store's own token (AWS_CLOUDHSM); "
                "after a restore the key is Unavailable until the store is connected to a "
                "token that holds it",
            })  # fmt: skip
            continue
        if version["state"] == VersionState.MISSING.value:
            missing.append({**named, "reason": "the token had lost it already"})
            continue
        if not hsm.facts(ref):
            raise KMSInvalidStateException(
                f"{ref.label} was destroyed while the backup ran (its key was deleted); "
                "run the backup again."
            )
        try:
            carried.append(wrap_material(hsm, ref))
        except UnsupportedOperationException as exc:
            missing.append({**named, "reason": exc.message})
    return carried


def create_backup(
    hsm: Token,
    database_url: str,
    out: Path,
    *,
    allow_partial: bool = False,
    progress: Progress | None = None,
) -> BackupReport:
    """`progress(done, total)` as key-material versions are wrapped (a bar, on a terminal)."""
    info = domain_info(hsm)
    if info is None:
        raise KMSInvalidStateException(
            "The token does not belong to a security domain: run `hsmkms domain create` first."
        )
    snapshot = read_snapshot(database_url)
    missing: list[dict[str, str]] = []
    elsewhere: list[dict[str, str]] = []
    materials = _wrap_versions(hsm, snapshot, missing, elsewhere, progress)
    internal = []
    for ref in CARRIED_INTERNAL:
        if not hsm.facts(ref):
            continue
        try:
            internal.append(wrap_material(hsm, ref))
        except UnsupportedOperationException as exc:
            missing.append({"label": ref.label, "reason": exc.message})
    trail, trail_left_out = carry_trail(hsm, database_url)
    missing.extend(trail_left_out)
    if missing and not allow_partial:
        shown = "; ".join(f"{m.get('key_id', m['label'])}: {m['reason']}" for m in missing[:3])
        raise UnsupportedOperationException(
            f"{len(missing)} key material object(s) cannot be carried by a backup ({shown}"
            f"{'; ...' if len(missing) > 3 else ''}); pass --allow-partial to back up without them."
        )
    payload = json.dumps({
        "format": FORMAT, "created": datetime.now(UTC).isoformat(), "domain": info.domain_id,
        "metadata": snapshot.to_json(), "materials": [m.to_json() for m in materials],
        "internal": [m.to_json() for m in internal], "not_carried": missing,
        "held_elsewhere": elsewhere, "audit": trail.to_json(),
    }, sort_keys=True)  # fmt: skip
    sealed = seal(hsm, payload.encode())
    document = {"hsmkms_backup": FORMAT, "payload": payload, "seal": sealed.to_json()}
    _write_private(out, json.dumps(document))
    return BackupReport(
        str(out), info.domain_id, len(snapshot.rows("keys")), len(materials), missing, elsewhere,
        trail.summary(),
    )  # fmt: skip


def _write_private(path: Path, text: str) -> None:
    """Atomically, readable by the owner only (a backup names every key and principal)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


@dataclass(frozen=True)
class _Backup:
    snapshot: Snapshot
    materials: list[WrappedMaterial]
    internal: list[WrappedMaterial]
    not_carried: list[dict[str, str]]
    held_elsewhere: list[dict[str, str]]
    trail: TrailPart


def _read(path: Path, hsm: Token) -> _Backup:
    """The checked contents; ValidationException for anything damaged or truncated."""
    try:
        document = json.loads(path.read_text())
        if document.get("hsmkms_backup") != FORMAT:
            raise ValueError("not an hsmkms backup")
        payload = str(document["payload"])
        found = Seal.from_json(document["seal"])
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ValidationException(
            f"{path.name} is not an hsmkms backup file, or it is truncated or damaged."
        ) from exc
    verify(hsm, payload.encode(), found)  # before anything else is trusted
    try:
        data = json.loads(payload)
        return _Backup(
            Snapshot.from_json(data["metadata"]),
            [WrappedMaterial.from_json(m) for m in data["materials"]],
            [WrappedMaterial.from_json(m) for m in data["internal"]],
            list(data["not_carried"]),
            list(data.get("held_elsewhere", [])),
            TrailPart.from_json(data["audit"]) if "audit" in data else TrailPart(),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValidationException(f"{path.name}: the sealed contents do not parse.") from exc


def restore_backup(
    hsm: Token, database_url: str, source: Path, progress: Progress | None = None
) -> BackupReport:
    """`progress(done, total)` as objects are unwrapped into the token."""
    backup = _read(source, hsm)
    check_target(database_url, backup.snapshot)
    everything = [*backup.materials, *backup.internal]
    present = [m.label for m in everything if holds(hsm, m)]
    if present:
        raise AlreadyExistsException(
            f"The token already holds {len(present)} object(s) of this backup "
            f"(e.g. {present[0]}): restore needs a token without them."
        )
    carried = {m.label for m in backup.materials}
    unavailable = mark_left_out(backup.snapshot, carried)  # before anything is written
    made: list[WrappedMaterial] = []
    try:
        for material in everything:
            if progress is not None:
                progress(len(made), len(everything))
            unwrap_material(hsm, material)
            made.append(material)
        made.extend(restore_keys(hsm, backup.trail))
        write_snapshot(database_url, backup.snapshot)
    except BaseException:
        for material in made:
            discard(hsm, material)
        raise
    restore_checkpoints(hsm, database_url, backup.trail)
    info = domain_info(hsm)
    return BackupReport(
        str(source), info.domain_id if info else "", len(backup.snapshot.rows("keys")),
        len(backup.materials), backup.not_carried, backup.held_elsewhere,
        backup.trail.summary(), unavailable,
    )  # fmt: skip
