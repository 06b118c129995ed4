"""`hsmkms xks ...`: the XKS proxy's credentials, policies and per-key usage limits."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hsmkms.library import KeyManager
from hsmkms.operations import xks
from hsmkms.policy.xks_credentials import XksCredentialStore, normalize_prefix
from hsmkms.policy.xks_policy import XksPolicies

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
    areas = group.add_subparsers(dest="action", required=True)
    credential = areas.add_parser("credential", help="SigV4 credentials AWS KMS signs with")
    actions = credential.add_subparsers(dest="xks_action", required=True)
    add = actions.add_parser("add", help="add a credential (generated when not given)")
    add.add_argument("--access-key-id", default=None)
    add.add_argument("--secret-access-key", default=None)
    add.add_argument("--uri-prefix", default=None)
    actions.add_parser("list").add_argument("--uri-prefix", default=None)
    actions.add_parser("remove").add_argument("access_key_id")
    policy = areas.add_parser("policy", help="a key store's secondary-authorization policy")
    actions = policy.add_subparsers(dest="xks_action", required=True)
    put = actions.add_parser("put", help="set the policy (JSON file)")
    put.add_argument("file")
    put.add_argument("--uri-prefix", default=None)
    actions.add_parser("get").add_argument("--uri-prefix", default=None)
    actions.add_parser("remove").add_argument("--uri-prefix", default=None)
    usage = areas.add_parser("key-usage", help="what XKS may do with a key")
    usage.add_argument("key")
    usage.add_argument("usage", choices=sorted(USAGES))


def _credential(km: KeyManager, args: argparse.Namespace) -> Any:
    store = XksCredentialStore(km.store, km.hsm, km.clock)
    if args.xks_action == "list":
        prefix = None if args.uri_prefix is None else normalize_prefix(args.uri_prefix)
        return {"Credentials": [c.as_dict() for c in store.list(prefix)]}
    if args.xks_action == "remove":
        store.remove(args.access_key_id)
        return None
    prefix = _prefix(args)
    credential = store.add(prefix, args.access_key_id, args.secret_access_key)
    # The shape of the AWS KMS console's XKS proxy configuration file.
    secret = {"AccessKeyId": credential.access_key_id}
    if args.secret_access_key is None:
        secret["RawSecretAccessKey"] = credential.secret_access_key  # shown once, here only
    return {"XksProxyUriPath": _uri_path(prefix), "XksProxyAuthenticationCredential": secret}


def _policy(km: KeyManager, args: argparse.Namespace) -> Any:
    policies = XksPolicies(km.store)
    prefix = _prefix(args)
    if args.xks_action == "put":
        policies.put(prefix, Path(args.file).read_text())
        return {"XksProxyUriPath": _uri_path(prefix)}
    if args.xks_action == "remove":
        policies.remove(prefix)
        return None
    return {"XksProxyUriPath": _uri_path(prefix), "Policy": policies.get(prefix)}


def _key_usage(km: KeyManager, args: argparse.Namespace) -> Any:
    return xks.set_xks_key_usage(km.context, key_id=args.key, key_usage=USAGES[args.usage])


HANDLERS = {
    ("xks", "credential"): _credential,
    ("xks", "policy"): _policy,
    ("xks", "key-usage"): _key_usage,
}
