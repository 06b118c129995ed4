"""Condition keys of a request: from its members, the key it acts on, and the caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from hsmkms.policy.caller import CallerInfo
from hsmkms.policy.identity import PRINCIPAL_KEYS, principal_key
from hsmkms.store.model import KeyRecord

# Condition keys whose value is one request member's value, as KMS names them.
MEMBER_OF_KEY = {
    "kms:signingalgorithm": "SigningAlgorithm",
    "kms:macalgorithm": "MacAlgorithm",
    "kms:messagetype": "MessageType",
    "kms:keyagreementalgorithm": "KeyAgreementAlgorithm",
    "kms:datakeypairspec": "KeyPairSpec",
    "kms:rotationperiodindays": "RotationPeriodInDays",
    "kms:schedulekeydeletionpendingwindowindays": "PendingWindowInDays",
    "kms:bypasspolicylockoutsafetycheck": "BypassPolicyLockoutSafetyCheck",
    "kms:granteeprincipal": "GranteePrincipal",
    "kms:retiringprincipal": "RetiringPrincipal",
    "kms:replicaregion": "ReplicaRegion",
    "kms:primaryregion": "PrimaryRegion",
    "kms:wrappingalgorithm": "WrappingAlgorithm",
    "kms:wrappingkeyspec": "WrappingKeySpec",
    "kms:validto": "ValidTo",  # epoch seconds, as the wire gives it
}
# Every condition key AWS KMS defines (lower case), and the prefixes of its families
# (https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html). A key
# this context never sets counts as missing, so a Deny conditioned on it never
# applies: policies naming a kms: key outside this list are refused when written.
# kms:ViaService is missing as AWS has it for a direct call; kms:RecipientAttestation,
# kms:GranteeServicePrincipal and kms:GrantConstraintSourceArn go with members hsmkms
# refuses (Recipient, a service principal as grantee, a SourceArn constraint).
KMS_CONDITION_KEYS = frozenset({
    "kms:bypasspolicylockoutsafetycheck", "kms:calleraccount", "kms:customermasterkeyspec",
    "kms:customermasterkeyusage", "kms:datakeypairspec", "kms:encryptionalgorithm",
    "kms:encryptioncontextkeys", "kms:expirationmodel", "kms:grantconstrainttype",
    "kms:grantisforawsresource", "kms:grantoperations", "kms:granteeprincipal",
    "kms:granteeserviceprincipal", "kms:grantconstraintsourcearn",
    "kms:keyagreementalgorithm", "kms:keyorigin", "kms:keyspec", "kms:keyusage",
    "kms:macalgorithm", "kms:messagetype", "kms:multiregion", "kms:multiregionkeytype",
    "kms:primaryregion", "kms:reencryptonsamekey", "kms:replicaregion", "kms:requestalias",
    "kms:resourcealiases", "kms:retiringprincipal", "kms:rotationperiodindays",
    "kms:schedulekeydeletionpendingwindowindays", "kms:signingalgorithm", "kms:validto",
    "kms:viaservice", "kms:wrappingalgorithm", "kms:wrappingkeyspec",
})  # fmt: skip
KMS_CONDITION_PREFIXES = ("kms:encryptioncontext:", "kms:recipientattestation:")
# The deprecated names of two keys.
DEPRECATED_KEYS = {"kms:customermasterkeyspec": "kms:keyspec",
                   "kms:customermasterkeyusage": "kms:keyusage"}  # fmt: skip
# AWS sets kms:GrantIsForAWSResource on these; no AWS service calls hsmkms for a user.
GRANT_ACTIONS = frozenset({"kms:creategrant", "kms:listgrants", "kms:revokegrant"})
GRANT_CONSTRAINTS = ("EncryptionContextEquals", "EncryptionContextSubset")
# CreateKey describes the key to be: these become the key's condition keys.
CREATE_KEY_KEYS = {"kms:keyspec": "KeySpec", "kms:keyusage": "KeyUsage", "kms:keyorigin": "Origin",
                   "kms:multiregion": "MultiRegion"}  # fmt: skip
# "This type of condition works even when the parameter doesn't appear in the request,
# such as when you use the parameter's default value":
# https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html
CREATE_KEY_DEFAULTS = {
    "kms:keyspec": "SYMMETRIC_DEFAULT",
    "kms:keyusage": "ENCRYPT_DECRYPT",
    "kms:keyorigin": "AWS_KMS",
    "kms:multiregion": "false",
}
ALGORITHM_MEMBER = {
    "kms:reencryptfrom": "SourceEncryptionAlgorithm",
    "kms:reencryptto": "DestinationEncryptionAlgorithm",
}
# Actions that encrypt or decrypt with a KMS key: SYMMETRIC_DEFAULT when none is named.
ENCRYPTION_ACTIONS = frozenset({
    "kms:encrypt", "kms:decrypt", "kms:reencryptfrom", "kms:reencryptto",
    "kms:generatedatakey", "kms:generatedatakeywithoutplaintext",
    "kms:generatedatakeypair", "kms:generatedatakeypairwithoutplaintext",
})  # fmt: skip


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class RequestContext(Mapping[str, Sequence[str]]):
    """The condition keys of one request, each computed only when a condition asks for
    it (most policies ask for none), from the members, the key and the caller."""

    def __init__(
        self,
        caller: CallerInfo,
        now: Callable[[], datetime],
        members: Mapping[str, Any],
        record: KeyRecord | None,
        aliases: Callable[[], list[str]],
        context_member: str,
        *,
        action: str = "",
        region: str | None = None,
        principal_tags: Callable[[], Mapping[str, str]] | None = None,
        extra: Mapping[str, list[str]] | None = None,
    ) -> None:
        self._caller = caller
        self._now = now
        self._members = members
        self._record = record
        self._aliases = aliases
        self._context_member = context_member
        self._action = action.lower()
        self._region = region
        self._principal_tags = principal_tags
        self._cache: dict[str, list[str] | None] = dict(extra or {})

    def __getitem__(self, key: str) -> Sequence[str]:
        if key not in self._cache:
            self._cache[key] = self._compute(key)
        value = self._cache[key]
        if value is None:
            raise KeyError(key)
        return value

    def _compute(self, key: str) -> list[str] | None:
        members, caller = self._members, self._caller
        key = DEPRECATED_KEYS.get(key, key)
        if key == "aws:principalarn":
            return [caller.principal_arn]
        if key in ("kms:calleraccount", "aws:principalaccount"):
            return [caller.account]
        if key == "aws:currenttime":
            return [self._now().isoformat()]
        if key.startswith("aws:") and key in PRINCIPAL_KEYS:
            return principal_key(caller.principal_arn, key)
        if key == "aws:epochtime":
            return [str(int(self._now().timestamp()))]
        if key == "aws:requestedregion":
            return [self._region] if self._region else None
        if key.startswith("aws:principaltag/"):
            name = key.removeprefix("aws:principaltag/")
            tags = self._principal_tags() if self._principal_tags else {}
            return [v for k, v in tags.items() if k.lower() == name] or None
        if key == "kms:encryptionalgorithm":
            value = members.get(ALGORITHM_MEMBER.get(self._action, "EncryptionAlgorithm"))
            if value is None and self._action in ENCRYPTION_ACTIONS:
                value = "SYMMETRIC_DEFAULT"
            return None if value is None else [str(value)]
        if key == "aws:securetransport":
            return ["true" if caller.secure_transport else "false"]
        if key == "aws:sourceip":
            return [caller.source_ip] if caller.source_ip else None
        if key in MEMBER_OF_KEY:
            value = members.get(MEMBER_OF_KEY[key])
            return None if value is None else [_text(value)]
        if key == "kms:requestalias":
            key_id = members.get("AliasName") or members.get("KeyId")
            if isinstance(key_id, str) and "alias/" in key_id:
                return [key_id[key_id.index("alias/") :]]
            return None
        encryption_context = members.get(self._context_member) or {}
        if key == "kms:encryptioncontextkeys":
            return list(encryption_context) or None
        if key.startswith("kms:encryptioncontext:"):
            name = key.removeprefix("kms:encryptioncontext:")
            found = [v for k, v in encryption_context.items() if k.lower() == name]
            return found or None
        if key == "kms:grantoperations":
            return list(members.get("Operations") or ()) or None
        if key == "kms:grantconstrainttype":
            constraints = members.get("Constraints") or {}
            return [name for name in GRANT_CONSTRAINTS if name in constraints] or None
        if key == "kms:grantisforawsresource":
            return ["false"] if self._action in GRANT_ACTIONS else None
        if key == "kms:expirationmodel":
            model = members.get("ExpirationModel")
            if model is None and self._action == "kms:importkeymaterial":
                model = "KEY_MATERIAL_EXPIRES"  # the API's default
            return None if model is None else [str(model)]
        tags = {t["TagKey"]: t["TagValue"] for t in members.get("Tags") or ()}
        if key.startswith("aws:requesttag/"):
            name = key.removeprefix("aws:requesttag/")
            return [v for k, v in tags.items() if k.lower() == name] or None
        if key == "aws:tagkeys":
            return list(tags) or list(members.get("TagKeys") or ()) or None
        return self._resource(key)

    def _resource(self, key: str) -> list[str] | None:
        record = self._record
        if record is None:  # CreateKey describes the key to be
            member = CREATE_KEY_KEYS.get(key)
            value = None if member is None else self._members.get(member)
            if member == "KeySpec" and value is None:
                value = self._members.get("CustomerMasterKeySpec")
            if value is None and self._action == "kms:createkey":
                value = CREATE_KEY_DEFAULTS.get(key)
            if key == "kms:multiregionkeytype" and self._members.get("MultiRegion") is True:
                value = self._members.get("MultiRegionKeyType", "PRIMARY")  # ReplicateKey's
            return None if value is None else [_text(value)]
        if key == "kms:keyspec":
            return [record.key_spec.value]
        if key == "kms:keyusage":
            return [record.key_usage.value]
        if key == "kms:keyorigin":
            return [record.origin.value]
        if key == "kms:multiregion":
            return ["true" if record.multi_region else "false"]
        if key == "kms:multiregionkeytype" and record.multi_region:
            return ["REPLICA" if record.is_replica else "PRIMARY"]
        if key.startswith("aws:resourcetag/"):
            name = key.removeprefix("aws:resourcetag/")
            return [v for k, v in record.tags.items() if k.lower() == name] or None
        if key == "kms:resourcealiases":
            return self._aliases() or None
        return None

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, v in self._cache.items() if v is not None)

    def __len__(self) -> int:
        return sum(1 for v in self._cache.values() if v is not None)
