"""THE XKS proxy's operation table, and running an operation as an authenticated key
store caller: the proxy's counterpart of the KMS operation table and api/invoke.py.

Each route of `/<prefix>/kms/xks/v1/...` is one ProxyOperation: its XKS name, the
requestMetadata fields the specification requires, whether it names an external key
(then the key store's XKS policy applies, xks/policy.py) and its handler over the
decoded members. `invoke` validates, authorizes and runs it, and returns the Outcome
the audit step records: requestMetadata in full, never plaintext, ciphertext or AAD.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hsmkms.audit.outcome import Outcome
from hsmkms.errors import (
    KMSError,
    KMSInternalException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.xks import operations as xks
from hsmkms.xks.operations import HealthCheck, ProxyContext, Response
from hsmkms.xks.policy import XksPolicies
from hsmkms.xks_spec import ALGORITHM, API_PATH, CDIV_ALGORITHM, SERVICE

log = logging.getLogger("hsmkms.xks")
_KEYED = ("awsPrincipalArn", "kmsKeyArn", "kmsOperation", "kmsRequestId")
_OPTIONAL_METADATA = ("awsSourceVpc", "awsSourceVpce", "kmsViaService")
MAX_METADATA_VALUE = 4096


@dataclass(frozen=True)
class Proxy:
    """What the proxy's operations share across calls."""

    policies: XksPolicies
    health: HealthCheck
    fleet_size: int = 1


@dataclass(frozen=True, slots=True)
class ProxyCaller:
    """A verified XKS caller: the credential that signed, for the key store it signs for."""

    access_key_id: str
    region: str
    uri_prefix: str

    def identity(self) -> dict[str, Any]:
        return {
            "type": "XksProxyCredential",
            "accessKeyId": self.access_key_id,
            "keyStore": f"/{self.uri_prefix}/{API_PATH}",
        }


@dataclass(slots=True)
class ProxyCall:
    """One call's decoded request, and the audit parameters its handling adds."""

    key_id: str  # externalKeyId ("" for health)
    body: Mapping[str, Any]
    parameters: dict[str, Any]  # requestParameters of the record, filled as read


@dataclass(frozen=True)
class ProxyOperation:
    name: str  # the XKS operation, the record's eventName
    required_metadata: tuple[str, ...]
    run: Callable[[ProxyContext, Proxy, ProxyCall], Response]
    read_only: bool = False
    keyed: bool = True  # names an external key: its key store's XKS policy applies
    algorithm: bool = False  # takes encryptionAlgorithm (AES_GCM)


def _b64(call: ProxyCall, name: str, *, required: bool) -> bytes:
    value = call.body.get(name)
    if value is None:
        if required:
            raise ValidationException(f"{name} is required.")
        return b""
    if not isinstance(value, str):
        raise ValidationException(f"{name} must be a Base64 string.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationException(f"{name} is not valid Base64.") from None


def _aad(call: ProxyCall) -> bytes:
    aad = _b64(call, "additionalAuthenticatedData", required=False)
    call.parameters["additionalAuthenticatedDataLength"] = len(aad)
    return aad


def _health(ctx: ProxyContext, proxy: Proxy, call: ProxyCall) -> Response:
    return xks.get_health_status(ctx, check=proxy.health, fleet_size=proxy.fleet_size)


def _metadata(ctx: ProxyContext, proxy: Proxy, call: ProxyCall) -> Response:
    return xks.get_key_metadata(ctx, external_key_id=call.key_id)


def _encrypt(ctx: ProxyContext, proxy: Proxy, call: ProxyCall) -> Response:
    aad = _aad(call)
    integrity = call.body.get("ciphertextDataIntegrityValueAlgorithm")
    if integrity is not None:
        call.parameters["ciphertextDataIntegrityValueAlgorithm"] = integrity
        if integrity != CDIV_ALGORITHM:
            raise ValidationException("ciphertextDataIntegrityValueAlgorithm must be SHA_256.")
    return xks.encrypt(
        ctx,
        external_key_id=call.key_id,
        plaintext=_b64(call, "plaintext", required=True),
        additional_authenticated_data=aad,
        with_integrity_value=integrity is not None,
    )


def _decrypt(ctx: ProxyContext, proxy: Proxy, call: ProxyCall) -> Response:
    aad = _aad(call)
    return xks.decrypt(
        ctx,
        external_key_id=call.key_id,
        ciphertext=_b64(call, "ciphertext", required=True),
        initialization_vector=_b64(call, "initializationVector", required=True),
        authentication_tag=_b64(call, "authenticationTag", required=True),
        additional_authenticated_data=aad,
        ciphertext_metadata=_b64(call, "ciphertextMetadata", required=False),
    )


# The URI's last part -> the operation.
PROXY_OPERATIONS: dict[str, ProxyOperation] = {
    "health": ProxyOperation("GetHealthStatus", ("kmsRequestId", "kmsOperation"), _health,
                             read_only=True, keyed=False),
    "metadata": ProxyOperation("GetKeyMetadata", _KEYED[:1] + _KEYED[2:], _metadata,
                               read_only=True),
    "encrypt": ProxyOperation("Encrypt", _KEYED, _encrypt, algorithm=True),
    "decrypt": ProxyOperation("Decrypt", _KEYED, _decrypt, algorithm=True),
}  # fmt: skip


def _request_metadata(body: Mapping[str, Any], op: ProxyOperation) -> dict[str, str]:
    metadata = body.get("requestMetadata")
    if not isinstance(metadata, dict):
        raise ValidationException("requestMetadata is required.")
    for name in op.required_metadata:
        if not isinstance(metadata.get(name), str) or not metadata[name]:
            raise ValidationException(f"requestMetadata.{name} is required.")
    for name in _OPTIONAL_METADATA:
        if name in metadata and not isinstance(metadata[name], str):
            raise ValidationException(f"requestMetadata.{name} must be a string.")
    # Fields KMS may add later are kept for the audit trail, never refused.
    return {
        k: v for k, v in metadata.items() if isinstance(v, str) and len(v) <= MAX_METADATA_VALUE
    }


def proxy_outcome(
    route: str | None,
    uri_prefix: str | None,
    key_id: str | None,
    *,
    caller: ProxyCaller | None = None,
    error: KMSError | None = None,
    parameters: Mapping[str, Any] | None = None,
    key_arn: str | None = None,
    response: Response | None = None,
) -> Outcome:
    """The Outcome of an XKS call, also of one refused before its operation ran."""
    op = PROXY_OPERATIONS.get(route or "")
    recorded: dict[str, Any] = {"uriPrefix": uri_prefix, "requestMetadata": {}}
    recorded.update({k: v for k, v in (parameters or {}).items() if v is not None})
    if key_id:
        recorded["externalKeyId"] = key_id
    return Outcome(
        SERVICE,
        "Unknown" if op is None else op.name,
        op is not None and op.read_only,
        None if caller is None else caller.identity(),
        None if caller is None else caller.region,
        recorded,
        () if key_arn is None else (key_arn,),
        response,
        error,
    )


def invoke(
    ctx: ProxyContext,
    proxy: Proxy,
    caller: ProxyCaller,
    route: str,
    key_id: str | None,
    body: Mapping[str, Any],
) -> Outcome:
    """Validate, authorize (the key store's XKS policy), run; every failure is the
    Outcome's error, never raised."""
    op = PROXY_OPERATIONS[route]
    call = ProxyCall(key_id or "", body, {"requestMetadata": {}})
    key_arn: str | None = None
    response: Response | None = None
    error: KMSError | None = None
    try:
        metadata = call.parameters["requestMetadata"] = _request_metadata(body, op)
        if op.keyed:
            ctx.keys.refresh()  # see writes committed on any node before this request
            if op.algorithm:
                _check_algorithm(call)
            key_arn = xks.external_key(ctx, call.key_id).record.arn
            proxy.policies.require(caller.uri_prefix, op.name, key_arn, call.key_id, metadata)
        response = op.run(ctx, proxy, call)
    except KMSError as exc:
        error = exc
    except Exception as exc:  # a real fault: its traceback here, a clean 500 to the caller
        log.exception("internal error in XKS %s", op.name)
        error = KMSInternalException("An internal error occurred.")
        error.__cause__ = exc
    return proxy_outcome(
        route,
        caller.uri_prefix,
        key_id,
        caller=caller,
        error=error,
        parameters=call.parameters,
        key_arn=key_arn,
        response=response,
    )


def _check_algorithm(call: ProxyCall) -> None:
    algorithm = call.body.get("encryptionAlgorithm")
    call.parameters["encryptionAlgorithm"] = algorithm
    if not isinstance(algorithm, str):
        raise ValidationException("encryptionAlgorithm is required.")
    if algorithm != ALGORITHM:
        raise UnsupportedOperationException(
            f"encryptionAlgorithm {algorithm[:64]} is not supported; use AES_GCM."
        )
