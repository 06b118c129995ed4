"""THE operation table: KMS operation name -> handler, and what authorization and the
audit trail need to know about it. The HTTP edge, the CLI, the library and the
authorizer all read this table; nothing is looked up by reflection on names.

A new operation: write `def op(ctx: OperationContext, *, member: type, ...) ->
Response` in the module of its area, then add one line here.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from hsmkms.operations import (
    aliases,
    asymmetric,
    crypto,
    grants,
    imports,
    keys,
    keystores,
    mac,
    policies,
    replication,
    rotation,
    tags,
)
from hsmkms.operations.context import Response
from hsmkms.operations.prechecks import KEY_ID_OR_ARN, Check, alias_name
from hsmkms.policy.needs import Resource

Handler = Callable[..., Response]
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake(name: str) -> str:
    """A KMS member or operation name as a Python keyword: KeyId -> key_id."""
    return _CAMEL.sub("_", name).lower()


@dataclass(frozen=True)
class Operation:
    name: str  # the KMS operation name, e.g. "Encrypt"
    handler: Handler
    resource: Resource  # which key(s) authorization checks
    read_only: bool = False  # for the audit record
    # Checks that need no key: run before authorization (hsmkms.operations.prechecks).
    check: Check | None = None
    # DryRun (https://docs.aws.amazon.com/kms/latest/developerguide/testing-permissions.html):
    # what runs instead of the handler. True: the handler itself, for operations that
    # change nothing (its result is dropped); a function: the handler's checks without
    # its writes; None: the operation takes no DryRun.
    dry_run: Handler | bool | None = None
    # The handler's keyword parameters (KMS members in snake_case), read once, and those
    # without a default: no request reaches the handler without them.
    parameters: frozenset[str] = field(init=False)
    required: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        signature = inspect.signature(self.handler)
        keywords = [p for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]
        object.__setattr__(self, "parameters", frozenset(p.name for p in keywords))
        required = frozenset(p.name for p in keywords if p.default is p.empty)
        object.__setattr__(self, "required", required)
        if self.dry_run is True:
            object.__setattr__(self, "dry_run", self.handler)

    @property
    def method(self) -> str:
        """The library's method name: Encrypt -> encrypt."""
        return snake(self.name)


# Keyless operations act in the caller's own account: ACCOUNT changes or uses it (another
# account is refused), LISTING lists it (another account sees its own, empty here).
KEY, ACCOUNT, LISTING = Resource.KEY, Resource.ACCOUNT, Resource.LISTING

ID_ONLY = KEY_ID_OR_ARN  # KeyId takes a key ID or key ARN, never an alias

_OPERATIONS = (
    # keys
    Operation("CreateKey", keys.create_key, ACCOUNT),
    Operation("DescribeKey", keys.describe_key, KEY, read_only=True),
    Operation("ListKeys", keys.list_keys, LISTING, read_only=True),
    Operation("UpdateKeyDescription", keys.update_key_description, KEY, check=ID_ONLY),
    Operation("EnableKey", keys.enable_key, KEY, check=ID_ONLY),
    Operation("DisableKey", keys.disable_key, KEY, check=ID_ONLY),
    Operation("ScheduleKeyDeletion", keys.schedule_key_deletion, KEY, check=ID_ONLY),
    Operation("CancelKeyDeletion", keys.cancel_key_deletion, KEY, check=ID_ONLY),
    # key policies
    Operation("PutKeyPolicy", policies.put_key_policy, KEY, check=ID_ONLY),
    Operation("GetKeyPolicy", policies.get_key_policy, KEY, read_only=True, check=ID_ONLY),
    Operation("ListKeyPolicies", policies.list_key_policies, KEY, read_only=True, check=ID_ONLY),
    # tags
    Operation("TagResource", tags.tag_resource, KEY, check=ID_ONLY),
    Operation("UntagResource", tags.untag_resource, KEY, check=ID_ONLY),
    Operation("ListResourceTags", tags.list_resource_tags, KEY, read_only=True, check=ID_ONLY),
    # aliases
    Operation("CreateAlias", aliases.create_alias, Resource.NEW_ALIAS,
              check=alias_name(creating=True)),
    Operation("UpdateAlias", aliases.update_alias, Resource.TARGET_KEY,
              check=alias_name(creating=True)),
    Operation("DeleteAlias", aliases.delete_alias, Resource.ALIAS,
              check=alias_name(creating=False)),
    Operation("ListAliases", aliases.list_aliases, LISTING, read_only=True, check=ID_ONLY),
    # symmetric cryptography
    Operation("Encrypt", crypto.encrypt, KEY, dry_run=True),
    Operation("Decrypt", crypto.decrypt, Resource.CIPHERTEXT, dry_run=True),
    Operation("ReEncrypt", crypto.re_encrypt, Resource.REENCRYPT, dry_run=True),
    Operation("GenerateDataKey", crypto.generate_data_key, KEY, dry_run=True),
    Operation("GenerateDataKeyWithoutPlaintext", crypto.generate_data_key_without_plaintext,
              KEY, dry_run=True),
    Operation("GenerateRandom", crypto.generate_random, ACCOUNT),
    # asymmetric keys
    Operation("Sign", asymmetric.sign, KEY, dry_run=True),
    Operation("Verify", asymmetric.verify, KEY, dry_run=True),
    Operation("GetPublicKey", asymmetric.get_public_key, KEY, read_only=True),
    Operation("DeriveSharedSecret", asymmetric.derive_shared_secret, KEY, dry_run=True),
    Operation("GenerateDataKeyPair", asymmetric.generate_data_key_pair, KEY, dry_run=True),
    Operation("GenerateDataKeyPairWithoutPlaintext",
              asymmetric.generate_data_key_pair_without_plaintext, KEY, dry_run=True),
    # MACs
    Operation("GenerateMac", mac.generate_mac, KEY, dry_run=True),
    Operation("VerifyMac", mac.verify_mac, KEY, dry_run=True),
    # rotation
    Operation("EnableKeyRotation", rotation.enable_key_rotation, KEY, check=ID_ONLY),
    Operation("DisableKeyRotation", rotation.disable_key_rotation, KEY, check=ID_ONLY),
    Operation("GetKeyRotationStatus", rotation.get_key_rotation_status, KEY, read_only=True,
              check=ID_ONLY),
    Operation("RotateKeyOnDemand", rotation.rotate_key_on_demand, KEY, check=ID_ONLY),
    Operation("ListKeyRotations", rotation.list_key_rotations, KEY, read_only=True,
              check=ID_ONLY),
    # grants
    Operation("CreateGrant", grants.create_grant, KEY, check=ID_ONLY,
              dry_run=grants.create_grant_dry_run),
    Operation("ListGrants", grants.list_grants, KEY, read_only=True, check=ID_ONLY),
    Operation("ListRetirableGrants", grants.list_retirable_grants, Resource.RETIRING_PRINCIPAL,
              read_only=True),
    Operation("RetireGrant", grants.retire_grant, Resource.GRANT, check=ID_ONLY,
              dry_run=grants.find_named_grant),
    Operation("RevokeGrant", grants.revoke_grant, KEY, check=ID_ONLY,
              dry_run=grants.find_named_grant),
    # imported key material (Origin EXTERNAL)
    Operation("GetParametersForImport", imports.get_parameters_for_import, KEY, check=ID_ONLY),
    Operation("ImportKeyMaterial", imports.import_key_material, KEY, check=ID_ONLY),
    Operation("DeleteImportedKeyMaterial", imports.delete_imported_key_material, KEY,
              check=ID_ONLY),
    # multi-Region keys
    Operation("ReplicateKey", replication.replicate_key, KEY, check=ID_ONLY),
    Operation("UpdatePrimaryRegion", replication.update_primary_region, KEY, check=ID_ONLY),
    # custom key stores (IAM-only permissions: no key to check)
    Operation("CreateCustomKeyStore", keystores.create_custom_key_store, ACCOUNT),
    Operation("DescribeCustomKeyStores", keystores.describe_custom_key_stores, LISTING,
              read_only=True),
    Operation("ConnectCustomKeyStore", keystores.connect_custom_key_store, ACCOUNT),
    Operation("DisconnectCustomKeyStore", keystores.disconnect_custom_key_store, ACCOUNT),
    Operation("UpdateCustomKeyStore", keystores.update_custom_key_store, ACCOUNT),
    Operation("DeleteCustomKeyStore", keystores.delete_custom_key_store, ACCOUNT),
)  # fmt: skip

OPERATIONS: dict[str, Operation] = {op.name: op for op in _OPERATIONS}
# The same operations by library method name (encrypt, create_key, ...).
BY_METHOD: dict[str, Operation] = {op.method: op for op in _OPERATIONS}
