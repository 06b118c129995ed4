"""`hsmkms xks ...`: the XKS proxy's credentials, policies and per-key usage limits."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hsmkms.cli.help import KEY, URI_PREFIX
from hsmkms.cli.registry import Outcome, command
from hsmkms.library import KeyManager
from hsmkms.xks import operations as xks
from hsmkms.xks.credentials import XksCredentialStore, normalize_prefix
from hsmkms.xks.policy import XksPolicies

USAGES = {
    "ENCRYPT_DECRYPT": [xks.ENCRYPT, xks.DECRYPT],
    "ENCRYPT": [xks.ENCRYPT],
    "DECRYPT": [xks.DECRYPT],
    "NONE": [],
}


def _prefix(args: argparse.Namespace) -> str:
    """--uri-prefix, else the first key store the server serves."""
    if args.uri_prefix is not None:
        return normalize_prefix(args.uri_prefix)
    from hsmkms.config import load_settings

    return load_settings().xks.uri_prefixes[0]


def _uri_path(prefix: str) -> str:
    return f"/{prefix}/kms/xks/v1" if prefix else "/kms/xks/v1"


def add_parsers(commands: Any) -> None:
    group = commands.add_parser("xks", help="the XKS proxy (AWS KMS external key store)")
    areas = group.add_subparsers(dest="action", required=True, metavar="AREA")
    credential = areas.add_parser("credential", help="SigV4 credentials AWS KMS signs with")
    actions = credential.add_subparsers(dest="xks_action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a credential (generated when not given)")
    add.add_argument(
        "--access-key-id", default=None, metavar="ID",
        help="20-30 of A-Z 2-7 (default: generated; printed once with the secret)",
    )  # fmt: skip
    add.add_argument(
        "--secret-access-key", default=None, metavar="SECRET",
        help="43-64 of A-Z a-z 0-9 + / = (default: generated)",
    )  # fmt: skip
    add.add_argument("--uri-prefix", default=None, help=URI_PREFIX)
    actions.add_parser("list", help="the credentials (never a secret)").add_argument(
        "--uri-prefix", default=None, help="one key store's (default: every key store's)"
    )
    actions.add_parser("remove", help="remove a credential").add_argument(
        "access_key_id", metavar="ID", help="its access key id"
    )
    policy = areas.add_parser("policy", help="a key store's secondary-authorization policy")
    actions = policy.add_subparsers(dest="xks_action", required=True, metavar="ACTION")
    put = actions.add_parser("put", help="set the policy (JSON file)")
    put.add_argument("file", help="the policy document (JSON, identity-policy form)")
    put.add_argument("--uri-prefix", default=None, help=URI_PREFIX)
    actions.add_parser("get", help="print the policy").add_argument(
        "--uri-prefix", default=None, help=URI_PREFIX
    )
    actions.add_parser("remove", help="remove the policy").add_argument(
        "--uri-prefix", default=None, help=URI_PREFIX
    )
    usage = areas.add_parser("key-usage", help="what XKS may do with a key")
    usage.add_argument("key", help=KEY)
    usage.add_argument("usage", choices=sorted(USAGES), help="ENCRYPT_DECRYPT lifts the limit")


def _credentials(km: KeyManager) -> XksCredentialStore:
    return XksCredentialStore(km.store, km.hsm, km.clock)


@command("xks", "credential", "list")
def _credential_list(km: KeyManager, args: argparse.Namespace) -> Any:
    prefix = None if args.uri_prefix is None else normalize_prefix(args.uri_prefix)
    return {"Credentials": [c.as_dict() for c in _credentials(km).list(prefix)]}


@command(
    "xks",
    "credential",
    "remove",
    records="RemoveXksCredential",
    request={"AccessKeyId": "access_key_id"},
)
def _credential_remove(km: KeyManager, args: argparse.Namespace) -> Any:
    _credentials(km).remove(args.access_key_id)
    return None


@command(
    "xks", "credential", "add", records="AddXksCredential", request={"AccessKeyId": "access_key_id"}
)
def _credential_add(km: KeyManager, args: argparse.Namespace) -> Any:
    prefix = _prefix(args)
    credential = _credentials(km).add(prefix, args.access_key_id, args.secret_access_key)
    # The shape of the AWS KMS console's XKS proxy configuration file.
    secret = {"AccessKeyId": credential.access_key_id}
    if args.secret_access_key is None:
        secret["RawSecretAccessKey"] = credential.secret_access_key  # shown once, here only
    output = {"XksProxyUriPath": _uri_path(prefix), "XksProxyAuthenticationCredential": secret}
    made = {"XksProxyUriPath": _uri_path(prefix), "AccessKeyId": credential.access_key_id}
    return Outcome(output, response=made)


@command("xks", "policy", "put", records="PutXksPolicy")
def _policy_put(km: KeyManager, args: argparse.Namespace) -> Any:
    prefix, document = _prefix(args), Path(args.file).read_text()
    XksPolicies(km.store).put(prefix, document)
    path = _uri_path(prefix)
    return Outcome(
        {"XksProxyUriPath": path}, request={"XksProxyUriPath": path, "PolicyDocument": document}
    )


@command("xks", "policy", "remove", records="RemoveXksPolicy")
def _policy_remove(km: KeyManager, args: argparse.Namespace) -> Any:
    prefix = _prefix(args)
    XksPolicies(km.store).remove(prefix)
    return Outcome(None, request={"XksProxyUriPath": _uri_path(prefix)})


@command("xks", "policy", "get")
def _policy_get(km: KeyManager, args: argparse.Namespace) -> Any:
    prefix = _prefix(args)
    return {"XksProxyUriPath": _uri_path(prefix), "Policy": XksPolicies(km.store).get(prefix)}


@command(
    "xks", "key-usage", records="SetXksKeyUsage", request={"KeyId": "key", "KeyUsage": "usage"}
)
def _key_usage(km: KeyManager, args: argparse.Namespace) -> Any:
    return xks.set_xks_key_usage(km.context, key_id=args.key, key_usage=USAGES[args.usage])
