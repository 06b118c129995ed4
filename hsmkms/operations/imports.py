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
    KMSInvalidStateException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.keys import imported, lifecycle
from hsmkms.keys.imported import ImportParameters
from hsmkms.keys.lifecycle import Use
from hsmkms.keys.material import STATE_BEFORE_UNAVAILABLE
from hsmkms.keys.metadata import ENCRYPTION_ALGORITHMS, PUBLIC_KEY
from hsmkms.keys.model import (
    KeyRecord,
    KeySpec,
    KeyState,
    KeyUsage,
    KeyVersion,
    Origin,
    PendingMaterial,
    VersionState,
)
from hsmkms.keys.specs import RSA_ENCRYPTION, material_for
from hsmkms.operations.checks import check_enum
from hsmkms.operations.context import OperationContext, Response
from hsmkms.token import MaterialRef
from hsmkms.token import importing as token_import
from hsmkms.token.kinds import EcPair, RsaPair

PARAMETERS_LIFETIME = timedelta(hours=24)
MAX_VALID_TO = timedelta(days=365)
# The model's enums (AlgorithmSpec, WrappingKeySpec, ...), checked for library callers.
ALGORITHMS = [*token_import.WRAPPING_ALGORITHMS, "RSAES_PKCS1_V1_5", "SM2PKE"]
WRAPPING_KEY_SPECS = [*token_import.WRAPPING_KEY_SPECS, "SM2"]
EXPIRATION_MODELS = [imported.EXPIRES, imported.DOES_NOT_EXPIRE]
IMPORT_TYPES = ["EXISTING_KEY_MATERIAL", "NEW_KEY_MATERIAL"]
_RSA_SPECS = (KeySpec.RSA_2048, KeySpec.RSA_3072, KeySpec.RSA_4096)


def _external(ctx: OperationContext, key_id: str, manage: bool = True) -> KeyRecord:
    record = ctx.resolve(key_id)
    if record.origin is not Origin.EXTERNAL:
        raise UnsupportedOperationException(
            f"{record.arn} has Origin {record.origin.value}: key material can be imported "
            "only into a KMS key with Origin EXTERNAL."
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
    if algorithm == "SM2PKE" or key_spec == "SM2":
        raise UnsupportedOperationException("SM2 wrapping is available only in China Regions.")
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
    check_enum("wrappingAlgorithm", wrapping_algorithm, ALGORITHMS)
    check_enum("wrappingKeySpec", wrapping_key_spec, WRAPPING_KEY_SPECS)
    record = _external(ctx, key_id)
    if record.state is KeyState.UNAVAILABLE:
        raise KMSInvalidStateException(f"{record.arn} is unavailable.")
    _check_wrapping(record, wrapping_algorithm, wrapping_key_spec)
    token_import.require(ctx.hsm, wrapping_algorithm)  # names the missing mechanism
    valid_to = ctx.clock() + PARAMETERS_LIFETIME
    params, token = imported.new_parameters(record, wrapping_algorithm, wrapping_key_spec, valid_to)
    # The document first: whatever happens next, maintenance finds the wrapping key.
    with ctx.store.transaction() as tx:
        tx.put_document(imported.PARAMETERS_KIND, params.parameters_id, params.to_json())
    try:
        public_key = token_import.create_wrapping_key(
            ctx.hsm, params.wrapping_key, wrapping_key_spec
        )
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
    token_import.destroy_wrapping_key(ctx.hsm, params.wrapping_key)
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
    model = check_enum("expirationModel", expiration_model or imported.EXPIRES, EXPIRATION_MODELS)
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
    if check_enum("importType", import_type or IMPORT_TYPES[0], IMPORT_TYPES) != IMPORT_TYPES[0]:
        raise UnsupportedOperationException(
            "ImportType NEW_KEY_MATERIAL (on-demand rotation of imported key material) is "
            "not supported by this hsmkms release."
        )
    record = _external(ctx, key_id)
    if key_material_id is not None and key_material_id != record.extra.get(
        imported.KEY_MATERIAL_ID
    ):
        raise NotFoundException(f"{record.arn} has no key material {key_material_id}.")
    params = _redeem(ctx, import_token, record)
    present = record.state in (KeyState.ENABLED, KeyState.DISABLED)
    target = MaterialRef(
        record.key_id, record.current_version if not present else imported.SCRATCH_VERSION
    )
    _intend(ctx, record, target)
    try:
        check = _unwrap(ctx, record, params, encrypted_key_material, target, present)
    finally:
        with ctx.store.transaction() as tx:
            tx.remove_pending(target.key_id, target.version)
    material_id = imported.key_material_id(record, check)
    extra = {**record.extra, imported.CHECK_VALUE: check.hex(),
             imported.KEY_MATERIAL_ID: material_id, imported.EXPIRATION_MODEL: model}  # fmt: skip
    extra.pop(imported.VALID_TO, None)
    extra.pop(STATE_BEFORE_UNAVAILABLE, None)
    if expiry is not None:
        extra[imported.VALID_TO] = expiry.isoformat()
    if key_material_description is not None:
        extra[imported.KEY_MATERIAL_DESCRIPTION] = key_material_description
    if not present and isinstance(material_for(record.key_spec, record.key_usage),
                                  RsaPair | EcPair):  # fmt: skip
        extra[PUBLIC_KEY] = _b64(ctx.hsm.public_key_der(target))
    with ctx.store.transaction() as tx:
        current = tx.get_key(record.key_id)
        if current is None or current.state is not record.state:
            raise KMSInvalidStateException(f"{record.arn} changed meanwhile; retry.")
        versions = {v.version: v for v in tx.list_versions(record.key_id)}
        for version in versions.values():  # one material: every version is it
            tx.put_version(replace(version, state=VersionState.ACTIVE))
        if record.current_version not in versions:
            tx.put_version(KeyVersion(record.key_id, record.current_version, now, None))
        state = KeyState.ENABLED if not present else current.state
        tx.put_key(replace(current, state=state, extra=extra))
        tx.delete_document(imported.PARAMETERS_KIND, params.parameters_id)
    ctx.changed()
    token_import.destroy_wrapping_key(ctx.hsm, params.wrapping_key)  # used up
    return {"KeyId": record.arn, "KeyMaterialId": material_id}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _intend(ctx: OperationContext, record: KeyRecord, target: MaterialRef) -> None:
    """Write the intent for the object about to be unwrapped (reconcile removes it after
    a crash); one import per key at a time."""
    with ctx.store.transaction() as tx:
        if tx.get_key(record.key_id) is None:
            raise NotFoundException(f"Key '{record.arn}' does not exist")
        if any(p.key_id == target.key_id and p.version == target.version
               for p in tx.list_pending()):  # fmt: skip
            raise KMSInvalidStateException(
                f"Key material is being imported into {record.arn}; retry."
            )
        tx.add_pending(PendingMaterial(target.key_id, target.version, ctx.clock()))


def _unwrap(
    ctx: OperationContext,
    record: KeyRecord,
    params: ImportParameters,
    encrypted: bytes,
    target: MaterialRef,
    present: bool,
) -> bytes:
    """Unwrap into target in the token; compare with the material the key had. Material
    already present stays as it is: the scratch copy only proves equality."""
    ctx.hsm.destroy(target)  # leftovers of a crash (a scratch copy, an interrupted delete)
    kind = material_for(record.key_spec, record.key_usage)
    check = token_import.import_material(
        ctx.hsm, params.wrapping_key, params.wrapping_algorithm, encrypted, target, kind
    )
    try:
        expected = record.extra.get(imported.CHECK_VALUE)
        if isinstance(expected, str):
            token_import.ensure_same(bytes.fromhex(expected), check)
    except BaseException:
        ctx.hsm.destroy(target)
        raise
    if present:
        ctx.hsm.destroy(target)
    return check


def delete_imported_key_material(
    ctx: OperationContext, *, key_id: str, key_material_id: str | None = None
) -> Response:
    # A key pending deletion keeps that state (AWS: "does not change the KMS key's state").
    record = _external(ctx, key_id, manage=False)
    versions = ctx.store.list_versions(record.key_id)
    if record.state is KeyState.PENDING_IMPORT or not any(
        v.state is VersionState.ACTIVE for v in versions
    ):
        raise KMSInvalidStateException(f"{record.arn} has no imported key material.")
    current_id = record.extra.get(imported.KEY_MATERIAL_ID)
    if key_material_id is not None and key_material_id != current_id:
        raise NotFoundException(f"{record.arn} has no key material {key_material_id}.")
    remove_material(ctx, record)
    response: Response = {"KeyId": record.arn}
    if isinstance(current_id, str):
        response["KeyMaterialId"] = current_id
    return response


def remove_material(ctx: OperationContext, record: KeyRecord) -> None:
    """Destroy a key's imported material in the token, then make it PendingImport (its
    version rows stay, marked missing, so ciphertexts decrypt after re-import). Objects
    first: a crash in between leaves a key whose material is missing, which reconcile
    marks Unavailable and DeleteImportedKeyMaterial finishes."""
    versions = ctx.store.list_versions(record.key_id)
    for version in versions:
        ctx.hsm.destroy(MaterialRef(record.key_id, version.version))
    with ctx.store.transaction() as tx:
        current = tx.get_key(record.key_id)
        if current is None:
            return
        for version in tx.list_versions(record.key_id):
            tx.put_version(replace(version, state=VersionState.MISSING))
        extra = {k: v for k, v in current.extra.items()
                 if k not in (imported.VALID_TO, imported.EXPIRATION_MODEL,
                              STATE_BEFORE_UNAVAILABLE)}  # fmt: skip
        if current.state is not KeyState.PENDING_DELETION:
            current = replace(current, state=KeyState.PENDING_IMPORT)
        tx.put_key(replace(current, extra=extra))
    ctx.changed()


def expire(ctx: OperationContext, now: datetime, record: KeyRecord) -> bool:
    """The maintenance pass: delete imported material whose ValidTo has passed."""
    if not imported.material_expired(record, now):
        return False
    remove_material(ctx, record)
    return True


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
