"""Authorization of KMS requests: which permission each operation needs on which key,
evaluated against the key policy and the caller's identity policies.

The account root principal is the account's root user: every action is allowed to
it by identity, as in AWS (a key policy can still deny it).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from hsmkms.errors import AccessDeniedException
from hsmkms.keys import blob
from hsmkms.keys.clock import Clock
from hsmkms.keys.model import KeyRecord
from hsmkms.keys.resolver import KeyResolver
from hsmkms.policy import context as conditions
from hsmkms.policy.caller import CallerInfo
from hsmkms.policy.engine import Decision, Request, evaluate
from hsmkms.policy.grants import constraints_hold, find_grant, may_retire, within_parent
from hsmkms.policy.model import Policy, default_key_policy, parse_policy
from hsmkms.policy.needs import Resource
from hsmkms.policy.principals import principal_tags

ROOT_IDENTITY = parse_policy(
    json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Account root user", "Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    identity=True,
)  # fmt: skip
IDENTITY_CACHE_SECONDS = 1.0


@lru_cache(maxsize=1024)
def _parsed(text: str, identity: bool) -> Policy:
    return parse_policy(text, identity=identity, stored=True)


@dataclass(frozen=True)
class Check:
    action: str
    record: KeyRecord | None
    resource: str | None = None  # an alias ARN: the alias itself is the resource
    extra: Mapping[str, list[str]] | None = None  # condition keys the authorizer knows


class Authorizer:
    def __init__(self, keys: KeyResolver, clock: Clock) -> None:
        self._keys = keys
        self._clock = clock
        # principal -> (expiry, store generation when read, policies)
        self._identities: dict[str, tuple[float, int, tuple[Policy, ...]]] = {}
        self._lock = threading.Lock()

    def key_policy(self, record: KeyRecord) -> Policy:
        return _parsed(record.policy or default_key_policy(record.account_id), False)

    def identity_policies(self, principal_arn: str) -> tuple[Policy, ...]:
        if principal_arn.endswith(":root"):
            return (ROOT_IDENTITY,)
        cached = self._identities.get(principal_arn)
        if (
            cached is not None
            and cached[0] > time.monotonic()
            and cached[1] == self._keys.generation
        ):
            return cached[2]
        generation = self._keys.generation
        documents = self._keys.store.identity_policies(principal_arn)
        policies = tuple(_parsed(text, True) for text in documents.values())
        with self._lock:
            expires = time.monotonic() + IDENTITY_CACHE_SECONDS
            self._identities[principal_arn] = (expires, generation, policies)
        return policies

    def forget_identity(self, principal_arn: str) -> None:
        self._identities.pop(principal_arn, None)

    def decide(
        self,
        caller: CallerInfo,
        action: str,
        record: KeyRecord | None,
        members: Mapping[str, Any],
        *,
        key_policy: Policy | None = None,
        context_member: str = "EncryptionContext",
        resource: str | None = None,
        extra: Mapping[str, list[str]] | None = None,
    ) -> tuple[Request, Decision]:
        keys = self._keys
        resource = resource or (record.arn if record is not None else "*")

        def aliases() -> list[str]:
            assert record is not None
            return [a.name for a in keys.store.list_aliases(keys.region, record.key_id, None, 100)]

        request = Request(
            caller.principal_arn,
            action,
            resource,
            conditions.RequestContext(
                caller,
                self._clock,
                members,
                record,
                aliases,
                context_member,
                action=action,
                region=keys.region,
                principal_tags=lambda: principal_tags(keys.store, caller.principal_arn),
                extra=extra,
            ),
        )
        policy = key_policy or (self.key_policy(record) if record is not None else None)
        decision = evaluate(request, policy, self.identity_policies(caller.principal_arn))
        if decision.allowed or decision.explicit or record is None or key_policy is not None:
            return request, decision
        operation = action.removeprefix("kms:")
        # By index: the caller's grants on this key only, however many the key has.
        for grant in keys.store.list_grants_for(record.key_id, caller.principal_arn, record.region):
            if (
                operation in grant.operations
                and constraints_hold(grant, members.get(context_member), operation)
                # CreateGrant from a grant: never more operations or fewer constraints
                and (operation != "CreateGrant" or within_parent(grant, members))
            ):
                return request, Decision(True, f"grant {grant.grant_id} allows it")
        return request, decision

    def require(
        self,
        caller: CallerInfo,
        operation: str,
        resource: Resource,
        members: Mapping[str, Any],
        resources: list[str] | None = None,
    ) -> None:
        """Raise AccessDeniedException unless every permission the call needs is granted.
        `resource` (from the operation table) says which key(s) the call acts on;
        `resources` collects the ARNs of the keys checked (for the audit record)."""
        if resource is Resource.GRANT:
            self._require_retire(caller, members, resources)
            return
        for check, context_member in self._checks(operation, resource, members):
            if resources is not None and check.record is not None and check.resource is None:
                resources.append(check.record.arn)
            request, decision = self.decide(
                caller,
                check.action,
                check.record,
                members,
                context_member=context_member,
                resource=check.resource,
                extra=check.extra,
            )
            if not decision.allowed:
                raise AccessDeniedException(decision.message(request))

    def _require_retire(
        self, caller: CallerInfo, members: Mapping[str, Any], resources: list[str] | None
    ) -> None:
        """RetireGrant (https://docs.aws.amazon.com/kms/latest/developerguide/grant-delete.html):
        the grant's retiring principal, or its grantee when the grant includes RetireGrant,
        may retire it; so may the account the grant was created in, and an account that is
        the grant's retiring principal, each of which can delegate kms:RetireGrant to its
        principals in IAM policies. kms:RetireGrant is not effective in a key policy; a Deny
        in an IAM policy still denies."""
        grant = find_grant(
            self._keys, members.get("GrantToken"), members.get("KeyId"), members.get("GrantId")
        )
        record = self._record(grant.key_id)
        if resources is not None:
            resources.append(record.arn)
        # No record: IAM policies alone decide, on the key's ARN.
        request, decision = self.decide(
            caller, "kms:RetireGrant", None, members, resource=record.arn
        )
        if decision.explicit:
            raise AccessDeniedException(decision.message(request))
        if may_retire(caller.principal_arn, grant):
            return
        delegating = (f"arn:aws:iam::{grant.issuing_account}:root", grant.retiring_principal)
        if request.account_root not in delegating:
            # The grant gives the caller's account nothing, so no IAM policy can: what
            # refuses is the grant, the resource's side, never the caller's Allow.
            decision = Decision(False, "no resource-based policy allows the kms:RetireGrant action")
        if not decision.allowed:
            raise AccessDeniedException(decision.message(request))

    def explain(
        self, principal_arn: str, action: str, key_id: str | None, members: Mapping[str, Any]
    ) -> dict[str, Any]:
        """What the server would decide for this principal, action and key, and why."""
        caller = CallerInfo(principal_arn)
        record = self._record(key_id) if key_id else None
        request, decision = self.decide(caller, action, record, {"KeyId": key_id, **members})
        explained: dict[str, Any] = {
            "Decision": "Allow" if decision.allowed else "Deny",
            "Reason": decision.reason,
            "Principal": principal_arn,
            "Action": action,
            "Resource": request.resource,
        }
        if not decision.allowed:
            explained["Message"] = decision.message(request)
        return explained

    def _record(self, key_id: Any) -> KeyRecord:
        return self._keys.cached(str(key_id)).record

    def _checks(
        self, operation: str, resource: Resource, members: Mapping[str, Any]
    ) -> list[tuple[Check, str]]:
        action = f"kms:{operation}"
        if resource is Resource.REENCRYPT:
            source = self._ciphertext_key(members.get("SourceKeyId"), members.get("CiphertextBlob"))
            destination = self._record(members["DestinationKeyId"])
            # kms:ReEncryptOnSameKey, https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html
            same = source is not None and source.key_id == destination.key_id
            extra = {"kms:reencryptonsamekey": ["true" if same else "false"]}
            checks = [
                (Check("kms:ReEncryptTo", destination, extra=extra), "DestinationEncryptionContext")
            ]
            if source is not None:
                checks.append(
                    (Check("kms:ReEncryptFrom", source, extra=extra), "SourceEncryptionContext")
                )
            return checks  # fmt: skip
        if resource is Resource.CIPHERTEXT:
            record = self._ciphertext_key(members.get("KeyId"), members.get("CiphertextBlob"))
            # An unreadable blob fails as InvalidCiphertextException in the operation.
            return [] if record is None else [(Check(action, record), "EncryptionContext")]
        if resource is Resource.KEYLESS and not members.get("KeyId"):
            return [(Check(action, None), "EncryptionContext")]
        if resource in (Resource.NEW_ALIAS, Resource.TARGET_KEY, Resource.ALIAS):
            # The alias and every key it affects: the alias's current key (UpdateAlias,
            # DeleteAlias) and its new one (CreateAlias, UpdateAlias).
            # https://docs.aws.amazon.com/kms/latest/developerguide/alias-access.html
            name = members["AliasName"]
            checks = [(Check(action, None, resource=self._keys.alias_arn(name)),
                       "EncryptionContext")]  # fmt: skip
            if resource is not Resource.NEW_ALIAS:
                checks.append((Check(action, self._record(name)), "EncryptionContext"))
            if resource is not Resource.ALIAS:
                target = self._record(members["TargetKeyId"])
                checks.append((Check(action, target), "EncryptionContext"))
            return checks
        return [(Check(action, self._record(members["KeyId"])), "EncryptionContext")]

    def _ciphertext_key(self, key_id: Any, ciphertext: bytes | None) -> KeyRecord | None:
        if key_id is not None:
            return self._record(key_id)
        if ciphertext is None:  # DryRun with IGNORE_CIPHERTEXT: the dry run refuses it
            return None
        try:
            parsed = blob.decode(ciphertext)
            return self._keys.by_uuid(parsed.key_uuid).record
        except Exception:  # not ours to judge here: Decrypt reports InvalidCiphertext
            return None
