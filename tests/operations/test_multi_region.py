"""Multi-Region keys on one token: ReplicateKey, UpdatePrimaryRegion, what replicas
share and what they keep to themselves, AWS's deletion rules and errors."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from hsmkms.errors import (
    AlreadyExistsException,
    KMSInvalidStateException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.keys import blob
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.store.postgres import PostgresStore
from hsmkms.token import Hsm
from hsmkms.token.templates import MaterialRef
from tests.conftest import ManualClock

EU = "eu-west-1"
# (KeySpec, KeyUsage) of each key family.
FAMILIES = [
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
    ("HMAC_256", "GENERATE_VERIFY_MAC"),
    ("ECC_NIST_P256", "SIGN_VERIFY"),
    ("RSA_2048", "ENCRYPT_DECRYPT"),
]


def create_mrk(
    km: KeyManager, spec: str = "SYMMETRIC_DEFAULT", usage: str = "ENCRYPT_DECRYPT"
) -> str:
    meta = km.create_key(key_spec=spec, key_usage=usage, multi_region=True)["KeyMetadata"]
    key_id: str = meta["KeyId"]
    assert key_id.startswith("mrk-")
    return key_id


def interoperate(made_in: KeyManager, used_in: KeyManager, key_id: str, spec: str) -> None:
    """What one region makes with the key, the other region's key accepts."""
    if spec == "SYMMETRIC_DEFAULT":
        context = {"purpose": "mrk"}
        data = made_in.encrypt(key_id=key_id, plaintext=b"secret", encryption_context=context)
        back = used_in.decrypt(ciphertext_blob=data["CiphertextBlob"], encryption_context=context)
        assert back["Plaintext"] == b"secret"
        assert back["KeyId"] == used_in.describe_key(key_id=key_id)["KeyMetadata"]["Arn"]
    elif spec.startswith("HMAC"):
        mac = made_in.generate_mac(key_id=key_id, message=b"m", mac_algorithm="HMAC_SHA_256")
        checked = used_in.verify_mac(
            key_id=key_id, message=b"m", mac_algorithm="HMAC_SHA_256", mac=mac["Mac"]
        )
        assert checked["MacValid"] is True
    elif spec.startswith("ECC"):
        signed = made_in.sign(key_id=key_id, message=b"m", signing_algorithm="ECDSA_SHA_256")
        checked = used_in.verify(
            key_id=key_id, message=b"m", signature=signed["Signature"],
            signing_algorithm="ECDSA_SHA_256",
        )  # fmt: skip
        assert checked["SignatureValid"] is True
        assert (
            made_in.get_public_key(key_id=key_id)["PublicKey"]
            == used_in.get_public_key(key_id=key_id)["PublicKey"]
        )
    else:
        algorithm = "RSAES_OAEP_SHA_1"  # the OAEP hash every software token unwraps with
        data = made_in.encrypt(key_id=key_id, plaintext=b"secret", encryption_algorithm=algorithm)
        back = used_in.decrypt(
            key_id=key_id, ciphertext_blob=data["CiphertextBlob"], encryption_algorithm=algorithm
        )
        assert back["Plaintext"] == b"secret"


@pytest.fixture
def eu(km: KeyManager) -> KeyManager:
    return km.for_region(EU)


@pytest.mark.parametrize(("spec", "usage"), FAMILIES)
def test_replica_and_primary_interoperate_for_every_key_family(
    km: KeyManager, eu: KeyManager, hsm: Hsm, spec: str, usage: str
) -> None:
    key_id = create_mrk(km, spec, usage)
    objects = len(hsm.facts(MaterialRef(key_id, 1)))
    km.replicate_key(key_id=key_id, replica_region=EU)
    interoperate(km, eu, key_id, spec)
    interoperate(eu, km, key_id, spec)
    # One token for both regions: the replica uses the primary's objects, no copy.
    assert len(hsm.facts(MaterialRef(key_id, 1))) == objects


def test_describe_key_shows_the_multi_region_configuration(km: KeyManager, eu: KeyManager) -> None:
    key_id = create_mrk(km)
    response = km.replicate_key(
        key_id=key_id,
        replica_region=EU,
        description="eu copy",
        tags=[{"TagKey": "t", "TagValue": "v"}],
    )
    replica = response["ReplicaKeyMetadata"]
    primary_arn = f"arn:aws:kms:us-east-1:111122223333:key/{key_id}"
    replica_arn = f"arn:aws:kms:{EU}:111122223333:key/{key_id}"
    assert replica["Arn"] == replica_arn and replica["KeyId"] == key_id
    assert replica["Description"] == "eu copy" and replica["KeyState"] == "Enabled"
    assert response["ReplicaTags"] == [{"TagKey": "t", "TagValue": "v"}]
    assert '"Statement"' in response["ReplicaPolicy"]
    expected = {
        "PrimaryKey": {"Arn": primary_arn, "Region": "us-east-1"},
        "ReplicaKeys": [{"Arn": replica_arn, "Region": EU}],
    }
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "PRIMARY", **expected,
    }  # fmt: skip
    assert eu.describe_key(key_id=replica_arn)["KeyMetadata"]["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "REPLICA", **expected,
    }  # fmt: skip
    assert [k["KeyArn"] for k in eu.list_keys()["Keys"]] == [replica_arn]


def test_replicas_keep_their_own_state_description_tags_policy_aliases_grants(
    km: KeyManager, eu: KeyManager
) -> None:
    key_id = create_mrk(km)
    km.replicate_key(key_id=key_id, replica_region=EU)
    eu.update_key_description(key_id=key_id, description="only in eu")
    eu.tag_resource(key_id=key_id, tags=[{"TagKey": "region", "TagValue": "eu"}])
    eu.create_alias(alias_name="alias/eu-only", target_key_id=key_id)
    grant = eu.create_grant(
        key_id=key_id,
        grantee_principal="arn:aws:iam::111122223333:user/g",
        operations=["Encrypt"],
    )
    eu.disable_key(key_id=key_id)
    primary = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert primary["Description"] == "" and primary["Enabled"] is True
    assert km.list_resource_tags(key_id=key_id)["Tags"] == []
    assert km.list_aliases(key_id=key_id)["Aliases"] == []
    assert km.list_grants(key_id=key_id)["Grants"] == []
    assert [g["GrantId"] for g in eu.list_grants(key_id=key_id)["Grants"]] == [grant["GrantId"]]
    km.encrypt(key_id=key_id, plaintext=b"x")  # the primary is still enabled
    with pytest.raises(Exception, match="disabled"):
        eu.encrypt(key_id="alias/eu-only", plaintext=b"x")


def test_documented_errors(km: KeyManager, eu: KeyManager, key_id: str) -> None:
    with pytest.raises(UnsupportedOperationException, match="not a multi-Region key"):
        km.replicate_key(key_id=key_id, replica_region=EU)
    mrk = create_mrk(km)
    with pytest.raises(ValidationException):
        km.replicate_key(key_id=mrk, replica_region="us-east-1")
    with pytest.raises(ValidationException, match="replicaRegion"):
        km.replicate_key(key_id=mrk, replica_region="Mars")
    km.replicate_key(key_id=mrk, replica_region=EU)
    with pytest.raises(AlreadyExistsException):
        km.replicate_key(key_id=mrk, replica_region=EU)
    with pytest.raises(UnsupportedOperationException, match="not a multi-region primary key"):
        eu.replicate_key(key_id=mrk, replica_region="ap-south-1")
    with pytest.raises(NotFoundException):
        km.update_primary_region(key_id=mrk, primary_region="ap-south-1")
    with pytest.raises(UnsupportedOperationException, match="not a multi-region primary key"):
        eu.update_primary_region(key_id=mrk, primary_region="us-east-1")
    for rotation in (eu.enable_key_rotation, eu.rotate_key_on_demand, eu.disable_key_rotation):
        with pytest.raises(UnsupportedOperationException, match="primary"):
            rotation(key_id=mrk)
    with pytest.raises(NotFoundException):
        km.for_region("ap-south-1").describe_key(key_id=mrk)


def test_update_primary_region_swaps_roles(km: KeyManager, eu: KeyManager) -> None:
    key_id = create_mrk(km)
    km.replicate_key(key_id=key_id, replica_region=EU)
    km.replicate_key(key_id=key_id, replica_region="ap-south-1")
    km.update_primary_region(key_id=key_id, primary_region=EU)
    config = km.describe_key(key_id=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
    assert config["MultiRegionKeyType"] == "REPLICA"
    assert config["PrimaryKey"]["Region"] == EU
    assert [r["Region"] for r in config["ReplicaKeys"]] == ["ap-south-1", "us-east-1"]
    assert (
        eu.describe_key(key_id=key_id)["KeyMetadata"]["MultiRegionConfiguration"][
            "MultiRegionKeyType"
        ]
        == "PRIMARY"
    )
    with pytest.raises(UnsupportedOperationException):  # us-east-1 is a replica now
        km.replicate_key(key_id=key_id, replica_region="us-west-2")
    eu.replicate_key(key_id=key_id, replica_region="us-west-2")
    interoperate(km.for_region("us-west-2"), km, key_id, "SYMMETRIC_DEFAULT")


def test_rotation_is_done_on_the_primary_and_shared(km: KeyManager, eu: KeyManager) -> None:
    key_id = create_mrk(km)
    km.replicate_key(key_id=key_id, replica_region=EU)
    km.enable_key_rotation(key_id=key_id, rotation_period_in_days=90)
    status = eu.get_key_rotation_status(key_id=key_id)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 90
    old = eu.encrypt(key_id=key_id, plaintext=b"v1")["CiphertextBlob"]
    km.rotate_key_on_demand(key_id=key_id)
    new = eu.encrypt(key_id=key_id, plaintext=b"v2")["CiphertextBlob"]
    assert (blob.decode(old).version, blob.decode(new).version) == (1, 2)
    assert km.decrypt(ciphertext_blob=new)["Plaintext"] == b"v2"
    assert eu.decrypt(ciphertext_blob=old)["Plaintext"] == b"v1"
    assert len(eu.list_key_rotations(key_id=key_id)["Rotations"]) == 1


def test_a_primary_with_replicas_waits_for_them(
    km: KeyManager, eu: KeyManager, hsm: Hsm, clock: ManualClock
) -> None:
    key_id = create_mrk(km)
    km.replicate_key(key_id=key_id, replica_region=EU)
    scheduled = km.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
    assert scheduled["KeyState"] == "PendingReplicaDeletion" and "DeletionDate" not in scheduled
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingReplicaDeletion" and "DeletionDate" not in meta
    assert meta["PendingDeletionWindowInDays"] == 7
    with pytest.raises(KMSInvalidStateException):
        km.encrypt(key_id=key_id, plaintext=b"x")
    with pytest.raises(KMSInvalidStateException):
        km.replicate_key(key_id=key_id, replica_region="ap-south-1")
    ciphertext = eu.encrypt(key_id=key_id, plaintext=b"x")["CiphertextBlob"]  # replica works
    clock.advance(days=60)
    assert km.maintain().deleted == []  # the primary waits; the replica is not scheduled
    eu.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
    clock.advance(days=7)
    assert km.maintain().deleted == [f"arn:aws:kms:{EU}:111122223333:key/{key_id}"]
    assert hsm.facts(MaterialRef(key_id, 1))  # the primary's objects stay: it still exists
    meta = km.describe_key(key_id=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion"
    assert meta["DeletionDate"] == clock.now + timedelta(days=7)
    assert meta["MultiRegionConfiguration"]["ReplicaKeys"] == []
    km.cancel_key_deletion(key_id=key_id)
    km.enable_key(key_id=key_id)
    assert km.decrypt(ciphertext_blob=ciphertext)["Plaintext"] == b"x"
    km.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
    clock.advance(days=7)
    assert len(km.maintain().deleted) == 1
    assert hsm.facts(MaterialRef(key_id, 1)) == []


def test_cancel_deletion_of_a_primary_waiting_for_replicas(km: KeyManager) -> None:
    key_id = create_mrk(km)
    km.replicate_key(key_id=key_id, replica_region=EU)
    km.schedule_key_deletion(key_id=key_id)
    km.cancel_key_deletion(key_id=key_id)
    assert km.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


def test_boto3_over_http_in_two_regions(server: Any) -> None:
    east, west = server.client(), server.client(region=EU)
    key_id = east.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    replica = east.replicate_key(KeyId=key_id, ReplicaRegion=EU, Description="eu")
    meta = replica["ReplicaKeyMetadata"]
    assert meta["Arn"].startswith(f"arn:aws:kms:{EU}:") and meta["Description"] == "eu"
    assert meta["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"
    data = east.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionContext={"a": "b"})
    back = west.decrypt(CiphertextBlob=data["CiphertextBlob"], EncryptionContext={"a": "b"})
    assert back["Plaintext"] == b"x" and back["KeyId"] == meta["Arn"]

    mac_key = east.create_key(MultiRegion=True, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    mac_id = mac_key["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=mac_id, ReplicaRegion=EU)
    mac = west.generate_mac(KeyId=mac_id, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert east.verify_mac(KeyId=mac_id, Message=b"m", MacAlgorithm="HMAC_SHA_256", Mac=mac)[
        "MacValid"
    ]
    signer = east.create_key(MultiRegion=True, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    signer_id = signer["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=signer_id, ReplicaRegion=EU)
    signature = east.sign(KeyId=signer_id, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    assert west.verify(
        KeyId=signer_id, Message=b"m", Signature=signature["Signature"],
        SigningAlgorithm="ECDSA_SHA_256",
    )["SignatureValid"]  # fmt: skip

    east.update_primary_region(KeyId=key_id, PrimaryRegion=EU)
    config = west.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
    assert config["MultiRegionKeyType"] == "PRIMARY" and config["PrimaryKey"]["Region"] == EU
    with pytest.raises(ClientError) as refused:
        east.replicate_key(KeyId=key_id, ReplicaRegion="ap-south-1")  # a replica now
    assert refused.value.response["Error"]["Code"] == "UnsupportedOperationException"
    with pytest.raises(ClientError) as again:
        west.replicate_key(KeyId=key_id, ReplicaRegion="us-east-1")
    assert again.value.response["Error"]["Code"] == "AlreadyExistsException"
    scheduled = west.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert scheduled["KeyState"] == "PendingReplicaDeletion" and "DeletionDate" not in scheduled
    assert scheduled["PendingWindowInDays"] == 7
    west.cancel_key_deletion(KeyId=key_id)


def test_replicate_key_refuses_a_region_this_hsmkms_does_not_serve(km: KeyManager) -> None:
    km.deployment.served_regions = frozenset({"us-east-1", EU})  # as bootstrap sets it
    key_id = create_mrk(km)
    with pytest.raises(UnsupportedOperationException, match="does not serve ap-south-1"):
        km.replicate_key(key_id=key_id, replica_region="ap-south-1")
    km.replicate_key(key_id=key_id, replica_region=EU)


def test_a_grant_on_the_primary_does_not_open_the_replica(server: Any) -> None:
    """Grants are each key's own: the authorizer sees only its region's grants."""
    name = f"grantee-{uuid.uuid4().hex[:8]}"
    grantee = f"arn:aws:iam::111122223333:user/{name}"
    east, west = server.client(), server.client(region=EU)
    key_id = east.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=EU)
    east.create_grant(KeyId=key_id, GranteePrincipal=grantee, Operations=["Encrypt"])
    as_grantee_east = server.principal(name)
    assert as_grantee_east.encrypt(KeyId=key_id, Plaintext=b"x")["KeyId"].endswith(key_id)
    as_grantee_west = server.principal(name, region=EU)  # a second access key
    with pytest.raises(ClientError) as refused:
        as_grantee_west.encrypt(KeyId=key_id, Plaintext=b"x")
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert west.list_grants(KeyId=key_id)["Grants"] == []
    west.create_grant(KeyId=key_id, GranteePrincipal=grantee, Operations=["Encrypt"])
    assert as_grantee_west.encrypt(KeyId=key_id, Plaintext=b"x")["KeyId"].startswith(
        f"arn:aws:kms:{EU}:"
    )


def _allow(*actions: str, resource: str = "*") -> str:
    statement = {"Effect": "Allow", "Action": list(actions), "Resource": resource}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def test_the_other_regions_permissions_are_checked_too(server: Any) -> None:
    """ReplicateKey needs kms:CreateKey in the replica Region; UpdatePrimaryRegion needs
    kms:UpdatePrimaryRegion on the replica key as well as on the primary."""
    admin = server.client()
    key_id = admin.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    only_replicate = server.principal(f"r-{uuid.uuid4().hex[:8]}", _allow("kms:ReplicateKey"))
    with pytest.raises(ClientError) as refused:
        only_replicate.replicate_key(KeyId=key_id, ReplicaRegion=EU)
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "kms:CreateKey" in refused.value.response["Error"]["Message"]
    replicator = server.principal(  # PutKeyPolicy: the replica's lockout safety check
        f"r-{uuid.uuid4().hex[:8]}",
        _allow("kms:ReplicateKey", "kms:CreateKey", "kms:PutKeyPolicy"),
    )
    replicator.replicate_key(KeyId=key_id, ReplicaRegion=EU)

    east_only = server.principal(
        f"u-{uuid.uuid4().hex[:8]}",
        _allow("kms:UpdatePrimaryRegion", resource="arn:aws:kms:us-east-1:111122223333:key/*"),
    )
    with pytest.raises(ClientError) as refused:
        east_only.update_primary_region(KeyId=key_id, PrimaryRegion=EU)
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    both = server.principal(f"u-{uuid.uuid4().hex[:8]}", _allow("kms:UpdatePrimaryRegion"))
    both.update_primary_region(KeyId=key_id, PrimaryRegion=EU)
    config = admin.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
    assert config["PrimaryKey"]["Region"] == EU


def test_on_postgresql(hsm: Hsm, pg_url: str, clock: ManualClock) -> None:
    """The same flows over the PostgreSQL store (row locks on every row of the key)."""
    store = PostgresStore(pg_url)
    try:
        km = KeyManager(Deployment(store, hsm, account_id="111122223333", clock=clock), "us-east-1")
        eu = km.for_region(EU)
        key_id = create_mrk(km)
        km.replicate_key(key_id=key_id, replica_region=EU)
        interoperate(km, eu, key_id, "SYMMETRIC_DEFAULT")
        km.rotate_key_on_demand(key_id=key_id)
        assert blob.decode(eu.encrypt(key_id=key_id, plaintext=b"x")["CiphertextBlob"]).version == 2
        km.update_primary_region(key_id=key_id, primary_region=EU)
        eu.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
        km.schedule_key_deletion(key_id=key_id, pending_window_in_days=7)
        assert eu.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "PendingReplicaDeletion"
        clock.advance(days=7)
        km.maintain()
        assert eu.describe_key(key_id=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
        clock.advance(days=7)
        km.maintain()
        with pytest.raises(NotFoundException):
            eu.describe_key(key_id=key_id)
        assert hsm.facts(MaterialRef(key_id, 1)) == [] and hsm.facts(MaterialRef(key_id, 2)) == []
    finally:
        store.close()
