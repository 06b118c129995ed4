"""Imported key material (Origin EXTERNAL): what a key record keeps about it, the
import parameters (wrapping key + import token) as store documents, and the
KeyMetadata fields AWS shows for it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from hsmkms.errors import ExpiredImportTokenException, InvalidImportTokenException
from hsmkms.store.model import KeyRecord, KeySpec, KeyState, Origin
from hsmkms.token import InternalRef

# KeyRecord.extra of an EXTERNAL key: its materials by version ("1", "2", ...), each a
# Material as a dict. Symmetric keys may have several (on-demand rotation); the others one.
MATERIALS = "ImportedMaterials"
EXPIRES = "KEY_MATERIAL_EXPIRES"
DOES_NOT_EXPIRE = "KEY_MATERIAL_DOES_NOT_EXPIRE"
# While material is imported again, it is unwrapped here first and compared with the
# key's check values: versions start at 1, so 0 never names real material.
SCRATCH_VERSION = 0


@dataclass(frozen=True)
class Material:
    """One imported key material of a key (never the material itself)."""

    check_value: str  # hex; computed in the token, equal for equal material
    key_material_id: str
    expiration_model: str
    valid_to: str | None = None  # ISO 8601, only with KEY_MATERIAL_EXPIRES
    description: str | None = None
    pending_rotation: bool = False  # imported with NEW_KEY_MATERIAL, not yet rotated to

    @property
    def expires(self) -> datetime | None:
        return datetime.fromisoformat(self.valid_to) if self.valid_to else None


def materials(record: KeyRecord) -> dict[int, Material]:
    raw = record.extra.get(MATERIALS) or {}
    return {int(version): Material(**entry) for version, entry in raw.items()}


def with_materials(record: KeyRecord, entries: dict[int, Material]) -> dict[str, Any]:
    """The record's extra with these materials."""
    return {**record.extra, MATERIALS: {str(v): asdict(m) for v, m in sorted(entries.items())}}


PARAMETERS_KIND = "import-parameters"
_TOKEN_MAGIC = b"HKIT\x01"
_TOKEN = struct.Struct(">5sq16s32s")  # magic, valid-to (epoch s), parameters id, secret


@dataclass(frozen=True)
class ImportParameters:
    """One GetParametersForImport answer: its wrapping key lives in the token until the
    parameters are used or expire (the maintenance pass destroys expired ones)."""

    parameters_id: str  # hex of 16 bytes; names the document and the wrapping key
    key_id: str
    region: str
    wrapping_algorithm: str
    wrapping_key_spec: str
    valid_to: str  # ISO 8601
    token_digest: str  # SHA-256 of the import token: the store never holds a usable token

    @property
    def wrapping_key(self) -> InternalRef:
        return InternalRef(f"hsmkms-import/{self.parameters_id}", bytes.fromhex(self.parameters_id))

    @property
    def expires(self) -> datetime:
        return datetime.fromisoformat(self.valid_to)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, body: str) -> ImportParameters:
        return cls(**json.loads(body))


def new_parameters(
    record: KeyRecord, wrapping_algorithm: str, wrapping_key_spec: str, valid_to: datetime
) -> tuple[ImportParameters, bytes]:
    """Fresh parameters and their import token (returned to the caller only)."""
    parameters_id, secret = secrets.token_bytes(16), secrets.token_bytes(32)
    token = _TOKEN.pack(_TOKEN_MAGIC, int(valid_to.timestamp()), parameters_id, secret)
    params = ImportParameters(
        parameters_id.hex(), record.key_id, record.region, wrapping_algorithm,
        wrapping_key_spec, valid_to.isoformat(), hashlib.sha256(token).hexdigest(),
    )  # fmt: skip
    return params, token


def parameters_id_of(token: bytes, now: datetime) -> str:
    """The parameters an import token names. A token that is not ours is invalid; one
    whose time is up is expired even when its parameters were already cleaned up."""
    if len(token) != _TOKEN.size or not token.startswith(_TOKEN_MAGIC):
        raise InvalidImportTokenException("The import token is not valid.")
    _, valid_to, parameters_id, _ = _TOKEN.unpack(token)
    if datetime.fromtimestamp(valid_to, UTC) <= now:
        raise ExpiredImportTokenException("The import token has expired.")
    return bytes(parameters_id).hex()


def verify_token(params: ImportParameters | None, token: bytes, record: KeyRecord) -> None:
    digest = hashlib.sha256(token).hexdigest()
    if params is None or not secrets.compare_digest(digest, params.token_digest):
        raise InvalidImportTokenException("The import token is not valid or was already used.")
    if params.key_id != record.key_id or params.region != record.region:
        raise InvalidImportTokenException(
            f"The import token was issued for another KMS key, not {record.arn}."
        )


def key_material_id(record: KeyRecord, check_value: bytes) -> str:
    """64 hex digits, as AWS's KeyMaterialId: the same for the same material in a key."""
    named = b"hsmkms-key-material/" + record.key_id.encode() + check_value
    return hashlib.sha256(named).hexdigest()


def expired_versions(record: KeyRecord, now: datetime, imported: set[int]) -> list[int]:
    """Versions whose material is in the token (imported) and whose ValidTo has passed."""
    if record.origin is not Origin.EXTERNAL:
        return []
    return [
        version
        for version, material in materials(record).items()
        if version in imported and material.expires is not None and material.expires <= now
    ]


def generated_material_id(key_id: str, version: int) -> str:
    """KeyMaterialId of material hsmkms generated: 64 hex digits, one per version, the same
    in every Region of a multi-Region key (the Regions share the versions)."""
    return hashlib.sha256(f"hsmkms-key-material/{key_id}/v{version}".encode()).hexdigest()


def imported_metadata(record: KeyRecord) -> dict[str, Any]:
    """ExpirationModel and ValidTo as DescribeKey shows them for an EXTERNAL key whose
    current material is imported (none while it is PendingImport)."""
    current = materials(record).get(record.current_version)
    if record.origin is not Origin.EXTERNAL or current is None:
        return {}
    if record.state is KeyState.PENDING_IMPORT:
        return {}
    meta: dict[str, Any] = {"ExpirationModel": current.expiration_model}
    if current.expires is not None:
        meta["ValidTo"] = current.expires
    return meta


def current_material_id(record: KeyRecord) -> str | None:
    """KeyMetadata.CurrentKeyMaterialId: AWS shows it for symmetric encryption keys of
    origin AWS_KMS, and of origin EXTERNAL once material was imported (still after that
    material is deleted); never for other key specs or origins."""
    if record.key_spec is not KeySpec.SYMMETRIC_DEFAULT:
        return None
    if record.origin is Origin.AWS_KMS:
        return generated_material_id(record.key_id, record.current_version)
    current = materials(record).get(record.current_version)
    if record.origin is Origin.EXTERNAL and current is not None:
        return current.key_material_id
    return None


def material_entry(record: KeyRecord, version: int, imported: bool) -> dict[str, Any]:
    """The RotationsListEntry fields of one imported material (ListKeyRotations)."""
    material = materials(record).get(version)
    if material is None:
        return {}
    state = ("PENDING_ROTATION" if material.pending_rotation
             else "CURRENT" if version == record.current_version else "NON_CURRENT")  # fmt: skip
    entry: dict[str, Any] = {
        "KeyMaterialId": material.key_material_id,
        "ImportState": "IMPORTED" if imported else "PENDING_IMPORT",
        "KeyMaterialState": state,
        "ExpirationModel": material.expiration_model,
    }
    if material.description is not None:
        entry["KeyMaterialDescription"] = material.description
    if material.expires is not None:
        entry["ValidTo"] = material.expires
    return entry
