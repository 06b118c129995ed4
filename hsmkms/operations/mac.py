"""MACs: GenerateMac and VerifyMac with HMAC keys, computed in the token."""

from __future__ import annotations

from hsmkms.errors import (
    InvalidKeyUsageException,
    KMSInvalidMacException,
)
from hsmkms.keys.resolved import Resolved
from hsmkms.keys.specs import (
    MAC_ALGORITHMS,
    SPECS,
)
from hsmkms.operations.checks import (
    check_bytes,
    check_enum,
    usable,
)
from hsmkms.operations.context import OperationContext, Response
from hsmkms.store.model import (
    KeyUsage,
)

MAX_MESSAGE = 4096
MAX_MAC = 6144


def _mac_key(
    ctx: OperationContext, key_id: str, message: bytes, algorithm: str, operation: str
) -> tuple[Resolved, bytes]:
    data = check_bytes("message", message, MAX_MESSAGE)
    check_enum("macAlgorithm", algorithm, "MacAlgorithmSpec")
    key = usable(ctx, key_id, KeyUsage.GENERATE_VERIFY_MAC, operation)
    if algorithm not in SPECS[key.record.key_spec].mac:
        # InvalidKeyUsageException: "The encryption algorithm or signing algorithm
        # specified for the operation is incompatible with the type of key material in
        # the KMS key (KeySpec)" (API_GenerateMac.html#API_GenerateMac_Errors)
        raise InvalidKeyUsageException(
            f"Algorithm {algorithm} is incompatible with key spec {key.record.key_spec.value}."
        )
    return key, data


def generate_mac(
    ctx: OperationContext, *, key_id: str, message: bytes, mac_algorithm: str
) -> Response:
    key, data = _mac_key(ctx, key_id, message, mac_algorithm, "GenerateMac")
    mac = ctx.token_for(key.record).hmac(key.ref, MAC_ALGORITHMS[mac_algorithm], data)
    return {"Mac": mac, "MacAlgorithm": mac_algorithm, "KeyId": key.record.arn}


def verify_mac(
    ctx: OperationContext, *, key_id: str, message: bytes, mac_algorithm: str, mac: bytes
) -> Response:
    given = check_bytes("mac", mac, MAX_MAC)
    key, data = _mac_key(ctx, key_id, message, mac_algorithm, "VerifyMac")
    if not ctx.token_for(key.record).hmac_verify(
        key.ref, MAC_ALGORITHMS[mac_algorithm], data, given
    ):
        raise KMSInvalidMacException()
    return {"KeyId": key.record.arn, "MacValid": True, "MacAlgorithm": mac_algorithm}


# -- key agreement -------------------------------------------------------------------
