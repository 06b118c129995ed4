"""Authorization of KMS requests: which permission each operation needs on which key,
evaluated against the key policy and the caller's identity policies; a caller of another
account is held to AWS's cross-account rules (policy/accounts.py) in every decision.

The account root principal is the account's root user: every action is allowed to
it by identity, as in AWS (a key policy can still deny it).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from hsmkms.errors import AccessDeniedException, ValidationException
from hsmkms.keys import blobs
from hsmkms.keys.clock import Clock
from hsmkms.keys.resolved import Resolved
from hsmkms.keys.resolver import KeyResolver
from hsmkms.policy import context as conditions
from hsmkms.policy.accounts import across_accounts
from hsmkms.policy.caller import CallerInfo
from hsmkms.policy.engine import Decision, Request, evaluate
from hsmkms.policy.grants import constraints_hold, find_grant, may_retire, within_parent
from hsmkms.policy.model import Policy, default_key_policy, parse_policy
from hsmkms.policy.needs import NO_KEY_NAMED, Access, Resource, ignores_ciphertext
from hsmkms.policy.principals import principal_tags
from hsmkms.store.model import KeyRecord

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
    # The caller's own account is the resource (its listing): identity policies decide,
    # whichever account the caller is in.
    callers_own: bool = False


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
        callers_own: bool = False,
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
        identities = self.identity_policies(caller.principal_arn)
        decision = evaluate(request, policy, identities)
        if self.foreign(caller) and not callers_own:
            decision = across_accounts(request, decision, policy, identities, keys.account_id)
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

    def foreign(self, caller: CallerInfo) -> bool:
        """Is the caller of another account than the one served?"""
        return caller.account != self._keys.account_id

    def require(
        self,
        caller: CallerInfo,
        operation: str,
        resource: Resource,
        members: Mapping[str, Any],
        resources: list[str] | None = None,
    ) -> Access:
        """Raise AccessDeniedException unless every permission the call needs is granted.
        `resource` (from the operation table) says which key(s) the call acts on;
        `resources` collects the ARNs of the keys checked (for the audit record)."""
        if resource is Resource.GRANT:
            self._require_retire(caller, members, resources)
            return Access.GRANTED
        if resource is Resource.LISTING and self.foreign(caller):
            # Its own account's listing, which its identity policies allow or not.
            self._decide(caller, Check(f"kms:{operation}", None, callers_own=True), members)
            return Access.EMPTY_ACCOUNT
        # One check at a time: a refusal comes before the next key is even looked up.
        for check, context_member in self._checks(caller, operation, resource, members):
            if resources is not None and check.record is not None and check.resource is None:
                resources.append(check.record.arn)
            self._decide(caller, check, members, context_member)
        return Access.GRANTED

    def _decide(
        self,
        caller: CallerInfo,
        check: Check,
        members: Mapping[str, Any],
        context_member: str = "EncryptionContext",
    ) -> None:
        request, decision = self.decide(
            caller,
            check.action,
            check.record,
            members,
            context_member=context_member,
            resource=check.resource,
            extra=check.extra,
            callers_own=check.callers_own,
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
        if members.get("KeyId") is not None:
            self._record(members["KeyId"], caller)  # named as the caller's account sees it
        grant = find_grant(
            self._keys, members.get("GrantToken"), members.get("KeyId"), members.get("GrantId")
        )
        record = self._record(grant.key_id)
        if resources is not None:
            resources.append(record.arn)
        # No record: IAM policies alone decide, on the key's ARN; whose account may
        # delegate is the grant's to say (below), not the key policy's.
        request, decision = self.decide(
            caller, "kms:RetireGrant", None, members, resource=record.arn, callers_own=True
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

    def _resolved(self, key_id: Any, caller: CallerInfo | None) -> Resolved:
        """The key a request names. A caller of another account names ours by ARN: a key
        ID or alias name is looked up in its own account (NotFoundException here)."""
        if caller is not None and self.foreign(caller):
            self._keys.resolve(str(key_id), account=caller.account)
        return self._keys.cached(str(key_id))

    def _record(self, key_id: Any, caller: CallerInfo | None = None) -> KeyRecord:
        return self._resolved(key_id, caller).record

    def _checks(
        self, caller: CallerInfo, operation: str, resource: Resource, members: Mapping[str, Any]
    ) -> Iterator[tuple[Check, str]]:
        action = f"kms:{operation}"
        if resource is Resource.REENCRYPT:
            # The source first: its ciphertext is read before anything is authorized.
            source = self._ciphertext_key(caller, members.get("SourceKeyId"), members)
            destination = self._record(members["DestinationKeyId"], caller)
            # kms:ReEncryptOnSameKey, https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html
            extra = {"kms:reencryptonsamekey": [str(source.key_id == destination.key_id).lower()]}
            yield Check("kms:ReEncryptFrom", source, extra=extra), "SourceEncryptionContext"
            yield Check("kms:ReEncryptTo", destination, extra=extra), "DestinationEncryptionContext"
        elif resource is Resource.CIPHERTEXT:
            record = self._ciphertext_key(caller, members.get("KeyId"), members)
            yield Check(action, record), "EncryptionContext"
        elif resource is Resource.RETIRING_PRINCIPAL:
            # "You must specify a principal in your AWS account":
            # https://docs.aws.amazon.com/kms/latest/APIReference/API_ListRetirableGrants.html
            principal = str(members.get("RetiringPrincipal"))
            if principal.split(":")[4:5] != [caller.account]:
                request = Request(caller.principal_arn, action, principal)
                reason = f"{principal} is not a principal of account {caller.account}"
                raise AccessDeniedException(Decision(False, reason).message(request))
            yield Check(action, None, callers_own=True), "EncryptionContext"
        elif resource in (Resource.NEW_ALIAS, Resource.TARGET_KEY, Resource.ALIAS):
            # The alias and every key it affects: the alias's current key (UpdateAlias,
            # DeleteAlias) and its new one (CreateAlias, UpdateAlias).
            # https://docs.aws.amazon.com/kms/latest/developerguide/alias-access.html
            name = members["AliasName"]
            yield Check(action, None, resource=self._keys.alias_arn(name)), "EncryptionContext"
            if resource is not Resource.NEW_ALIAS:
                yield Check(action, self._record(name, caller)), "EncryptionContext"
            if resource is not Resource.ALIAS:
                target = self._record(members["TargetKeyId"], caller)
                yield Check(action, target), "EncryptionContext"
        elif resource is Resource.KEY or members.get("KeyId"):
            yield Check(action, self._record(members["KeyId"], caller)), "EncryptionContext"
        else:  # ACCOUNT, LISTING: no key, identity policies decide
            yield Check(action, None), "EncryptionContext"

    def _ciphertext_key(
        self, caller: CallerInfo, key_id: Any, members: Mapping[str, Any]
    ) -> KeyRecord:
        """The key a ciphertext is checked against: the KeyId given, else the key its blob
        names. The blob is read by THE decoder (keys/blobs.py) before anything else, so a
        format it does not know is InvalidCiphertextException, never a check skipped."""
        named = None if key_id is None else self._resolved(key_id, caller)
        if named is not None and (named.rsa or ignores_ciphertext(members)):
            return named.record  # an RSA ciphertext is no blob; an ignored one is not read
        ciphertext = members.get("CiphertextBlob")
        if ciphertext is None:  # only a DryRun with IGNORE_CIPHERTEXT may leave it out
            raise ValidationException(NO_KEY_NAMED)
        parsed = blobs.decode(ciphertext)
        if named is not None:  # a blob of another key: the operation answers IncorrectKey
            return named.record
        return self._keys.by_uuid(parsed.key_uuid).record  # no such key: InvalidCiphertext
