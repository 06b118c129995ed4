"""`hsmkms principal list|show|remove|detach-policy` and `hsmkms principal access-key
create|list|disable|enable|delete`: principals and their access keys in IAM's shapes
(the principal's ARN where IAM says UserName; IAM's error codes and words).

Each command is recorded in the audit trail with the operator's identity, failed or not
(reads too, as every CLI action is), through `_record`: the one place these commands
audit. A secret is printed once, by `access-key create`, and never recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hsmkms.audit.operator import operator_event
from hsmkms.errors import KMSError
from hsmkms.library import KeyManager
from hsmkms.policy.principals import ACTIVE, INACTIVE, CredentialStore
from hsmkms.store.model import AccessKey

Named = dict[str, Any]  # what an audit record names: ARNs, key ids, policy names


@dataclass(frozen=True)
class _Command:
    event: str  # the audit record's eventName (IAM's, where IAM has the action)
    run: Callable[[CredentialStore, argparse.Namespace], tuple[Any, Named]]


def add_parsers(principal: Any) -> None:
    """The commands under `hsmkms principal` (its subparsers), beside add/attach/tag."""
    principal.add_parser("list", help="every principal: access keys, policy names, tags")
    principal.add_parser("show", help="one principal in full (never a secret)").add_argument("arn")
    principal.add_parser(
        "remove", help="delete a principal's access keys, policies and tags; revoke its grants"
    ).add_argument("arn")
    detach = principal.add_parser("detach-policy", help="remove a named identity policy")
    detach.add_argument("arn")
    detach.add_argument("name")
    keys = principal.add_parser(
        "access-key", help="access keys (at most two per principal, Active or Inactive)"
    ).add_subparsers(dest="key_action", required=True)
    keys.add_parser("create", help="a new key pair; the secret is shown only now").add_argument(
        "arn"
    )
    keys.add_parser("list", help="one principal's keys, or every key").add_argument(
        "arn", nargs="?", default=None
    )
    for action, text in (
        ("disable", "refuse the key from the next request on, on every node"),
        ("enable", "accept the key again"),
        ("delete", "delete the key (it need not be disabled first, as in IAM)"),
    ):
        keys.add_parser(action, help=text).add_argument("access_key_id", metavar="KEYID")


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


def _list(credentials: CredentialStore, _: argparse.Namespace) -> tuple[Any, Named]:
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
    return {"Principals": principals}, {}


def _show(credentials: CredentialStore, args: argparse.Namespace) -> tuple[Any, Named]:
    info = credentials.describe(args.arn)
    shown = {
        "PrincipalArn": info.principal_arn,
        "AccessKeys": [access_key_metadata(k) for k in info.access_keys],
        "Policies": [
            {"PolicyName": name, "PolicyDocument": json.loads(document)}
            for name, document in info.policies.items()
        ],
        "Tags": info.tags,
    }
    return {"Principal": shown}, {}


def _remove(credentials: CredentialStore, args: argparse.Namespace) -> tuple[Any, Named]:
    removed = credentials.remove(args.arn)
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
    return result, named


def _detach(credentials: CredentialStore, args: argparse.Namespace) -> tuple[Any, Named]:
    credentials.detach_policy(args.arn, args.name)
    return None, {}


def _create(credentials: CredentialStore, args: argparse.Namespace) -> tuple[Any, Named]:
    credential = credentials.add(args.arn)
    key = credentials.access_key(credential.access_key_id)
    created = {
        "PrincipalArn": key.principal_arn,
        "AccessKeyId": key.access_key_id,
        "Status": key.status,
        "SecretAccessKey": credential.secret_access_key,  # shown once, here only
        "CreateDate": key.created_at,
    }
    return {"AccessKey": created}, {"AccessKeyId": key.access_key_id}


def _keys(credentials: CredentialStore, args: argparse.Namespace) -> tuple[Any, Named]:
    keys = credentials.access_keys(args.arn)
    return {"AccessKeyMetadata": [access_key_metadata(k) for k in keys]}, {}


def _status(status: str) -> Callable[[CredentialStore, argparse.Namespace], tuple[Any, Named]]:
    def run(credentials: CredentialStore, args: argparse.Namespace) -> tuple[Any, Named]:
        owner = credentials.access_key(args.access_key_id).principal_arn
        credentials.set_status(args.access_key_id, status)
        return None, {"PrincipalArn": owner, "Status": status}

    return run


def _delete(credentials: CredentialStore, args: argparse.Namespace) -> tuple[Any, Named]:
    owner = credentials.access_key(args.access_key_id).principal_arn
    credentials.delete_access_key(args.access_key_id)
    return None, {"PrincipalArn": owner}


COMMANDS: dict[str, _Command] = {
    "list": _Command("ListPrincipals", _list),
    "show": _Command("GetPrincipal", _show),
    "remove": _Command("DeletePrincipal", _remove),
    "detach-policy": _Command("DeletePrincipalPolicy", _detach),
    "access-key create": _Command("CreateAccessKey", _create),
    "access-key list": _Command("ListAccessKeys", _keys),
    "access-key disable": _Command("UpdateAccessKey", _status(INACTIVE)),
    "access-key enable": _Command("UpdateAccessKey", _status(ACTIVE)),
    "access-key delete": _Command("DeleteAccessKey", _delete),
}


def _named(args: argparse.Namespace) -> Named:
    """What the command line names, for the audit record (never a secret)."""
    found = {
        "PrincipalArn": getattr(args, "arn", None),
        "AccessKeyId": getattr(args, "access_key_id", None),
        "PolicyName": getattr(args, "name", None),
    }
    return {k: v for k, v in found.items() if v is not None}


def _record(km: KeyManager, event: str, named: Named, failure: KMSError | None) -> None:
    """Into the audit trail through the operator-audit path, like every CLI action."""
    if km.audit is None:
        return
    km.audit.record(
        operator_event(
            event,
            parameters=named,
            error_code=None if failure is None else failure.code,
            error_message=None if failure is None else failure.message,
            region=km.region,
        )
    )


def run(km: KeyManager, args: argparse.Namespace) -> Any:
    name = f"access-key {args.key_action}" if args.action == "access-key" else args.action
    command = COMMANDS[name]
    named = _named(args)
    try:
        result, more = command.run(CredentialStore(km.store, km.hsm, km.clock), args)
    except KMSError as exc:
        _record(km, command.event, named, exc)
        raise
    _record(km, command.event, {**named, **more}, None)
    return result


HANDLERS = {
    ("principal", action): run
    for action in ("list", "show", "remove", "detach-policy", "access-key")
}
