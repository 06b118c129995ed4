"""KMS's enumerations as clients know them: the values botocore's KMS model allows, listed
as AWS lists them in its validation messages, and the values hsmkms does not implement.

A value outside the model is a ValidationException naming the model's whole set; a value
the model allows and hsmkms does not implement is an UnsupportedOperationException naming
it (never a ValidationException quoting a shortened list of hsmkms's own).
"""

from __future__ import annotations

from functools import cache

from hsmkms.errors import UnsupportedOperationException, validation_error
from hsmkms.keys.specs import DATA_KEY_PAIR_SPECS
from hsmkms.store.model import KeySpec, KeyUsage

# AWS's order, where responses recorded from AWS KMS show it (its validation messages do
# not follow the model's order). Values the model added since a recording follow, in the
# model's order. CustomerMasterKeySpec holds the same values as KeySpec, listed alike.
_RECORDED_KEY_SPECS = (
    "RSA_2048", "ECC_NIST_P384", "ECC_NIST_P256", "ECC_NIST_P521", "HMAC_384", "RSA_3072",
    "ECC_SECG_P256K1", "RSA_4096", "SYMMETRIC_DEFAULT", "HMAC_256", "HMAC_224", "HMAC_512",
)  # fmt: skip
AWS_ORDER: dict[str, tuple[str, ...]] = {
    "KeySpec": _RECORDED_KEY_SPECS,
    "CustomerMasterKeySpec": _RECORDED_KEY_SPECS,
    "KeyUsageType": ("ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC"),
    "MacAlgorithmSpec": ("HMAC_SHA_384", "HMAC_SHA_256", "HMAC_SHA_224", "HMAC_SHA_512"),
}

# Values the model allows that this release does not implement, by model shape. (The
# README's "Not yet" list; SM2 is AWS's China Regions' algorithm.)
NOT_IMPLEMENTED: dict[str, frozenset[str]] = {
    "KeySpec": frozenset({"SM2", "ML_DSA_44", "ML_DSA_65", "ML_DSA_87"}),
    "CustomerMasterKeySpec": frozenset({"SM2"}),
    "DataKeyPairSpec": frozenset({"SM2"}),
    "SigningAlgorithmSpec": frozenset({"SM2DSA", "ML_DSA_SHAKE_256", "ED25519_PH_SHA_512"}),
    "EncryptionAlgorithmSpec": frozenset({"SM2PKE"}),
    "AlgorithmSpec": frozenset({"SM2PKE"}),
    "WrappingKeySpec": frozenset({"SM2"}),
    "MessageType": frozenset({"EXTERNAL_MU"}),
    "XksProxyConnectivityType": frozenset({"VPC_ENDPOINT_SERVICE"}),
}
# Shapes whose implemented values hsmkms's own tables list: any other value the model has
# (AWS keeps adding: ML-KEM came in a later botocore) is unsupported, whatever the table
# above says, instead of reaching a handler that does not know it.
IMPLEMENTED: dict[str, frozenset[str]] = {
    "KeySpec": frozenset(KeySpec),
    "CustomerMasterKeySpec": frozenset(KeySpec),
    "KeyUsageType": frozenset(KeyUsage),
    "DataKeyPairSpec": frozenset(DATA_KEY_PAIR_SPECS),
}


@cache
def _model_enums() -> dict[str, tuple[str, ...]]:
    from botocore.loaders import create_loader

    shapes = create_loader().load_service_model("kms", "service-2")["shapes"]
    return {name: tuple(shape["enum"]) for name, shape in shapes.items() if "enum" in shape}


@cache
def listed(shape: str) -> tuple[str, ...]:
    """The values of a model enum, in the order AWS lists them."""
    values = _model_enums()[shape]
    recorded = [v for v in AWS_ORDER.get(shape, ()) if v in values]
    return (*recorded, *(v for v in values if v not in recorded))


def enum_constraint(shape: str) -> str:
    return f"Member must satisfy enum value set: [{', '.join(listed(shape))}]"


def unsupported(shape: str, value: object) -> UnsupportedOperationException | None:
    """The refusal of a model value this release does not implement; None otherwise."""
    implemented = IMPLEMENTED.get(shape)
    if value in NOT_IMPLEMENTED.get(shape, ()) or (
        implemented is not None and value not in implemented
    ):
        return UnsupportedOperationException(
            f"{shape} {value} is not supported by this hsmkms release."
        )
    return None


def check_enum(field: str, value: object, shape: str) -> str:
    """A request member holding a value of the model enum `shape`, implemented here."""
    if value not in _model_enums()[shape]:
        raise validation_error(field, value, enum_constraint(shape))
    refusal = unsupported(shape, value)
    if refusal is not None:
        raise refusal
    return str(value)
