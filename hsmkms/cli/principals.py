"""`hsmkms principal list|show|remove|detach-policy` and `hsmkms principal access-key
create|list|disable|enable|delete`: principals and their access keys in IAM's shapes
(the principal's ARN where IAM says UserName; IAM's error codes and words).

Each command that changes who may do what is recorded in the audit trail with the
operator's identity, failed or not (hsmkms.cli.registry). A secret is printed once, by
`access-key create`, and never recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hsmkms.cli.help import PRINCIPAL_ARN
from hsmkms.cli.registry import Outcome, command
from hsmkms.library import KeyManager
from hsmkms.policy.principals import ACTIVE, INACTIVE, CredentialStore
from hsmkms.store.model import AccessKey


def add_parsers(principal: Any) -> None:
    """The commands under `hsmkms principal` (its subparsers), beside add/attach/tag."""
    principal.add_parser("list", help="every principal: access keys, policy names, tags")
    principal.add_parser("show", help="one principal in full (never a secret)").add_argument(
        "arn", help=PRINCIPAL_ARN
    )
    principal.add_parser(
        "remove", help="delete a principal's access keys, policies and tags; revoke its grants"
    ).add_argument("arn", help=PRINCIPAL_ARN)
    detach = principal.add_parser("detach-policy", help="remove a named identity policy")
    detach.add_argument("arn", help=PRINCIPAL_ARN)
    detach.add_argument("name", help="the policy's name (attach-policy --name)")
    keys = principal.add_parser(
        "access-key", help="access keys (at most two per principal, Active or Inactive)"
    ).add_subparsers(dest="key_action", required=True, metavar="ACTION")
    keys.add_parser("create", help="a new key pair; the secret is shown only now").add_argument(
        "arn", help=PRINCIPAL_ARN
    )
    keys.add_parser("list", help="one principal's keys, or every key").add_argument(
        "arn", nargs="?", default=None, help=f"{PRINCIPAL_ARN} (default: every principal's)"
    )
    for action, text in (
        ("disable", "refuse the key from the next request on, on every node"),
        ("enable", "accept the key again"),
        ("delete", "delete the key (it need not be disabled first, as in IAM)"),
    ):
        keys.add_parser(action, help=text).add_argument(
            "access_key_id", metavar="KEYID", help="the access key id"
        )


def access_key_metadata(key: AccessKey) -> dict[str, Any]:
    """IAM's AccessKeyMetadata and GetAccessKeyLastUsed's AccessKeyLastUsed ("N/A"
    until the key signs a verified request; stamped at most once a minute per node)."""
    last_used: dict[str, Any] = {"ServiceName": "N/A", "Region": "N/A"}
    if key.last_used_at is not None:
        last_used = {
            "LastUsedDate": key.last_used_at,
            "ServiceName": "kms",
            "Region": key.last_used_region,
        }
    return {
        "PrincipalArn": key.principal_arn,
        "AccessKeyId": key.access_key_id,
        "Status": key.status,
        "CreateDate": key.created_at,
        "AccessKeyLastUsed": last_used,
    }


def _credentials(km: KeyManager) -> CredentialStore:
    return CredentialStore(km.store, km.hsm, km.clock)


@command("principal", "list", records="ListPrincipals")  # reads are recorded too, readOnly
def _list(km: KeyManager, _: argparse.Namespace) -> Any:
    credentials = _credentials(km)
    principals = []
    for arn in credentials.principals():
        info = credentials.describe(arn)
        principals.append(
            {
                "PrincipalArn": arn,
                "AccessKeyIds": [k.access_key_id for k in info.access_keys],
                "PolicyNames": list(info.policies),
                "Tags": info.tags,
            }
        )
    return {"Principals": principals}


@command("principal", "show", records="GetPrincipal", request={"PrincipalArn": "arn"})
def _show(km: KeyManager, args: argparse.Namespace) -> Any:
    info = _credentials(km).describe(args.arn)
    shown = {
        "PrincipalArn": info.principal_arn,
        "AccessKeys": [access_key_metadata(k) for k in info.access_keys],
        "Policies": [
            {"PolicyName": name, "PolicyDocument": json.loads(document)}
            for name, document in info.policies.items()
        ],
        "Tags": info.tags,
    }
    return {"Principal": shown}


@command("principal", "remove", records="DeletePrincipal", request={"PrincipalArn": "arn"})
def _remove(km: KeyManager, args: argparse.Namespace) -> Any:
    removed = _credentials(km).remove(args.arn)
    if removed.key_policies_naming_it:
        print(
            f"hsmkms: warning: {len(removed.key_policies_naming_it)} key policies still name "
            f"{args.arn}; a principal added again under that ARN would match them",
            file=sys.stderr,
        )
    result = {
        "PrincipalArn": removed.principal_arn,
        "DeletedAccessKeyIds": removed.access_key_ids,
        "DeletedPolicyNames": removed.policy_names,
        "DeletedTags": removed.tags,
        "RevokedGrantIds": removed.revoked_grant_ids,
        "KeyPoliciesNamingPrincipal": removed.key_policies_naming_it,
    }
    named = {
        "AccessKeyIds": removed.access_key_ids,
        "PolicyNames": removed.policy_names,
        "GrantIds": removed.revoked_grant_ids,
    }
    return Outcome(result, request=named, response={})


@command(
    "principal",
    "detach-policy",
    records="DeletePrincipalPolicy",
    request={"PrincipalArn": "arn", "PolicyName": "name"},
)
def _detach(km: KeyManager, args: argparse.Namespace) -> Any:
    _credentials(km).detach_policy(args.arn, args.name)
    return None


@command(
    "principal", "access-key", "create", records="CreateAccessKey", request={"PrincipalArn": "arn"}
)
def _create(km: KeyManager, args: argparse.Namespace) -> Any:
    credentials = _credentials(km)
    credential = credentials.add(args.arn)
    key = credentials.access_key(credential.access_key_id)
    created = {
        "PrincipalArn": key.principal_arn,
        "AccessKeyId": key.access_key_id,
        "Status": key.status,
        "SecretAccessKey": credential.secret_access_key,  # shown once, here only
        "CreateDate": key.created_at,
    }
    return Outcome({"AccessKey": created}, request={"AccessKeyId": key.access_key_id}, response={})


@command(
    "principal", "access-key", "list", records="ListAccessKeys", request={"PrincipalArn": "arn"}
)
def _keys(km: KeyManager, args: argparse.Namespace) -> Any:
    keys = _credentials(km).access_keys(args.arn)
    return {"AccessKeyMetadata": [access_key_metadata(k) for k in keys]}


def _set_status(km: KeyManager, access_key_id: str, status: str) -> Outcome:
    credentials = _credentials(km)
    owner = credentials.access_key(access_key_id).principal_arn
    credentials.set_status(access_key_id, status)
    return Outcome(None, request={"PrincipalArn": owner, "Status": status}, response={})


@command(
    "principal", "access-key", "disable", records="UpdateAccessKey",
    request={"AccessKeyId": "access_key_id"},
)  # fmt: skip
def _disable(km: KeyManager, args: argparse.Namespace) -> Any:
    return _set_status(km, args.access_key_id, INACTIVE)


@command(
    "principal", "access-key", "enable", records="UpdateAccessKey",
    request={"AccessKeyId": "access_key_id"},
)  # fmt: skip
def _enable(km: KeyManager, args: argparse.Namespace) -> Any:
    return _set_status(km, args.access_key_id, ACTIVE)


@command(
    "principal", "access-key", "delete", records="DeleteAccessKey",
    request={"AccessKeyId": "access_key_id"},
)  # fmt: skip
def _delete(km: KeyManager, args: argparse.Namespace) -> Any:
    credentials = _credentials(km)
    owner = credentials.access_key(args.access_key_id).principal_arn
    credentials.delete_access_key(args.access_key_id)
    return Outcome(None, request={"PrincipalArn": owner}, response={})
