"""Imported key material (Origin EXTERNAL, "bring your own key"): GetParametersForImport,
ImportKeyMaterial, DeleteImportedKeyMaterial, and the expiry the maintenance pass runs.

The wrapping key pair is made by the token and the material is unwrapped by the token
(hsmkms.token.importing): plaintext key material never passes through Python. A
wrapping algorithm the token cannot do inside itself is refused, never done in software.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hsmkms.errors import (
    IncorrectKeyMaterialException,
    KMSInvalidStateException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.keys import imported, lifecycle
from hsmkms.keys.availability import STATE_BEFORE_UNAVAILABLE
from hsmkms.keys.imported import ImportParameters, Material
from hsmkms.keys.lifecycle import Use
from hsmkms.keys.metadata import ENCRYPTION_ALGORITHMS, PUBLIC_KEY
from hsmkms.keys.specs import RSA_ENCRYPTION, material_for
from hsmkms.operations import imported as material
from hsmkms.operations.checks import check_enum
from hsmkms.operations.context import OperationContext, Response
from hsmkms.store.model import (
    KeyRecord,
    KeySpec,
    KeyState,
    KeyUsage,
    KeyVersion,
    Origin,
    VersionState,
)
from hsmkms.token import (
    EcPair,
    MaterialRef,
    RsaPair,
    create_wrapping_key,
    destroy_wrapping_key,
    ensure_same,
    require_wrapping,
)

PARAMETERS_LIFETIME = timedelta(hours=24)
MAX_VALID_TO = timedelta(days=365)
# The model's enums (AlgorithmSpec, WrappingKeySpec, ...), checked for library callers.
_RSA_SPECS = (KeySpec.RSA_2048, KeySpec.RSA_3072, KeySpec.RSA_4096)


def _external(ctx: OperationContext, key_id: str, manage: bool = True) -> KeyRecord:
    record = ctx.resolve(key_id)
    if record.origin is not Origin.EXTERNAL:
        raise UnsupportedOperationException(  # AWS's text; only EXTERNAL keys take material
            f"{record.arn} origin is {record.origin.value} which is not valid for this operation."
        )
    if manage:
        lifecycle.require(record, Use.MANAGE)  # PendingDeletion: KMSInvalidStateException
    return record


def create_pending_import(ctx: OperationContext, record: KeyRecord) -> KeyRecord:
    """CreateKey with Origin EXTERNAL: a key without material, PendingImport."""
    if record.key_spec is KeySpec.ECC_NIST_EDWARDS25519:
        raise UnsupportedOperationException(
            "This token cannot import Ed25519 key material (no EdDSA unwrap)."
        )
    ctx.hsm.require(material_for(record.key_spec, record.key_usage))  # usable once imported
    extra = dict(record.extra)
    if record.key_spec in _RSA_SPECS and record.key_usage is KeyUsage.ENCRYPT_DECRYPT:
        extra[ENCRYPTION_ALGORITHMS] = [
            name for name, digest in RSA_ENCRYPTION.items() if ctx.hsm.oaep_supported(digest)
        ]
    record = replace(record, state=KeyState.PENDING_IMPORT, extra=extra)
    with ctx.store.transaction() as tx:
        tx.put_key(record)
    return record


def _check_wrapping(record: KeyRecord, algorithm: str, key_spec: str) -> None:
    """AWS's rules for which wrapping algorithm and wrapping key spec fit which key."""
    if algorithm == "RSAES_PKCS1_V1_5":
        raise ValidationException(
            "The RSAES_PKCS1_V1_5 wrapping algorithm is no longer supported (deprecated)."
        )
    if record.key_spec in _RSA_SPECS and not algorithm.startswith("RSA_AES_KEY_WRAP"):
        raise ValidationException(
            f"To import an RSA private key ({record.key_spec.value}), use an "
            "RSA_AES_KEY_WRAP_SHA_* wrapping algorithm."
        )
    if (
        record.key_spec is KeySpec.ECC_NIST_P521
        and algorithm.startswith("RSAES_OAEP")
        and key_spec == "RSA_2048"
    ):
        raise ValidationException(
            f"{algorithm} with an RSA_2048 wrapping key cannot wrap ECC_NIST_P521 key material."
        )


def get_parameters_for_import(
    ctx: OperationContext, *, key_id: str, wrapping_algorithm: str, wrapping_key_spec: str
) -> Response:
    check_enum("wrappingAlgorithm", wrapping_algorithm, "AlgorithmSpec")
    check_enum("wrappingKeySpec", wrapping_key_spec, "WrappingKeySpec")
    record = _external(ctx, key_id)
    if record.state is KeyState.UNAVAILABLE:
        raise KMSInvalidStateException(f"{record.arn} is unavailable.")
    _check_wrapping(record, wrapping_algorithm, wrapping_key_spec)
    require_wrapping(ctx.hsm, wrapping_algorithm)  # names the missing mechanism
    valid_to = ctx.clock() + PARAMETERS_LIFETIME
    params, token = imported.new_parameters(record, wrapping_algorithm, wrapping_key_spec, valid_to)
    # The document first: whatever happens next, maintenance finds the wrapping key.
    with ctx.store.transaction() as tx:
        tx.put_document(imported.PARAMETERS_KIND, params.parameters_id, params.to_json())
    try:
        public_key = create_wrapping_key(ctx.hsm, params.wrapping_key, wrapping_key_spec)
    except BaseException:
        _discard(ctx, params)
        raise
    return {
        "KeyId": record.arn,
        "ImportToken": token,
        "PublicKey": public_key,
        "ParametersValidTo": valid_to,
    }


def _discard(ctx: OperationContext, params: ImportParameters) -> None:
    destroy_wrapping_key(ctx.hsm, params.wrapping_key)
    with ctx.store.transaction() as tx:
        tx.delete_document(imported.PARAMETERS_KIND, params.parameters_id)


def _redeem(ctx: OperationContext, token: bytes, record: KeyRecord) -> ImportParameters:
    now = ctx.clock()
    parameters_id = imported.parameters_id_of(token, now)
    body = ctx.store.get_document(imported.PARAMETERS_KIND, parameters_id)
    params = ImportParameters.from_json(body) if body is not None else None
    imported.verify_token(params, token, record)
    assert params is not None
    return params


def _expiry(
    now: datetime, valid_to: datetime | float | None, expiration_model: str | None
) -> tuple[str, datetime | None]:
    model = check_enum(
        "expirationModel", expiration_model or imported.EXPIRES, "ExpirationModelType"
    )
    if model == imported.DOES_NOT_EXPIRE:
        if valid_to is not None:
            raise ValidationException(
                "ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE."
            )
        return model, None
    if valid_to is None:
        raise ValidationException(
            "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES."
        )
    when = valid_to if isinstance(valid_to, datetime) else datetime.fromtimestamp(valid_to, UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when <= now or when > now + MAX_VALID_TO:
        raise ValidationException(
            "ValidTo must be in the future and at most 365 days from the request date."
        )
    return model, when


def import_key_material(
    ctx: OperationContext,
    *,
    key_id: str,
    import_token: bytes,
    encrypted_key_material: bytes,
    valid_to: datetime | float | None = None,
    expiration_model: str | None = None,
    import_type: str | None = None,
    key_material_description: str | None = None,
    key_material_id: str | None = None,
) -> Response:
    now = ctx.clock()
    model, expiry = _expiry(now, valid_to, expiration_model)
    kind = check_enum("importType", import_type or "EXISTING_KEY_MATERIAL", "ImportType")
    new = kind == "NEW_KEY_MATERIAL"
    record = _external(ctx, key_id)
    entries = imported.materials(record)
    if new:
        _check_new_material(record, entries, key_material_id)
    elif key_material_id is not None and not entries:
        raise NotFoundException(f"{record.arn} has no key material {key_material_id}.")
    params = _redeem(ctx, import_token, record)
    present = material.present_versions(ctx, record.key_id)
    if new or not entries:  # the first material, or new material for a rotation
        version = record.current_version + 1 if new else record.current_version
        check = material.unwrap_to(ctx, record, params, encrypted_key_material, version)
        if new and any(m.check_value == check.hex() for m in entries.values()):
            material.drop(ctx, record, version)
            raise IncorrectKeyMaterialException(
                "This key material is already associated with this KMS key."
            )
    else:  # the same material again: which one it is, the token tells (check values)
        scratch = imported.SCRATCH_VERSION
        try:
            check = material.unwrap_to(ctx, record, params, encrypted_key_material, scratch)
        finally:
            material.drop(ctx, record, scratch)
        version = material.version_of(entries, check, key_material_id)
        if version not in present:
            again = material.unwrap_to(ctx, record, params, encrypted_key_material, version)
            ensure_same(check, again)
    previous = entries.get(version)
    entries[version] = Material(
        check.hex(), imported.key_material_id(record, check), model,
        expiry.isoformat() if expiry is not None else None,
        key_material_description if key_material_description is not None else (
            previous.description if previous is not None else None),
        pending_rotation=new or (previous is not None and previous.pending_rotation),
    )  # fmt: skip
    _commit(ctx, record, params, version, entries, present | {version})
    return {"KeyId": record.arn, "KeyMaterialId": entries[version].key_material_id}


def _check_new_material(
    record: KeyRecord, entries: dict[int, Material], key_material_id: str | None
) -> None:
    """AWS: only single-Region symmetric encryption keys take several materials, one
    pending rotation at a time, once their material is imported."""
    if record.key_spec is not KeySpec.SYMMETRIC_DEFAULT or record.multi_region:
        raise UnsupportedOperationException(
            "ImportType NEW_KEY_MATERIAL is only for single-Region symmetric encryption keys "
            "in this hsmkms release."
        )
    if not entries or record.state not in (KeyState.ENABLED, KeyState.DISABLED):
        raise KMSInvalidStateException(
            f"{record.arn} must have its key material imported before new key material."
        )
    if any(m.pending_rotation for m in entries.values()):
        raise KMSInvalidStateException(
            f"{record.arn} already has key material pending rotation: rotate to it or "
            "delete it first."
        )
    if key_material_id is not None:
        raise ValidationException("KeyMaterialId names existing key material, not new.")


def _commit(
    ctx: OperationContext,
    record: KeyRecord,
    params: ImportParameters,
    version: int,
    entries: dict[int, Material],
    present: set[int],
) -> None:
    """Record the imported material and the key state it leads to; the import
    parameters are used up (their wrapping key is destroyed)."""
    now = ctx.clock()
    with ctx.store.transaction() as tx:
        current = tx.get_key(record.key_id)
        if current is None or current.state is not record.state:
            raise KMSInvalidStateException(f"{record.arn} changed meanwhile; retry.")
        rows = {row.version: row for row in tx.list_versions(record.key_id)}
        row = rows.get(version)
        if row is None or entries[version].pending_rotation:  # fresh material: a new row
            row = KeyVersion(record.key_id, version, now, None)
        tx.put_version(replace(row, state=VersionState.ACTIVE))
        extra = imported.with_materials(current, entries)
        if PUBLIC_KEY not in extra and isinstance(
            material_for(record.key_spec, record.key_usage), RsaPair | EcPair
        ):
            ref = MaterialRef(record.key_id, version)
            extra[PUBLIC_KEY] = base64.b64encode(ctx.hsm.public_key_der(ref)).decode()
        state = current.state
        complete = all(v in present for v, m in entries.items() if not m.pending_rotation)
        if complete and state in (KeyState.PENDING_IMPORT, KeyState.UNAVAILABLE):
            state = KeyState.ENABLED
            extra.pop(STATE_BEFORE_UNAVAILABLE, None)
        tx.put_key(replace(current, state=state, extra=extra))
        tx.remove_pending(record.key_id, version)
        tx.delete_document(imported.PARAMETERS_KIND, params.parameters_id)
    ctx.changed()
    destroy_wrapping_key(ctx.hsm, params.wrapping_key)


def delete_imported_key_material(
    ctx: OperationContext, *, key_id: str, key_material_id: str | None = None
) -> Response:
    # A key pending deletion keeps that state (AWS: "does not change the KMS key's state").
    record = _external(ctx, key_id, manage=False)
    entries = imported.materials(record)
    if key_material_id is None:
        version = record.current_version
    else:
        found = [v for v, m in entries.items() if m.key_material_id == key_material_id]
        if not found:
            raise NotFoundException(f"{record.arn} has no key material {key_material_id}.")
        version = found[0]
    if version not in entries or version not in material.present_versions(ctx, record.key_id):
        raise KMSInvalidStateException(f"{record.arn} has no such imported key material.")
    material.remove(ctx, record, [version])
    return {"KeyId": record.arn, "KeyMaterialId": entries[version].key_material_id}


def destroy_expired_parameters(ctx: OperationContext, now: datetime) -> list[str]:
    """The maintenance pass: destroy wrapping keys of expired import parameters (and of
    parameters whose key is gone); returns the parameter ids cleaned."""
    cleaned = []
    for parameters_id, body in ctx.store.list_documents(imported.PARAMETERS_KIND).items():
        try:
            params = ImportParameters.from_json(body)
        except (ValueError, TypeError):
            continue  # not ours to judge: left for an operator
        if params.expires <= now or ctx.store.get_key(params.key_id) is None:
            _discard(ctx, params)
            cleaned.append(parameters_id)
    return cleaned
