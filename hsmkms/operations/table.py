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
    keys,
    keystores,
    mac,
    policies,
    rotation,
    tags,
)
from hsmkms.operations.context import Response
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
    # The handler's keyword parameters (KMS members in snake_case), read once.
    parameters: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        signature = inspect.signature(self.handler)
        names = [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]
        object.__setattr__(self, "parameters", frozenset(names))

    @property
    def method(self) -> str:
        """The library's method name: Encrypt -> encrypt."""
        return snake(self.name)


KEY, KEYLESS = Resource.KEY, Resource.KEYLESS

_OPERATIONS = (
    # keys
    Operation("CreateKey", keys.create_key, KEYLESS),
    Operation("DescribeKey", keys.describe_key, KEY, read_only=True),
    Operation("ListKeys", keys.list_keys, KEYLESS, read_only=True),
    Operation("UpdateKeyDescription", keys.update_key_description, KEY),
    Operation("EnableKey", keys.enable_key, KEY),
    Operation("DisableKey", keys.disable_key, KEY),
    Operation("ScheduleKeyDeletion", keys.schedule_key_deletion, KEY),
    Operation("CancelKeyDeletion", keys.cancel_key_deletion, KEY),
    # key policies
    Operation("PutKeyPolicy", policies.put_key_policy, KEY),
    Operation("GetKeyPolicy", policies.get_key_policy, KEY, read_only=True),
    Operation("ListKeyPolicies", policies.list_key_policies, KEY, read_only=True),
    # tags
    Operation("TagResource", tags.tag_resource, KEY),
    Operation("UntagResource", tags.untag_resource, KEY),
    Operation("ListResourceTags", tags.list_resource_tags, KEY, read_only=True),
    # aliases
    Operation("CreateAlias", aliases.create_alias, Resource.TARGET_KEY),
    Operation("UpdateAlias", aliases.update_alias, Resource.TARGET_KEY),
    Operation("DeleteAlias", aliases.delete_alias, Resource.ALIAS),
    Operation("ListAliases", aliases.list_aliases, KEYLESS, read_only=True),
    # symmetric cryptography
    Operation("Encrypt", crypto.encrypt, KEY),
    Operation("Decrypt", crypto.decrypt, Resource.CIPHERTEXT),
    Operation("ReEncrypt", crypto.re_encrypt, Resource.REENCRYPT),
    Operation("GenerateDataKey", crypto.generate_data_key, KEY),
    Operation("GenerateDataKeyWithoutPlaintext", crypto.generate_data_key_without_plaintext, KEY),
    Operation("GenerateRandom", crypto.generate_random, KEYLESS),
    # asymmetric keys
    Operation("Sign", asymmetric.sign, KEY),
    Operation("Verify", asymmetric.verify, KEY),
    Operation("GetPublicKey", asymmetric.get_public_key, KEY, read_only=True),
    Operation("DeriveSharedSecret", asymmetric.derive_shared_secret, KEY),
    Operation("GenerateDataKeyPair", asymmetric.generate_data_key_pair, KEY),
    Operation(
        "GenerateDataKeyPairWithoutPlaintext",
        asymmetric.generate_data_key_pair_without_plaintext,
        KEY,
    ),
    # MACs
    Operation("GenerateMac", mac.generate_mac, KEY),
    Operation("VerifyMac", mac.verify_mac, KEY),
    # rotation
    Operation("EnableKeyRotation", rotation.enable_key_rotation, KEY),
    Operation("DisableKeyRotation", rotation.disable_key_rotation, KEY),
    Operation("GetKeyRotationStatus", rotation.get_key_rotation_status, KEY, read_only=True),
    Operation("RotateKeyOnDemand", rotation.rotate_key_on_demand, KEY),
    Operation("ListKeyRotations", rotation.list_key_rotations, KEY, read_only=True),
    # grants
    Operation("CreateGrant", grants.create_grant, KEY),
    Operation("ListGrants", grants.list_grants, KEY, read_only=True),
    Operation("ListRetirableGrants", grants.list_retirable_grants, KEYLESS, read_only=True),
    Operation("RetireGrant", grants.retire_grant, Resource.GRANT),
    Operation("RevokeGrant", grants.revoke_grant, KEY),
    # custom key stores (IAM-only permissions: no key to check)
    Operation("CreateCustomKeyStore", keystores.create_custom_key_store, KEYLESS),
    Operation(
        "DescribeCustomKeyStores", keystores.describe_custom_key_stores, KEYLESS, read_only=True
    ),
    Operation("ConnectCustomKeyStore", keystores.connect_custom_key_store, KEYLESS),
    Operation("DisconnectCustomKeyStore", keystores.disconnect_custom_key_store, KEYLESS),
    Operation("UpdateCustomKeyStore", keystores.update_custom_key_store, KEYLESS),
    Operation("DeleteCustomKeyStore", keystores.delete_custom_key_store, KEYLESS),
)

OPERATIONS: dict[str, Operation] = {op.name: op for op in _OPERATIONS}
# The same operations by library method name (encrypt, create_key, ...).
BY_METHOD: dict[str, Operation] = {op.method: op for op in _OPERATIONS}
