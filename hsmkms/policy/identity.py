"""Global condition keys that describe the calling principal, from its ARN:
aws:username, aws:userid, aws:PrincipalType.
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html

hsmkms's principals are ARNs with access keys; IAM's unique IDs do not exist here, so
aws:userid is derived from the ARN (stable, in IAM's shape: AIDA... for users, AROA...
for roles) and the account ID for the account root, as IAM gives the root user.
"""

from __future__ import annotations

import base64
import hashlib

PRINCIPAL_KEYS = frozenset({"aws:username", "aws:userid", "aws:principaltype"})


def unique_id(principal_arn: str) -> str:
    """IAM-shaped unique ID of a principal: a prefix and 17 base-32 characters."""
    kind = principal_arn.split(":", 5)[-1].split("/", 1)[0]
    prefix = "AROA" if kind in ("role", "assumed-role") else "AIDA"
    digest = hashlib.sha256(principal_arn.encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:17]


def principal_key(principal_arn: str, key: str) -> list[str] | None:
    account = principal_arn.split(":")[4]
    resource = principal_arn.split(":", 5)[-1]
    kind, _, path = resource.partition("/")
    if key == "aws:principaltype":
        return ["Account" if kind == "root" else "User" if kind == "user" else "AssumedRole"]
    if key == "aws:userid":
        if kind == "root":
            return [account]
        if kind == "assumed-role":  # role id and session name
            return [f"{unique_id(principal_arn.rsplit('/', 1)[0])}:{path.rsplit('/', 1)[-1]}"]
        return [unique_id(principal_arn)]
    if key == "aws:username":  # IAM users only: the friendly name, without the path
        return [path.rsplit("/", 1)[-1]] if kind == "user" else None
    return None
