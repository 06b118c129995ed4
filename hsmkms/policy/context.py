"""Condition keys of a request: from its members, the key it acts on, and the caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from hsmkms.keys.model import KeyRecord
from hsmkms.policy.caller import CallerInfo

# Request members whose value is a condition key's value, as KMS names them.
SCALAR_KEYS = {
    "EncryptionAlgorithm": "kms:encryptionalgorithm",
    "SigningAlgorithm": "kms:signingalgorithm",
    "MacAlgorithm": "kms:macalgorithm",
    "MessageType": "kms:messagetype",
    "KeyAgreementAlgorithm": "kms:keyagreementalgorithm",
    "KeyPairSpec": "kms:datakeypairspec",
    "RotationPeriodInDays": "kms:rotationperiodindays",
    "PendingWindowInDays": "kms:schedulekeydeletionpendingwindowindays",
    "BypassPolicyLockoutSafetyCheck": "kms:bypasspolicylockoutsafetycheck",
    "GranteePrincipal": "kms:granteeprincipal",
    "RetiringPrincipal": "kms:retiringprincipal",
    "AliasName": "kms:requestalias",
}
# CreateKey describes the key to be: these become the key's condition keys.
CREATE_KEY_KEYS = {"KeySpec": "kms:keyspec", "KeyUsage": "kms:keyusage", "Origin": "kms:keyorigin"}


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class LazyContext(Mapping[str, Sequence[str]]):
    """Condition keys; costly ones (e.g. the key's aliases) are computed on first use."""

    def __init__(self, values: dict[str, list[str]], lazy: dict[str, Callable[[], list[str]]]):
        self._values = values
        self._lazy = lazy

    def __getitem__(self, key: str) -> Sequence[str]:
        if key not in self._values and key in self._lazy:
            self._values[key] = self._lazy.pop(key)()
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter({*self._values, *self._lazy})

    def __len__(self) -> int:
        return len({*self._values, *self._lazy})


def build(
    caller: CallerInfo,
    now: datetime,
    members: Mapping[str, Any],
    record: KeyRecord | None,
    aliases: Callable[[], list[str]],
    *,
    context_member: str = "EncryptionContext",
) -> LazyContext:
    values: dict[str, list[str]] = {
        "aws:principalarn": [caller.principal_arn],
        "kms:calleraccount": [caller.account],
        "aws:principalaccount": [caller.account],
        "aws:currenttime": [now.isoformat()],
        "aws:securetransport": ["true" if caller.secure_transport else "false"],
    }
    if caller.source_ip:
        values["aws:sourceip"] = [caller.source_ip]
    for member, key in SCALAR_KEYS.items():
        if members.get(member) is not None:
            values[key] = [_text(members[member])]
    key_id = members.get("KeyId")
    if isinstance(key_id, str) and "alias/" in key_id:
        values["kms:requestalias"] = [key_id[key_id.index("alias/") :]]
    encryption_context = members.get(context_member) or {}
    if encryption_context:
        values["kms:encryptioncontextkeys"] = list(encryption_context)
        for name, value in encryption_context.items():
            values[f"kms:encryptioncontext:{name.lower()}"] = [value]
    if members.get("Operations"):
        values["kms:grantoperations"] = list(members["Operations"])
    tags = {t["TagKey"]: t["TagValue"] for t in members.get("Tags") or ()}
    for name, value in tags.items():
        values[f"aws:requesttag/{name.lower()}"] = [value]
    tag_keys = list(tags) or list(members.get("TagKeys") or ())
    if tag_keys:
        values["aws:tagkeys"] = tag_keys
    lazy: dict[str, Callable[[], list[str]]] = {}
    if record is not None:
        values["kms:keyspec"] = [record.key_spec.value]
        values["kms:keyusage"] = [record.key_usage.value]
        values["kms:keyorigin"] = [record.origin.value]
        values["kms:multiregion"] = ["true" if record.multi_region else "false"]
        for name, value in record.tags.items():
            values[f"aws:resourcetag/{name.lower()}"] = [value]
        lazy["kms:resourcealiases"] = aliases
    else:
        for member, key in CREATE_KEY_KEYS.items():
            if members.get(member) is not None:
                values[key] = [_text(members[member])]
    return LazyContext(values, lazy)
