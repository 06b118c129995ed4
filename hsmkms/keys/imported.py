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
from hsmkms.keys.model import KeyRecord, KeyState, Origin
from hsmkms.token.templates import InternalRef

# KeyRecord.extra entries of an EXTERNAL key.
CHECK_VALUE = "ImportedCheckValue"  # hex; computed in the token, equal for equal material
KEY_MATERIAL_ID = "KeyMaterialId"
EXPIRATION_MODEL = "ExpirationModel"
VALID_TO = "ValidTo"  # ISO 8601, only with KEY_MATERIAL_EXPIRES
KEY_MATERIAL_DESCRIPTION = "KeyMaterialDescription"
EXPIRES = "KEY_MATERIAL_EXPIRES"
DOES_NOT_EXPIRE = "KEY_MATERIAL_DOES_NOT_EXPIRE"
# While the material is (being) imported again, it is unwrapped here first and compared
# with the key's check value: versions start at 1, so 0 never names real material.
SCRATCH_VERSION = 0

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


def valid_to(record: KeyRecord) -> datetime | None:
    value = record.extra.get(VALID_TO)
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def material_expired(record: KeyRecord, now: datetime) -> bool:
    expiry = valid_to(record)
    return (
        record.origin is Origin.EXTERNAL
        and record.state in (KeyState.ENABLED, KeyState.DISABLED)
        and expiry is not None
        and expiry <= now
    )


def imported_metadata(record: KeyRecord) -> dict[str, Any]:
    """ExpirationModel, ValidTo and CurrentKeyMaterialId, as DescribeKey shows them for
    an EXTERNAL key whose material is imported (none while it is PendingImport)."""
    if record.origin is not Origin.EXTERNAL or record.state is KeyState.PENDING_IMPORT:
        return {}
    meta: dict[str, Any] = {}
    if EXPIRATION_MODEL in record.extra:
        meta["ExpirationModel"] = record.extra[EXPIRATION_MODEL]
    expiry = valid_to(record)
    if expiry is not None:
        meta["ValidTo"] = expiry
    if KEY_MATERIAL_ID in record.extra:
        meta["CurrentKeyMaterialId"] = record.extra[KEY_MATERIAL_ID]
    return meta
