"""KeyManager: one method per KMS operation, with KMS's names, limits and errors.

Methods take keyword arguments named after the KMS request fields (snake_case)
and return dicts with KMS's response field names, so the HTTP and CLI edges map
them one to one. Dates are timezone-aware datetimes; the edges format them.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from hsmkms.asymmetric import AsymmetricOperations
from hsmkms.checks import check_bytes, check_enum, check_limit, check_range, offset_page
from hsmkms.clock import Clock, system_clock
from hsmkms.errors import (
    AlreadyExistsException,
    IncorrectKeyException,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    InvalidMarkerException,
    LimitExceededException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
    validation_error,
)
from hsmkms.grants import GrantOperations
from hsmkms.keys import blob, context, ids, lifecycle
from hsmkms.keys import tags as keytags
from hsmkms.keys.lifecycle import Use
from hsmkms.keys.metadata import key_metadata
from hsmkms.keys.model import (
    Alias,
    KeyRecord,
    KeySpec,
    KeyState,
    KeyUsage,
    Origin,
    RotationType,
)
from hsmkms.keys.resolved import Resolved
from hsmkms.keys.specs import SPECS
from hsmkms.material import CrashHook, MaterialKeeper, ReconcileReport
from hsmkms.policy.authorize import Authorizer
from hsmkms.policy.caller import current_caller
from hsmkms.policy.model import MalformedPolicyDocumentException, default_key_policy, parse_policy
from hsmkms.store.base import MetadataStore
from hsmkms.token import Hsm, MaterialRef

Response = dict[str, Any]

MAX_PLAINTEXT = 4096
MAX_CIPHERTEXT = 6144
MAX_DESCRIPTION = 8192
MAX_RANDOM_BYTES = 1024
DATA_KEY_SPECS = {"AES_128": 16, "AES_256": 32}
DELETION_WINDOW = (7, 30)
DEFAULT_DELETION_DAYS = 30
ROTATION_PERIOD = (90, 2560)
DEFAULT_ROTATION_DAYS = 365
MAX_ON_DEMAND_ROTATIONS = 10
SYMMETRIC_ALGORITHM = "SYMMETRIC_DEFAULT"
# How long a process trusts cached key metadata that another process may change.
METADATA_CACHE_SECONDS = 1.0


@dataclass
class MaintenanceReport:
    deleted: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    reconcile: ReconcileReport = field(default_factory=ReconcileReport)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "Deleted": self.deleted,
            "Rotated": self.rotated,
            "OrphanObjectsDestroyed": self.reconcile.orphans_destroyed,
            "IntentsCleared": self.reconcile.intents_cleared,
            "MaterialMissing": self.reconcile.material_missing,
            "MaterialRestored": self.reconcile.material_restored,
            "UnknownObjectsLeftAlone": self.reconcile.unknown_objects,
        }


def _marker_key(marker: str | None) -> str | None:
    if marker is None:
        return None
    if not isinstance(marker, str) or not ids.KEY_ID.match(marker):
        raise InvalidMarkerException("The marker is not valid.")
    return marker


class KeyManager(AsymmetricOperations, GrantOperations):
    def __init__(
        self,
        store: MetadataStore,
        hsm: Hsm,
        *,
        account_id: str,
        region: str,
        clock: Clock = system_clock,
        crash: CrashHook | None = None,
        cache_seconds: float = METADATA_CACHE_SECONDS,
    ) -> None:
        self.store = store
        self.hsm = hsm
        self.account_id = account_id
        self.region = region
        self.clock = clock
        self.material = MaterialKeeper(store, hsm, clock, crash)
        self._cache_seconds = cache_seconds
        # KeyId as given, and key UUID bytes -> a resolved key, until it expires.
        self._cache: dict[str | bytes, Resolved] = {}
        self._regions: dict[str, KeyManager] = {region: self}
        self.authorizer = Authorizer(self)
        self._regions_lock = threading.Lock()

    def for_region(self, region: str) -> KeyManager:
        """The manager of another region: same token and database, its own keys."""
        manager = self._regions.get(region)
        if manager is None:
            with self._regions_lock:
                manager = self._regions.get(region)
                if manager is None:
                    manager = KeyManager(
                        self.store,
                        self.hsm,
                        account_id=self.account_id,
                        region=region,
                        clock=self.clock,
                        crash=self.material.crash,
                        cache_seconds=self._cache_seconds,
                    )
                    manager._regions = self._regions
                    self._regions[region] = manager
        return manager

    def close(self) -> None:
        self.hsm.close()
        self.store.close()

    # -- resolution ---------------------------------------------------------------

    def _changed(self) -> None:
        self._cache.clear()

    def _resolve(self, key_id: str) -> KeyRecord:
        """Any KeyId form -> the key in this account and region, in any state."""
        ref = ids.parse_key_ref(key_id)
        if (ref.region or self.region) != self.region or (
            ref.account or self.account_id
        ) != self.account_id:
            raise NotFoundException(f"Key '{key_id}' does not exist")
        if ref.alias is not None:
            alias = self.store.get_alias(self.region, ref.alias)
            if alias is None:
                raise NotFoundException(f"Alias {self._alias_arn(ref.alias)} is not found.")
            target = alias.key_id
        else:
            assert ref.key_id is not None
            target = ref.key_id
        record = self.store.get_key(target)
        if record is None or record.region != self.region:
            raise NotFoundException(f"Key '{self._key_arn(target)}' does not exist")
        return record

    def _cached(self, key_id: str) -> Resolved:
        """The hot path's resolve: no database round trip for recently seen keys."""
        entry = self._cache.get(key_id)
        if entry is not None and entry.expires > time.monotonic():
            return entry
        entry = Resolved(self._resolve(key_id), time.monotonic() + self._cache_seconds)
        self._cache[key_id] = entry
        self._cache[entry.key_uuid] = entry
        return entry

    def _by_uuid(self, key_uuid: bytes) -> Resolved:
        entry = self._cache.get(key_uuid)
        if entry is not None and entry.expires > time.monotonic():
            return entry
        for key_id in (str(uuid.UUID(bytes=key_uuid)), "mrk-" + key_uuid.hex()):
            record = self.store.get_key(key_id)
            if record is not None and record.region == self.region:
                return self._cached(key_id)
        raise InvalidCiphertextException()

    def _key_arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{key_id}"

    def _alias_arn(self, name: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:{name}"

    @staticmethod
    def _require_symmetric_encryption(record: KeyRecord, algorithm: str | None) -> None:
        if record.key_usage is not KeyUsage.ENCRYPT_DECRYPT:
            raise InvalidKeyUsageException(
                f"{record.arn} key usage is {record.key_usage.value} which is not valid for "
                "this operation."
            )
        if algorithm not in (None, SYMMETRIC_ALGORITHM) or (
            record.key_spec is not KeySpec.SYMMETRIC_DEFAULT
        ):
            raise InvalidKeyUsageException(
                f"The encryption algorithm {algorithm or SYMMETRIC_ALGORITHM} is not compatible "
                f"with {record.arn}."
            )

    def _update(self, record: KeyRecord, **changes: Any) -> KeyRecord:
        updated = replace(record, **changes)
        with self.store.transaction() as tx:
            tx.put_key(updated)
        self._changed()
        return updated

    # -- keys -----------------------------------------------------------------------

    def create_key(
        self,
        *,
        description: str = "",
        key_usage: str | None = None,
        key_spec: str | None = None,
        customer_master_key_spec: str | None = None,
        origin: str = Origin.AWS_KMS.value,
        multi_region: bool = False,
        tags: list[dict[str, str]] | None = None,
        policy: str | None = None,
        bypass_policy_lockout_safety_check: bool = False,
    ) -> Response:
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise validation_error(
                "description",
                "…",
                f"Member must have length less than or equal to {MAX_DESCRIPTION}",
            )
        if key_usage is not None:
            check_enum("keyUsage", key_usage, [u.value for u in KeyUsage])
        if key_spec is not None and customer_master_key_spec is not None:
            raise ValidationException(
                "You cannot specify KeySpec and CustomerMasterKeySpec in the same request."
            )
        spec_name = key_spec or customer_master_key_spec or KeySpec.SYMMETRIC_DEFAULT.value
        spec = KeySpec(check_enum("keySpec", spec_name, [s.value for s in KeySpec]))
        key_origin = Origin(check_enum("origin", origin, [o.value for o in Origin]))
        allowed = SPECS[spec].usages
        # KMS defaults KeyUsage to ENCRYPT_DECRYPT, HMAC keys to GENERATE_VERIFY_MAC.
        default = KeyUsage.GENERATE_VERIFY_MAC if spec.value.startswith("HMAC") else (
            KeyUsage.ENCRYPT_DECRYPT
        )  # fmt: skip
        usage = KeyUsage(key_usage) if key_usage is not None else default
        if usage not in allowed:
            raise ValidationException(
                f"KeyUsage {usage.value} is not compatible with KeySpec {spec.value}"
            )
        if key_origin is not Origin.AWS_KMS:
            raise UnsupportedOperationException(
                f"Origin {key_origin.value} is not supported by this hsmkms release."
            )
        if not isinstance(multi_region, bool):
            raise ValidationException("MultiRegion must be a boolean.")
        key_tags = keytags.merged({}, keytags.parse(tags))
        key_policy = default_key_policy(self.account_id) if policy is None else policy
        key_id = f"mrk-{uuid.uuid4().hex}" if multi_region else str(uuid.uuid4())
        now = self.clock()
        record = KeyRecord(
            key_id=key_id,
            region=self.region,
            account_id=self.account_id,
            creation_date=now,
            key_spec=spec,
            key_usage=usage,
            origin=key_origin,
            state=KeyState.ENABLED,
            current_version=1,
            description=description,
            multi_region=multi_region,
            tags=key_tags,
            policy=key_policy,
            multi_region_config=(
                {
                    "MultiRegionKeyType": "PRIMARY",
                    "PrimaryKey": {"Arn": self._key_arn(key_id), "Region": self.region},
                    "ReplicaKeys": [],
                }
                if multi_region
                else None
            ),
        )
        self._check_lockout(record, key_policy, bypass_policy_lockout_safety_check)
        record = self.material.create(record)
        self._changed()
        return {"KeyMetadata": key_metadata(record)}

    # -- key policies -------------------------------------------------------------------

    def _check_lockout(self, record: KeyRecord, policy: str, bypass: bool) -> None:
        """Validate a key policy and, unless bypassed, KMS's lockout safety check: the
        caller must still be allowed kms:PutKeyPolicy under it."""
        parsed = parse_policy(policy)
        caller = current_caller.get()
        if caller is None or bypass:
            return
        _, decision = self.authorizer.decide(
            caller, "kms:PutKeyPolicy", record, {}, key_policy=parsed
        )
        if not decision.allowed:
            raise MalformedPolicyDocumentException(
                "The new key policy will not allow you to update the key policy in the future."
            )

    @staticmethod
    def _policy_name(name: str) -> None:
        if name != "default":
            raise NotFoundException(f"No such policy exists: {name}")

    def put_key_policy(
        self,
        *,
        key_id: str,
        policy: str,
        policy_name: str = "default",
        bypass_policy_lockout_safety_check: bool = False,
    ) -> Response:
        self._policy_name(policy_name)
        record = self._resolve(key_id)
        lifecycle.require(record, Use.MANAGE)
        self._check_lockout(record, policy, bypass_policy_lockout_safety_check)
        self._update(record, policy=policy)
        return {}

    def get_key_policy(self, *, key_id: str, policy_name: str = "default") -> Response:
        self._policy_name(policy_name)
        record = self._resolve(key_id)
        return {
            "Policy": record.policy or default_key_policy(record.account_id),
            "PolicyName": "default",
        }

    def list_key_policies(
        self, *, key_id: str, limit: int | None = None, marker: str | None = None
    ) -> Response:
        check_limit(limit, 1000, 100)
        self._resolve(key_id)
        return {"PolicyNames": ["default"], "Truncated": False}

    def describe_key(self, *, key_id: str) -> Response:
        return {"KeyMetadata": key_metadata(self._resolve(key_id))}

    def list_keys(self, *, limit: int | None = None, marker: str | None = None) -> Response:
        size = check_limit(limit, 1000, 100)
        page = self.store.list_keys(self.region, _marker_key(marker), size + 1)
        response: Response = {
            "Keys": [{"KeyId": k.key_id, "KeyArn": k.arn} for k in page[:size]],
            "Truncated": len(page) > size,
        }
        if len(page) > size:
            response["NextMarker"] = page[size - 1].key_id
        return response

    def update_key_description(self, *, key_id: str, description: str) -> Response:
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise validation_error(
                "description",
                "…",
                f"Member must have length less than or equal to {MAX_DESCRIPTION}",
            )
        record = self._resolve(key_id)
        lifecycle.require(record, Use.MANAGE)
        self._update(record, description=description)
        return {}

    def enable_key(self, *, key_id: str) -> Response:
        record = self._resolve(key_id)
        lifecycle.require(record, Use.MANAGE)
        if record.state is KeyState.DISABLED:
            self._update(record, state=KeyState.ENABLED)
        elif record.state is not KeyState.ENABLED:
            lifecycle.require(record, Use.CRYPTO)  # PendingImport/Unavailable: refuse
        return {}

    def disable_key(self, *, key_id: str) -> Response:
        record = self._resolve(key_id)
        lifecycle.require(record, Use.MANAGE)
        if record.state is KeyState.ENABLED:
            self._update(record, state=KeyState.DISABLED)
        elif record.state is not KeyState.DISABLED:
            lifecycle.require(record, Use.CRYPTO)
        return {}

    def schedule_key_deletion(
        self, *, key_id: str, pending_window_in_days: int | None = None
    ) -> Response:
        days = (
            DEFAULT_DELETION_DAYS
            if pending_window_in_days is None
            else check_range("pendingWindowInDays", pending_window_in_days, *DELETION_WINDOW)
        )
        record = self._resolve(key_id)
        lifecycle.require(record, Use.MANAGE)
        deletion_date = self.clock() + timedelta(days=days)
        self._update(
            record,
            state=KeyState.PENDING_DELETION,
            deletion_date=deletion_date,
            pending_window_days=days,
        )
        return {
            "KeyId": record.arn,
            "DeletionDate": deletion_date,
            "KeyState": KeyState.PENDING_DELETION.value,
            "PendingWindowInDays": days,
        }

    def cancel_key_deletion(self, *, key_id: str) -> Response:
        record = self._resolve(key_id)
        lifecycle.require(record, Use.CANCEL_DELETION)
        self._update(record, state=KeyState.DISABLED, deletion_date=None, pending_window_days=None)
        return {"KeyId": record.arn}

    # -- tags -----------------------------------------------------------------------

    def _tagged_key(self, key_id: str) -> KeyRecord:
        """Tag operations name a key by its ID or ARN only, never an alias."""
        if ids.parse_key_ref(key_id).alias is not None:
            raise NotFoundException(f"Invalid keyId '{key_id}': use the key's ID or ARN.")
        return self._resolve(key_id)

    def _taggable(self, key_id: str) -> KeyRecord:
        record = self._tagged_key(key_id)
        lifecycle.require(record, Use.MANAGE)
        return record

    def tag_resource(self, *, key_id: str, tags: list[dict[str, str]]) -> Response:
        added = keytags.parse(tags)
        record = self._taggable(key_id)
        self._update(record, tags=keytags.merged(record.tags, added))
        return {}

    def untag_resource(self, *, key_id: str, tag_keys: list[str]) -> Response:
        record = self._taggable(key_id)
        self._update(record, tags={k: v for k, v in record.tags.items() if k not in tag_keys})
        return {}

    def list_resource_tags(
        self, *, key_id: str, limit: int | None = None, marker: str | None = None
    ) -> Response:
        size = check_limit(limit, 50, 50)
        tags = keytags.as_list(self._tagged_key(key_id).tags)
        return offset_page("Tags", tags, size, marker)

    # -- aliases ----------------------------------------------------------------------

    def _alias_target(self, target_key_id: str) -> KeyRecord:
        if ids.parse_key_ref(target_key_id).alias is not None:
            raise ValidationException("TargetKeyId must be a key ID or key ARN, not an alias.")
        record = self._resolve(target_key_id)
        lifecycle.require(record, Use.MANAGE)
        return record

    def create_alias(self, *, alias_name: str, target_key_id: str) -> Response:
        ids.check_alias_name(alias_name, creating=True)
        record = self._alias_target(target_key_id)
        now = self.clock()
        with self.store.transaction() as tx:
            if tx.get_alias(self.region, alias_name) is not None:
                raise AlreadyExistsException(
                    f"An alias with the name {self._alias_arn(alias_name)} already exists"
                )
            tx.put_alias(Alias(alias_name, record.key_id, self.region, self.account_id, now, now))
        self._changed()
        return {}

    def update_alias(self, *, alias_name: str, target_key_id: str) -> Response:
        ids.check_alias_name(alias_name, creating=True)
        record = self._alias_target(target_key_id)
        with self.store.transaction() as tx:
            alias = tx.get_alias(self.region, alias_name)
            if alias is None:
                raise NotFoundException(f"Alias {self._alias_arn(alias_name)} is not found.")
            current = tx.get_key(alias.key_id)
            if current is not None and (
                current.key_spec is not record.key_spec or current.key_usage is not record.key_usage
            ):
                raise ValidationException(
                    "The current and new KMS key must be of the same type and key usage."
                )
            tx.put_alias(replace(alias, key_id=record.key_id, last_updated_date=self.clock()))
        self._changed()
        return {}

    def delete_alias(self, *, alias_name: str) -> Response:
        ids.check_alias_name(alias_name, creating=False)
        with self.store.transaction() as tx:
            if tx.get_alias(self.region, alias_name) is None:
                raise NotFoundException(f"Alias {self._alias_arn(alias_name)} is not found.")
            tx.delete_alias(self.region, alias_name)
        self._changed()
        return {}

    def list_aliases(
        self, *, key_id: str | None = None, limit: int | None = None, marker: str | None = None
    ) -> Response:
        size = check_limit(limit, 100, 50)
        if marker is not None and (not isinstance(marker, str) or not marker.startswith("alias/")):
            raise InvalidMarkerException("The marker is not valid.")
        target = None if key_id is None else self._resolve(key_id).key_id
        page = self.store.list_aliases(self.region, target, marker, size + 1)
        response: Response = {
            "Aliases": [
                {
                    "AliasName": a.name,
                    "AliasArn": a.arn,
                    "TargetKeyId": a.key_id,
                    "CreationDate": a.creation_date,
                    "LastUpdatedDate": a.last_updated_date,
                }
                for a in page[:size]
            ],
            "Truncated": len(page) > size,
        }
        if len(page) > size:
            response["NextMarker"] = page[size - 1].name
        return response

    # -- cryptography -------------------------------------------------------------------

    def _encrypt_with(self, key: Resolved, plaintext: bytes, canonical_context: bytes) -> bytes:
        if not key.symmetric_ready:
            lifecycle.require(key.record, Use.CRYPTO)
        iv, body = self.hsm.gcm_encrypt(key.ref, key.header + canonical_context, plaintext)
        return key.header + iv + body

    def _decrypt_blob(
        self, ciphertext: bytes, canonical_context: bytes, key_id: str | None
    ) -> tuple[KeyRecord, bytes]:
        parsed = blob.decode(ciphertext)
        key = self._by_uuid(parsed.key_uuid)
        record = key.record
        if key_id is not None and self._cached(key_id).record.key_id != record.key_id:
            raise IncorrectKeyException(
                "The key ID in the request does not identify a KMS key that can perform this "
                "operation."
            )
        if not key.symmetric_ready:
            lifecycle.require(record, Use.CRYPTO)
            self._require_symmetric_encryption(record, None)
        if not 1 <= parsed.version <= record.current_version:
            raise InvalidCiphertextException()
        ref = (
            key.ref
            if parsed.version == key.ref.version
            else MaterialRef(record.key_id, parsed.version)
        )
        plaintext = self.hsm.gcm_decrypt(
            ref, parsed.iv, parsed.header + canonical_context, parsed.body
        )
        return record, plaintext

    def _encrypt_any(
        self, key: Resolved, plaintext: bytes, encryption_context: object, algorithm: str | None
    ) -> bytes:
        if key.rsa:
            return self._rsa_encrypt(key, plaintext, algorithm, encryption_context)
        aad = context.canonical(encryption_context)
        if not key.symmetric_ready or algorithm not in (None, SYMMETRIC_ALGORITHM):
            self._require_symmetric_encryption(key.record, algorithm)
        return self._encrypt_with(key, plaintext, aad)

    def _decrypt_any(
        self,
        ciphertext: bytes,
        encryption_context: object,
        key_id: str | None,
        algorithm: str | None,
    ) -> tuple[KeyRecord, bytes, str]:
        if key_id is not None:
            key = self._cached(key_id)
            if key.rsa:
                plaintext = self._rsa_decrypt(key, ciphertext, algorithm, encryption_context)
                return key.record, plaintext, str(algorithm)
        if algorithm not in (None, SYMMETRIC_ALGORITHM):
            raise InvalidCiphertextException()
        record, plaintext = self._decrypt_blob(
            ciphertext, context.canonical(encryption_context), key_id
        )
        return record, plaintext, SYMMETRIC_ALGORITHM

    def encrypt(
        self,
        *,
        key_id: str,
        plaintext: bytes,
        encryption_context: dict[str, str] | None = None,
        encryption_algorithm: str | None = None,
    ) -> Response:
        data = check_bytes("plaintext", plaintext, MAX_PLAINTEXT)
        key = self._cached(key_id)
        return {
            "CiphertextBlob": self._encrypt_any(
                key, data, encryption_context, encryption_algorithm
            ),
            "KeyId": key.record.arn,
            "EncryptionAlgorithm": encryption_algorithm or SYMMETRIC_ALGORITHM,
        }

    def decrypt(
        self,
        *,
        ciphertext_blob: bytes,
        encryption_context: dict[str, str] | None = None,
        key_id: str | None = None,
        encryption_algorithm: str | None = None,
    ) -> Response:
        data = check_bytes("ciphertextBlob", ciphertext_blob, MAX_CIPHERTEXT)
        record, plaintext, algorithm = self._decrypt_any(
            data, encryption_context, key_id, encryption_algorithm
        )
        return {"KeyId": record.arn, "Plaintext": plaintext, "EncryptionAlgorithm": algorithm}

    def re_encrypt(
        self,
        *,
        ciphertext_blob: bytes,
        destination_key_id: str,
        source_encryption_context: dict[str, str] | None = None,
        source_key_id: str | None = None,
        destination_encryption_context: dict[str, str] | None = None,
        source_encryption_algorithm: str | None = None,
        destination_encryption_algorithm: str | None = None,
    ) -> Response:
        data = check_bytes("ciphertextBlob", ciphertext_blob, MAX_CIPHERTEXT)
        destination = self._cached(destination_key_id)
        lifecycle.require(destination.record, Use.CRYPTO)
        source, plaintext, source_algorithm = self._decrypt_any(
            data, source_encryption_context, source_key_id, source_encryption_algorithm
        )
        return {
            "CiphertextBlob": self._encrypt_any(
                destination,
                plaintext,
                destination_encryption_context,
                destination_encryption_algorithm,
            ),
            "SourceKeyId": source.arn,
            "KeyId": destination.record.arn,
            "SourceEncryptionAlgorithm": source_algorithm,
            "DestinationEncryptionAlgorithm": destination_encryption_algorithm
            or SYMMETRIC_ALGORITHM,
        }

    def _wrap_private_key(
        self, key_id: str, private_der: bytes, context: dict[str, str] | None
    ) -> Response:
        key = self._cached(key_id)
        if key.record.key_spec is not KeySpec.SYMMETRIC_DEFAULT:
            self._require_symmetric_encryption(key.record, None)
        return {
            "CiphertextBlob": self._encrypt_any(key, private_der, context, None),
            "KeyId": key.record.arn,
        }

    def generate_data_key(
        self,
        *,
        key_id: str,
        key_spec: str | None = None,
        number_of_bytes: int | None = None,
        encryption_context: dict[str, str] | None = None,
    ) -> Response:
        if (key_spec is None) == (number_of_bytes is None):
            raise ValidationException("Please specify either number of bytes or key spec.")
        if key_spec is not None:
            size = DATA_KEY_SPECS[check_enum("keySpec", key_spec, list(DATA_KEY_SPECS))]
        else:
            size = check_range("numberOfBytes", number_of_bytes, 1, MAX_RANDOM_BYTES)
        aad = context.canonical(encryption_context)
        key = self._cached(key_id)
        self._require_symmetric_encryption(key.record, None)
        lifecycle.require(key.record, Use.CRYPTO)
        plaintext = self.hsm.random(size)
        return {
            "CiphertextBlob": self._encrypt_with(key, plaintext, aad),
            "Plaintext": plaintext,
            "KeyId": key.record.arn,
        }

    def generate_data_key_without_plaintext(
        self,
        *,
        key_id: str,
        key_spec: str | None = None,
        number_of_bytes: int | None = None,
        encryption_context: dict[str, str] | None = None,
    ) -> Response:
        response = self.generate_data_key(
            key_id=key_id,
            key_spec=key_spec,
            number_of_bytes=number_of_bytes,
            encryption_context=encryption_context,
        )
        del response["Plaintext"]  # the caller never sees it; it is dropped here
        return response

    def generate_random(self, *, number_of_bytes: int | None = None) -> Response:
        if number_of_bytes is None:
            raise ValidationException("NumberOfBytes is required.")
        count = check_range("numberOfBytes", number_of_bytes, 1, MAX_RANDOM_BYTES)
        return {"Plaintext": self.hsm.random(count)}

    # -- rotation -----------------------------------------------------------------------

    def _rotatable(self, key_id: str) -> KeyRecord:
        record = self._resolve(key_id)
        if record.key_spec is not KeySpec.SYMMETRIC_DEFAULT or record.origin is not Origin.AWS_KMS:
            raise UnsupportedOperationException(
                f"{record.arn} does not support key rotation: only symmetric encryption keys "
                "with key material generated by hsmkms rotate."
            )
        lifecycle.require(record, Use.ROTATION)
        return record

    def enable_key_rotation(
        self, *, key_id: str, rotation_period_in_days: int | None = None
    ) -> Response:
        days = (
            DEFAULT_ROTATION_DAYS
            if rotation_period_in_days is None
            else check_range("rotationPeriodInDays", rotation_period_in_days, *ROTATION_PERIOD)
        )
        record = self._rotatable(key_id)
        next_date = record.next_rotation_date
        if not record.rotation_enabled or record.rotation_period_days != days:
            next_date = self.clock() + timedelta(days=days)
        self._update(
            record, rotation_enabled=True, rotation_period_days=days, next_rotation_date=next_date
        )
        return {}

    def disable_key_rotation(self, *, key_id: str) -> Response:
        record = self._rotatable(key_id)
        self._update(record, rotation_enabled=False, next_rotation_date=None)
        return {}

    def get_key_rotation_status(self, *, key_id: str) -> Response:
        record = self._resolve(key_id)
        response: Response = {"KeyRotationEnabled": record.rotation_enabled, "KeyId": record.arn}
        if record.rotation_enabled:
            response["RotationPeriodInDays"] = record.rotation_period_days
            response["NextRotationDate"] = record.next_rotation_date
        return response

    def rotate_key_on_demand(self, *, key_id: str) -> Response:
        record = self._rotatable(key_id)
        if record.on_demand_rotations >= MAX_ON_DEMAND_ROTATIONS:
            raise LimitExceededException(
                f"{record.arn} has reached the limit of {MAX_ON_DEMAND_ROTATIONS} on-demand "
                "rotations."
            )
        self.material.rotate(record, RotationType.ON_DEMAND, self.clock())
        self._changed()
        return {"KeyId": record.key_id}

    def list_key_rotations(
        self, *, key_id: str, limit: int | None = None, marker: str | None = None
    ) -> Response:
        size = check_limit(limit, 1000, 100)
        record = self._resolve(key_id)
        rotations = [
            {
                "KeyId": record.key_id,
                "RotationDate": v.created_at,
                "RotationType": v.rotation_type.value,
            }
            for v in self.store.list_versions(record.key_id)
            if v.rotation_type
        ]
        return offset_page("Rotations", rotations, size, marker)

    # -- maintenance --------------------------------------------------------------------

    def maintain(self) -> MaintenanceReport:
        """Due deletions and rotations (every region), then token/metadata reconcile."""
        report = MaintenanceReport()
        now = self.clock()
        after: str | None = None
        while page := self.store.list_keys(None, after, 500):
            after = page[-1].key_id
            for record in page:
                if record.state is KeyState.PENDING_DELETION and (
                    record.deletion_date is not None and record.deletion_date <= now
                ):
                    self.material.destroy(record)
                    report.deleted.append(record.arn)
                elif (
                    record.state is KeyState.ENABLED
                    and record.rotation_enabled
                    and record.next_rotation_date is not None
                    and record.next_rotation_date <= now
                ):
                    self.material.rotate(record, RotationType.AUTOMATIC, now)
                    report.rotated.append(record.arn)
        self._changed()
        report.reconcile = self.material.reconcile()
        self._changed()
        return report
