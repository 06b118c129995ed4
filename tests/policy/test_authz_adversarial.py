"""The generated adversarial suite: every operation of the operation table, against every
kind of key this suite can make, by a principal with no permission, one of another
account (with a kms:* identity policy of its own) and one whose kms:* is explicitly
denied. Every call is refused with AccessDeniedException, nothing changes (the admin's
view of each key and of the account is the same before and after), and every refusal
is in the audit trail with its errorCode.

Where AWS answers otherwise, and so does this suite: the other account's listings
(ListKeys, ListAliases, DescribeCustomKeyStores) succeed and are empty, because they
list its own account, which this server does not hold. Keys are named by ARN here:
another account naming one of ours by key ID or alias name gets NotFoundException, as
AWS looks those up in the caller's own account (tests/policy/test_authz_accounts.py).

Requests are built from botocore's model (tests/api/test_api_validation.py's sampler) with
the suite's keys, aliases, grants and stores put in: a new operation in the table is
covered as soon as it is added (and fails here if its sampled request is refused as
invalid before authorization, until OVERRIDES gives it a valid member).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore import xform_name
from botocore.exceptions import ClientError
from botocore.validate import ParamValidator

from hsmkms.api.shapes import required_members, service_model
from hsmkms.operations.table import OPERATIONS
from hsmkms.policy.needs import Resource
from hsmkms.token import Hsm
from tests.api.test_api_validation import sample
from tests.conftest import REGION, TokenEnv
from tests.keystores.test_external_keystore import external_key
from tests.support.authz_support import (
    ADMIN,
    ATTACKERS,
    EVE,
    ROOT_STATEMENT,
    AuthzServer,
    authz_server,
    cloudhsm_store,
    policy,
    xks_store,
)
from tests.support.xks_support import XksServer

REPLICA_REGION = "eu-west-1"
MODEL = service_model()


@dataclass
class Kind:
    """One key of a kind, with what requests about it need."""

    arn: str
    region: str = REGION
    alias: str = ""
    store: str = ""  # its custom key store, if any
    grant_id: str = ""
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # per operation


@dataclass
class World:
    kinds: dict[str, Kind]
    cloudhsm: str  # the custom key store named by keyless requests of kinds without one


@pytest.fixture(scope="module")
def authz(
    hsm: Hsm,
    tmp_path_factory: pytest.TempPathFactory,
    token_env: TokenEnv,
    xks_server: XksServer,
) -> Iterator[AuthzServer]:
    with authz_server(hsm, tmp_path_factory.mktemp("authz-suite"), token_env, xks_server) as s:
        yield s


def _key(admin: Any, **create: Any) -> str:
    arn: str = admin.create_key(**create)["KeyMetadata"]["Arn"]
    return arn


@pytest.fixture(scope="module")
def world(authz: AuthzServer, token_env: TokenEnv, xks_server: XksServer) -> World:
    admin = authz.client()
    cloudhsm = cloudhsm_store(admin, token_env, "suite-cloudhsm")
    xks = xks_store(admin, "suite-xks")
    primary = _key(admin, MultiRegion=True, Description="primary")
    replica = admin.replicate_key(KeyId=primary, ReplicaRegion=REPLICA_REGION)
    kinds = {
        "symmetric": Kind(_key(admin)),
        "rsa": Kind(_key(admin, KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")),
        "ecc": Kind(_key(admin, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")),
        "hmac": Kind(_key(admin, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")),
        "external": Kind(
            _key(
                admin,
                Origin="EXTERNAL_KEY_STORE",
                CustomKeyStoreId=xks,
                XksKeyId=external_key(xks_server),
            ),
            store=xks,
        ),
        "cloudhsm": Kind(
            _key(admin, Origin="AWS_CLOUDHSM", CustomKeyStoreId=cloudhsm), store=cloudhsm
        ),
        "replica": Kind(replica["ReplicaKeyMetadata"]["Arn"], region=REPLICA_REGION),
    }
    symmetric_blob = admin.encrypt(KeyId=kinds["symmetric"].arn, Plaintext=b"secret")[
        "CiphertextBlob"
    ]
    for name, kind in kinds.items():
        client = authz.client(ADMIN, kind.region)
        kind.alias = f"alias/suite-{name}"
        client.create_alias(AliasName=kind.alias, TargetKeyId=kind.arn)
        client.tag_resource(KeyId=kind.arn, Tags=[{"TagKey": "kind", "TagValue": name}])
        kind.grant_id = client.create_grant(
            KeyId=kind.arn, GranteePrincipal=ADMIN, Operations=["DescribeKey"]
        )["GrantId"]
        kind.members = _crypto_members(admin, name, kind, symmetric_blob, primary)
    return World(kinds, cloudhsm)


def _crypto_members(
    admin: Any, name: str, kind: Kind, symmetric_blob: bytes, primary: str
) -> dict[str, dict[str, Any]]:
    """Decrypt and ReEncrypt of a ciphertext the kind's key made, in the form its kind
    takes (a blob naming its key, or an RSA ciphertext with its KeyId); kinds that
    cannot encrypt present another key's blob with their own KeyId."""
    if name == "rsa":
        oaep = "RSAES_OAEP_SHA_1"
        blob = admin.encrypt(KeyId=kind.arn, Plaintext=b"secret", EncryptionAlgorithm=oaep)[
            "CiphertextBlob"
        ]
        return {
            "Decrypt": {"CiphertextBlob": blob, "KeyId": kind.arn, "EncryptionAlgorithm": oaep},
            "ReEncrypt": {
                "CiphertextBlob": blob,
                "SourceKeyId": kind.arn,
                "SourceEncryptionAlgorithm": oaep,
                "DestinationKeyId": kind.arn,
            },
        }
    if name in ("ecc", "hmac"):
        return {
            "Decrypt": {"CiphertextBlob": symmetric_blob, "KeyId": kind.arn},
            "ReEncrypt": {"CiphertextBlob": symmetric_blob, "DestinationKeyId": kind.arn},
        }
    # The replica is given what its primary encrypted in the primary's region.
    blob = admin.encrypt(KeyId=primary if name == "replica" else kind.arn, Plaintext=b"secret")[
        "CiphertextBlob"
    ]
    return {
        "Decrypt": {"CiphertextBlob": blob},
        "ReEncrypt": {"CiphertextBlob": blob, "DestinationKeyId": kind.arn},
    }


# Members the model's sampler cannot know: the suite's own key, alias, grant and store.
OVERRIDES: dict[str, Callable[[Kind, World, str], Any]] = {
    "KeyId": lambda kind, world, who: kind.arn,
    "TargetKeyId": lambda kind, world, who: kind.arn,
    "DestinationKeyId": lambda kind, world, who: kind.arn,
    "GrantId": lambda kind, world, who: kind.grant_id,
    "CustomKeyStoreId": lambda kind, world, who: kind.store or world.cloudhsm,
    "GranteePrincipal": lambda kind, world, who: who,  # granting itself
    "RetiringPrincipal": lambda kind, world, who: ADMIN,
    "ReplicaRegion": lambda kind, world, who: "eu-central-1",
    "PrimaryRegion": lambda kind, world, who: REPLICA_REGION,
    "Policy": lambda kind, world, who: policy(ROOT_STATEMENT),
    "Tags": lambda kind, world, who: [{"TagKey": "planted", "TagValue": "x"}],
    "TagKeys": lambda kind, world, who: ["kind"],
}


def request(op: str, kind: Kind, world: World, who: str) -> dict[str, Any]:
    shape = MODEL.operation_model(op).input_shape
    members = {} if shape is None else dict(sample(shape))
    # Members the handler cannot do without that a newer model made optional
    # (CreateGrant's GranteePrincipal since grantee service principals came).
    for name in required_members(op, OPERATIONS[op].required) - members.keys():
        if name in OVERRIDES:
            members[name] = OVERRIDES[name](kind, world, who)
    for name in members:
        if name in OVERRIDES:
            members[name] = OVERRIDES[name](kind, world, who)
    if op in ("CreateAlias",):
        members["AliasName"] = kind.alias + "-planted"
    elif "AliasName" in members:
        members["AliasName"] = kind.alias
    if op == "RetireGrant":  # no member is required: name the grant by key and id
        members.update(KeyId=kind.arn, GrantId=kind.grant_id)
    members.update(kind.members.get(op, {}))
    return members


def snapshot(authz: AuthzServer, world: World) -> dict[str, Any]:
    """Everything the admin sees of the suite's keys and of the account."""

    def seen(call: Callable[..., Any], **members: Any) -> Any:
        try:
            answer = call(**members)
        except ClientError as error:
            return error.response["Error"]["Code"]
        answer.pop("ResponseMetadata", None)
        return answer

    view: dict[str, Any] = {}
    for region in (REGION, REPLICA_REGION):
        admin = authz.client(ADMIN, region)
        view[f"keys {region}"] = seen(admin.list_keys)
        view[f"aliases {region}"] = seen(admin.list_aliases)
    admin = authz.client()
    view["stores"] = seen(admin.describe_custom_key_stores)
    view["retirable"] = seen(admin.list_retirable_grants, RetiringPrincipal=ADMIN)
    for name, kind in world.kinds.items():
        client = authz.client(ADMIN, kind.region)
        for what, call in (
            ("key", client.describe_key),
            ("aliases", client.list_aliases),
            ("tags", client.list_resource_tags),
            ("policy", client.get_key_policy),
            ("grants", client.list_grants),
            ("rotation", client.get_key_rotation_status),
            ("rotations", client.list_key_rotations),
        ):
            view[f"{name} {what}"] = seen(call, KeyId=kind.arn)
    return view


LISTINGS = sorted(name for name, op in OPERATIONS.items() if op.resource is Resource.LISTING)


@pytest.mark.parametrize("who", sorted(ATTACKERS))
@pytest.mark.parametrize(
    "kind", ["symmetric", "rsa", "ecc", "hmac", "external", "cloudhsm", "replica"]
)
def test_every_operation_is_refused(authz: AuthzServer, world: World, kind: str, who: str) -> None:
    principal, target = ATTACKERS[who], world.kinds[kind]
    attacker = authz.client(principal, target.region)
    before = snapshot(authz, world)
    refused: dict[str, str] = {}  # request id -> operation
    failures = []
    for op in sorted(OPERATIONS):
        members = request(op, target, world, principal)
        try:
            answer = getattr(attacker, xform_name(op))(**members)
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code == "AccessDeniedException":
                refused[error.response["ResponseMetadata"]["RequestId"]] = op
            else:
                failures.append(f"{op}: {code} {error.response['Error']['Message']}")
            continue
        answer.pop("ResponseMetadata")
        listed = [v for v in answer.values() if isinstance(v, list)]
        if principal == EVE and op in LISTINGS and listed and not any(listed):
            continue  # its own account's listing: empty here
        failures.append(f"{op}: answered {json.dumps(answer, default=str)[:300]}")
    assert not failures, f"{who} on a {kind} key:\n" + "\n".join(failures)
    assert snapshot(authz, world) == before
    trail = authz.records()
    for request_id, op in refused.items():
        record = trail[request_id]
        assert (record["eventName"], record["errorCode"]) == (op, "AccessDeniedException")
        assert record["userIdentity"]["arn"] == principal


def test_every_request_of_the_suite_is_valid() -> None:
    """The suite's request for each operation passes botocore's own validation, so what
    the server refuses is the caller, not the request."""
    kind = Kind(f"arn:aws:kms:{REGION}:111122223333:key/{'0' * 8}-0000-0000-0000-{'0' * 12}")
    kind.alias, kind.grant_id = "alias/suite", "0" * 64
    for op in OPERATIONS:
        shape = MODEL.operation_model(op).input_shape
        members = request(op, kind, World({}, "cks-0123456789abcdef0"), EVE)
        report = ParamValidator().validate(members, shape)
        assert not report.has_errors(), f"{op}: {report.generate_report()}"
    assert LISTINGS == ["DescribeCustomKeyStores", "ListAliases", "ListKeys"]
