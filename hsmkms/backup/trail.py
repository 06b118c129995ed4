"""The audit trail's part of a backup: what lets the old trail verify on the token the
backup is restored onto (docs/token-wrapping.md, "The audit trail across a restore").

Carried: every audit key the token can wrap under the domain key, and the latest
checkpoint of each chain the token (or, for a token without data objects, the
database) holds. A checkpoint signed by a key that cannot leave the token (one made
before the domain existed) is handed over: its MAC is checked in the token, then the
checkpoint is signed again, in the token, by a key the backup carries. On the new
token `audit verify` accepts that old key's checkpoints of the chain up to the one
handed over: they can no longer be checked one by one, but that checkpoint and the
hash chain pin every record they cover.

The restored token records each carried trail as retired ("carried by a backup"): its
files stay with the deployment the backup was made on, so the new deployment's own
`audit verify` lists it without looking for it, and `audit verify --archive DIR`
checks a copy of it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hsmkms.audit.checkpoint import latest_in_token
from hsmkms.audit.shelf import DatabaseShelf
from hsmkms.audit.trails import DEFAULT_SCOPE, RETIRED, TrailRecord, now, register
from hsmkms.errors import KMSError, KMSInternalException, UnsupportedOperationException
from hsmkms.store import open_store
from hsmkms.token import AUDIT_KEY_LABEL as KEY_LABEL
from hsmkms.token import (
    Custody,
    Token,
    TokenAuditAnchor,
    WrappedMaterial,
    holds,
    unwrap_material,
    wrap_material,
)
from hsmkms.token import audit_key_ref as key_ref


@dataclass(frozen=True)
class TrailPart:
    keys: list[WrappedMaterial] = field(default_factory=list)
    checkpoints: dict[str, str] = field(default_factory=dict)  # "<trail>/<chain>" -> line
    handed_over: list[str] = field(default_factory=list)  # re-signed by a carried key
    scopes: dict[str, str] = field(default_factory=dict)  # trail -> its scope

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": [k.to_json() for k in self.keys],
            "checkpoints": self.checkpoints,
            "handed_over": self.handed_over,
            "scopes": self.scopes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrailPart:
        checkpoints = data["checkpoints"]
        if not isinstance(checkpoints, dict):
            raise ValueError("checkpoints is not an object")
        return cls(
            [WrappedMaterial.from_json(k) for k in data["keys"]],
            {str(name): str(line) for name, line in checkpoints.items()},
            [str(name) for name in data["handed_over"]],
            {str(t): str(scope) for t, scope in data.get("scopes", {}).items()},
        )

    def summary(self) -> dict[str, Any]:
        return {
            "keys": len(self.keys),
            "checkpoints": len(self.checkpoints),
            "handed_over": self.handed_over,
        }


def carry_trail(hsm: Token, database_url: str) -> tuple[TrailPart, list[dict[str, str]]]:
    """The trail's part of a backup, and what of it cannot be carried."""
    store = open_store(database_url)
    try:
        anchor = TokenAuditAnchor(hsm, DatabaseShelf(store))
        if hsm.custody is Custody.DOMAIN:
            anchor.key_id()  # makes a key a backup can carry, if there is none yet
        keys: list[WrappedMaterial] = []
        for key_id in anchor.key_ids():
            try:
                keys.append(wrap_material(hsm, key_ref(key_id)))
            except UnsupportedOperationException:
                continue  # never-extractable: its checkpoints are handed over below
        carried = {k.cka_id.hex() for k in keys}
        successor = min(carried, default=None)
        checkpoints: dict[str, str] = {}
        handed_over: list[str] = []
        scopes = _scopes(anchor)
        for name, values in sorted(anchor.load_all().items()):
            trail_id, _, chain = name.partition("/")
            latest = latest_in_token(anchor, trail_id, chain, values)
            if latest is None or (latest.key_id not in carried and successor is None):
                continue
            if latest.key_id not in carried:
                assert successor is not None
                unsigned = dataclasses.replace(latest, key_id=successor, mac="")
                mac = anchor.sign_with(bytes.fromhex(successor), unsigned.body())
                latest = dataclasses.replace(unsigned, mac=mac.hex())
                handed_over.append(name)
            checkpoints[name] = latest.line().decode()
    finally:
        store.close()
    left_out = []
    if successor is None:
        left_out.append({
            "label": KEY_LABEL,
            "reason": "no audit key of this token can leave it (the token cannot wrap it, "
            "or new keys are kept never-extractable): the trail will not verify on a "
            "restored token",
        })  # fmt: skip
    carried_trails = {name.partition("/")[0] for name in checkpoints}
    scopes = {t: scopes.get(t, DEFAULT_SCOPE) for t in sorted(carried_trails)}
    return TrailPart(keys, checkpoints, handed_over, scopes), left_out


def _scopes(anchor: TokenAuditAnchor) -> dict[str, str]:
    """Each trail's scope, from the token's authentic trail records."""
    found: dict[str, str] = {}
    for trail, values in anchor.load_everything()[1].items():
        for raw in values:
            try:
                record = TrailRecord.parse(raw)
            except ValueError:
                continue
            if record.trail == trail and record.authentic(anchor):
                found[trail] = record.scope
    return found


def restore_keys(hsm: Token, part: TrailPart) -> list[WrappedMaterial]:
    """Unwrap the carried audit keys the token does not hold yet; returns those made."""
    made = []
    for key in part.keys:
        if holds(hsm, key):
            continue  # the same key (a random 16-byte id), e.g. from an earlier restore
        unwrap_material(hsm, key)
        made.append(key)
    return made


def restore_checkpoints(hsm: Token, database_url: str, part: TrailPart) -> None:
    """Where the token keeps the latest checkpoints (or the database, for a token that
    holds no data objects); after the rows are written."""
    store = open_store(database_url)
    try:
        anchor = TokenAuditAnchor(hsm, DatabaseShelf(store))
        for name, line in part.checkpoints.items():
            anchor.store(name, line.encode())
        when = now()
        for trail, scope in part.scopes.items():
            register(
                anchor,
                TrailRecord(
                    trail, scope, RETIRED, "", retired=when, retired_by="hsmkms backup restore",
                    retired_reason="carried by a backup: its records stay with the deployment "
                    "the backup was made on (check a copy with `audit verify --archive`)",
                ),
            )  # fmt: skip
    except KMSError as exc:
        raise KMSInternalException(
            f"The keys and metadata are restored, but not the audit checkpoints ({exc.message})"
        ) from exc
    finally:
        store.close()
