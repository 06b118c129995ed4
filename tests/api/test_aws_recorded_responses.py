"""Successful responses as AWS KMS returns them (issue "Exactly AWS, second pass"):
which members are present, and their values, against responses recorded from AWS KMS.
Also the request shapes no handler may receive incomplete, and GenerateDataKeyPair
with Ed25519, which the AWS CLI and botocore's model allow."""

from __future__ import annotations

import copy
import re
from typing import Any

import botocore.session
import pytest
from botocore.model import ServiceModel
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from hsmkms.api import kms as kms_edge
from hsmkms.errors import ValidationException
from hsmkms.library import KeyManager
from hsmkms.operations.table import OPERATIONS
from tests.api.test_aws_recorded_errors import OTHER_REGION, created, wire
from tests.conftest import Server, skip_unless_supported
from tests.operations.test_imports import import_material, pkcs8

MATERIAL_ID = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def kms(server: Server) -> Any:
    return server.client()


# -- KeyMetadata.CurrentKeyMaterialId ---------------------------------------------------


def test_current_key_material_id_of_symmetric_kms_keys(kms: Any) -> None:
    made = created(kms)
    first = made["CurrentKeyMaterialId"]
    assert MATERIAL_ID.match(first)
    assert kms.describe_key(KeyId=made["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"] == first
    kms.rotate_key_on_demand(KeyId=made["KeyId"])
    rotated = kms.describe_key(KeyId=made["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"]
    assert MATERIAL_ID.match(rotated) and rotated != first
    assert created(kms)["CurrentKeyMaterialId"] not in (first, rotated)


def test_current_key_material_id_of_multi_region_keys(server: Server, kms: Any) -> None:
    primary = created(kms, MultiRegion=True)
    assert MATERIAL_ID.match(primary["CurrentKeyMaterialId"])
    replica = kms.replicate_key(KeyId=primary["KeyId"], ReplicaRegion=OTHER_REGION)
    shown = server.client(OTHER_REGION).describe_key(KeyId=primary["KeyId"])["KeyMetadata"]
    # One key material shared by the related keys: one id.
    assert shown["CurrentKeyMaterialId"] == primary["CurrentKeyMaterialId"]
    assert replica["ReplicaKeyMetadata"]["CurrentKeyMaterialId"] == shown["CurrentKeyMaterialId"]


@pytest.mark.parametrize(
    ("spec", "usage"),
    [("HMAC_256", "GENERATE_VERIFY_MAC"), ("ECC_NIST_P256", "SIGN_VERIFY"),
     ("RSA_2048", "ENCRYPT_DECRYPT")],
)  # fmt: skip
def test_no_current_key_material_id_on_other_specs(kms: Any, spec: str, usage: str) -> None:
    made = created(kms, KeySpec=spec, KeyUsage=usage)
    assert "CurrentKeyMaterialId" not in made
    assert "CurrentKeyMaterialId" not in kms.describe_key(KeyId=made["KeyId"])["KeyMetadata"]


def test_current_key_material_id_of_imported_keys(km: KeyManager) -> None:
    """Symmetric EXTERNAL keys show it once material was imported (still after it is
    deleted again, as AWS shows it); imported ECC keys never."""
    ecc = km.create_key(origin="EXTERNAL", key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY")
    ecc_id = ecc["KeyMetadata"]["KeyId"]
    skip_unless_supported(
        km.hsm, lambda: import_material(km, ecc_id, pkcs8(ec.generate_private_key(ec.SECP256R1())))
    )
    meta = km.describe_key(key_id=ecc_id)["KeyMetadata"]
    assert meta["KeyState"] == "Enabled" and "CurrentKeyMaterialId" not in meta
    symmetric = km.create_key(origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    assert "CurrentKeyMaterialId" not in km.describe_key(key_id=symmetric)["KeyMetadata"]
    imported = import_material(km, symmetric, b"\x07" * 32)
    meta = km.describe_key(key_id=symmetric)["KeyMetadata"]
    assert meta["CurrentKeyMaterialId"] == imported["KeyMaterialId"]
    km.delete_imported_key_material(key_id=symmetric)
    meta = km.describe_key(key_id=symmetric)["KeyMetadata"]
    assert meta["KeyState"] == "PendingImport"
    assert meta["CurrentKeyMaterialId"] == imported["KeyMaterialId"]


# -- RotateKeyOnDemand, ReplicateKey ---------------------------------------------------


def test_rotate_key_on_demand_answers_the_key_arn(server: Server, kms: Any) -> None:
    made = created(kms)
    assert wire(server, "RotateKeyOnDemand", {"KeyId": made["KeyId"]}) == (
        200,
        {"KeyId": made["Arn"]},
    )


def test_replicate_key_leaves_replica_tags_out_when_there_are_none(
    server: Server, kms: Any
) -> None:
    bare = created(kms, MultiRegion=True)
    status, answer = wire(server, "ReplicateKey", {"KeyId": bare["KeyId"],
                                                   "ReplicaRegion": OTHER_REGION})  # fmt: skip
    assert status == 200 and sorted(answer) == ["ReplicaKeyMetadata", "ReplicaPolicy"]
    tagged = created(kms, MultiRegion=True)
    tags = [{"TagKey": "team", "TagValue": "blue"}]
    body = {"KeyId": tagged["KeyId"], "ReplicaRegion": OTHER_REGION, "Tags": tags}
    status, answer = wire(server, "ReplicateKey", body)
    assert status == 200 and answer["ReplicaTags"] == tags


# -- DryRun of GenerateDataKeyPair(+WithoutPlaintext): AWS answers it with 400 ----------


@pytest.mark.parametrize("op", ["GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"])
def test_dry_run_of_data_key_pairs_is_a_400(server: Server, kms: Any, op: str) -> None:
    key = created(kms)["KeyId"]
    body = {"KeyId": key, "KeyPairSpec": "RSA_2048", "DryRun": True}
    assert wire(server, op, body) == (
        400,
        {
            "__type": "DryRunOperationException",
            "message": "The request would have succeeded, but the DryRun option is set.",
        },
    )
    # the other operations keep the 412 AWS's API Reference documents
    assert wire(server, "Encrypt", {"KeyId": key, "Plaintext": "eA==", "DryRun": True})[0] == 412


# -- GenerateDataKeyPair with Ed25519 ----------------------------------------------------


@pytest.mark.needs_mechanism("EC_EDWARDS_KEY_PAIR_GEN")
def test_data_key_pair_ed25519(kms: Any) -> None:
    key = created(kms)["KeyId"]
    pair = kms.generate_data_key_pair(
        KeyId=key, KeyPairSpec="ECC_NIST_EDWARDS25519", EncryptionContext={"app": "x"}
    )
    assert pair["KeyPairSpec"] == "ECC_NIST_EDWARDS25519"
    private = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    public = serialization.load_der_public_key(pair["PublicKey"])
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(private.sign(b"data"), b"data")  # the two halves belong together
    unwrapped = kms.decrypt(
        CiphertextBlob=pair["PrivateKeyCiphertextBlob"], EncryptionContext={"app": "x"}
    )["Plaintext"]
    assert unwrapped == pair["PrivateKeyPlaintext"]
    bare = kms.generate_data_key_pair_without_plaintext(
        KeyId=key, KeyPairSpec="ECC_NIST_EDWARDS25519"
    )
    assert "PrivateKeyPlaintext" not in bare
    again = kms.decrypt(CiphertextBlob=bare["PrivateKeyCiphertextBlob"])["Plaintext"]
    half = serialization.load_der_private_key(again, None).public_key()
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert half.public_bytes(*spki) == bare["PublicKey"]


# -- required members: the model's, and every keyword the handler cannot do without -----


def _model_without_required() -> ServiceModel:
    """botocore's KMS model with every `required` list dropped: what a model that
    loosened a member (as newer ones did for some) would let through."""
    loader = botocore.session.get_session().get_component("data_loader")
    data = copy.deepcopy(loader.load_service_model("kms", "service-2"))
    for shape in data["shapes"].values():
        shape.pop("required", None)
    return ServiceModel(data, "kms")


def test_no_handler_is_called_without_its_required_members(
    km: KeyManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    loose = _model_without_required()
    monkeypatch.setattr(kms_edge, "operation", loose.operation_model)
    faults = []
    for name, op in sorted(OPERATIONS.items()):
        try:
            kms_edge.call(op, km.context, {})
        except ValidationException:
            continue  # refused as a client would be told ("Member must not be null", ...)
        except TypeError as exc:  # the handler was called without a keyword it needs
            faults.append(f"{name}: {exc}")
        except Exception:  # another answer (NotFoundException, ...) is not this test's
            continue
    assert faults == []


def test_list_retirable_grants_without_members(server: Server) -> None:
    for body in (b"", b"{}"):
        response = server.raw("ListRetirableGrants", body)
        assert (response.status_code, response.json()) == (
            400,
            {
                "__type": "ValidationException",
                "message": "1 validation error detected: Value null at 'retiringPrincipal' "
                "failed to satisfy constraint: Member must not be null",
            },
        )
