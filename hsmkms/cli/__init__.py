"""The operator CLI: JSON on stdout like aws-cli, one-line errors on stderr."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hsmkms.bootstrap import build_key_manager
from hsmkms.config import load_settings, override
from hsmkms.errors import KMSError
from hsmkms.library import KeyManager

Handler = Callable[[KeyManager, argparse.Namespace], Any]


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _print(result: Any) -> None:
    if result:  # like aws-cli, an empty response prints nothing
        print(json.dumps(result, indent=4, default=_json_default))


def _context(pairs: Sequence[str] | None) -> dict[str, str]:
    context: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"hsmkms: --context takes k=v, not {pair!r}")
        context[name] = value
    return context


def _list_all_keys(km: KeyManager, _: argparse.Namespace) -> Any:
    keys: list[dict[str, str]] = []
    marker = None
    while True:
        page = km.list_keys(marker=marker)
        keys.extend(page["Keys"])
        if not page["Truncated"]:
            return {"Keys": keys}
        marker = page["NextMarker"]


def _list_all_aliases(km: KeyManager, args: argparse.Namespace) -> Any:
    aliases: list[dict[str, Any]] = []
    marker = None
    while True:
        page = km.list_aliases(key_id=args.key, marker=marker)
        aliases.extend(page["Aliases"])
        if not page["Truncated"]:
            return {"Aliases": aliases}
        marker = page["NextMarker"]


def _encrypt_file(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.files.envelope import encrypt_file

    encrypt_file(km, args.key, _context(args.context), Path(args.input), Path(args.output))
    return None


def _decrypt_file(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.files.envelope import decrypt_file

    decrypt_file(km, _context(args.context), Path(args.input), Path(args.output))
    return None


def _principal_add(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.policy.principals import WEAK_SECRET_LENGTH, CredentialStore

    credential = CredentialStore(km.store, km.hsm, km.clock).add(
        args.arn, args.access_key_id, args.secret_access_key
    )
    if args.secret_access_key is not None and len(args.secret_access_key) < WEAK_SECRET_LENGTH:
        print(
            f"hsmkms: warning: the secret access key is shorter than {WEAK_SECRET_LENGTH} "
            "characters; use such keys only for local tests",
            file=sys.stderr,
        )
    result = {"PrincipalArn": credential.principal_arn, "AccessKeyId": credential.access_key_id}
    if args.secret_access_key is None:
        result["SecretAccessKey"] = credential.secret_access_key  # shown once, here only
    return result


def _principal_attach(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.policy.principals import CredentialStore

    document = Path(args.file).read_text()
    CredentialStore(km.store, km.hsm, km.clock).attach_policy(args.arn, args.name, document)
    return {"PrincipalArn": args.arn, "PolicyName": args.name}


def _keystore_add(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.keys.keystores import Cluster, register_cluster

    cluster = Cluster(args.id, str(Path(args.module).resolve()), args.token_label)
    register_cluster(km.store, cluster)
    return {"CloudHsmClusterId": cluster.cluster_id, "TokenLabel": cluster.token_label}


def _keystore_route(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.keys.xks_client import register_route

    register_route(km.store, args.host, args.url)
    return {"Host": args.host, "Url": args.url}


def _keystore_list(km: KeyManager, _: argparse.Namespace) -> Any:
    from hsmkms.keys.keystores import list_clusters

    clusters = list_clusters(km.store)
    return {
        "Clusters": [
            {"CloudHsmClusterId": c.cluster_id, "Module": c.module, "TokenLabel": c.token_label}
            for c in clusters
        ]
    }


def _principal_tag(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.policy.principals import CredentialStore

    tags = _context(args.tags)  # key=value pairs
    CredentialStore(km.store, km.hsm, km.clock).tag_principal(args.arn, tags)
    return {"PrincipalArn": args.arn, "Tags": tags}


def _explain(km: KeyManager, args: argparse.Namespace) -> Any:
    action = args.kms_action if args.kms_action.startswith("kms:") else f"kms:{args.kms_action}"
    members = {"EncryptionContext": _context(args.context)} if args.context else {}
    return km.authorizer.explain(args.principal, action, args.key, members)


SERVE_FLAGS = ("host", "port", "workers", "tls_cert", "tls_key", "tls_client_ca")


def _serve(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.api.server import serve
    from hsmkms.bootstrap import build_app

    settings = load_settings()
    # A flag given on the command line wins over the setting of the same name.
    flags = {name: getattr(args, name) for name in SERVE_FLAGS if getattr(args, name) is not None}
    if args.tls_client_subject:
        flags["tls_client_subjects"] = tuple(args.tls_client_subject)
    serving = override(settings.serving, flags, lambda name: "--" + name.replace("_", "-"))
    app = None
    if serving.workers > 1:
        km.close()  # each worker process opens its own sessions and connections
    else:
        app = build_app(settings, km, serving=True)
    print(
        f"hsmkms: serving the KMS API on {serving.scheme}://{serving.host}:{serving.port}",
        file=sys.stderr,
    )
    serve(app, serving, settings.edge)
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hsmkms", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    from hsmkms.cli import deployment

    deployment.add_init_parser(commands)
    serve = commands.add_parser("serve", help="serve the AWS KMS API over HTTP")
    serve.add_argument("--host", default=None, help="address to listen on (HSMKMS_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (HSMKMS_PORT)")
    serve.add_argument("--tls-cert", default=None, help="PEM certificate (HSMKMS_TLS_CERT)")
    serve.add_argument("--tls-key", default=None, help="PEM private key (HSMKMS_TLS_KEY)")
    serve.add_argument(
        "--tls-client-ca", default=None, help="require client certificates (HSMKMS_TLS_CLIENT_CA)"
    )
    serve.add_argument(
        "--tls-client-subject",
        action="append",
        help="allowed client certificate CN (HSMKMS_TLS_CLIENT_SUBJECTS)",
    )
    serve.add_argument(
        "--workers", type=int, default=None, help="server processes on one port (HSMKMS_WORKERS)"
    )
    principal = commands.add_parser("principal", help="API principals").add_subparsers(
        dest="action", required=True
    )
    principal_add = principal.add_parser("add", help="add a SigV4 access key for a principal")
    principal_add.add_argument("--arn", required=True)
    principal_add.add_argument("--access-key-id", default=None)
    principal_add.add_argument("--secret-access-key", default=None)
    attach = principal.add_parser("attach-policy", help="attach an identity policy (JSON file)")
    attach.add_argument("arn")
    attach.add_argument("file")
    attach.add_argument("--name", default="default")
    tag = principal.add_parser("tag", help="set a principal's tags (aws:PrincipalTag/<key>)")
    tag.add_argument("arn")
    tag.add_argument("tags", nargs="*", metavar="KEY=VALUE")
    from hsmkms.cli import principals as cli_principals

    cli_principals.add_parsers(principal)
    commands.add_parser("maintain", help="run due rotations and deletions, then reconcile")
    keystore = commands.add_parser(
        "keystore", help="PKCS#11 tokens for custom key stores"
    ).add_subparsers(dest="action", required=True)
    keystore_add = keystore.add_parser("add", help="register a token as an HSM cluster")
    keystore_add.add_argument("--id", required=True, help="cluster-<11 to 16 characters>")
    keystore_add.add_argument("--module", required=True, help="the token's PKCS#11 module")
    keystore_add.add_argument("--token-label", required=True)
    keystore.add_parser("list", help="registered clusters")
    route = keystore.add_parser("route", help="send an XKS proxy host's requests elsewhere")
    route.add_argument("--host", required=True, help="the host of an XksProxyUriEndpoint")
    route.add_argument("--url", required=True, help="scheme://host[:port] to call instead")

    key = commands.add_parser("key", help="KMS keys").add_subparsers(dest="action", required=True)
    create = key.add_parser("create")
    create.add_argument("--description", default="")
    create.add_argument("--key-spec", default=None)
    create.add_argument("--key-usage", default="ENCRYPT_DECRYPT")
    create.add_argument("--multi-region", action="store_true")
    key.add_parser("list")
    simple = ("describe", "enable", "disable", "rotate", "cancel-deletion", "disable-rotation")
    for action in (*simple, "rotation-status", "list-rotations"):
        key.add_parser(action).add_argument("key")
    schedule = key.add_parser("schedule-deletion")
    schedule.add_argument("key")
    schedule.add_argument("--days", type=int, default=None)
    rotation = key.add_parser("enable-rotation")
    rotation.add_argument("key")
    rotation.add_argument("--period-days", type=int, default=None)

    alias = commands.add_parser("alias", help="aliases").add_subparsers(
        dest="action", required=True
    )
    alias_create = alias.add_parser("create")
    alias_create.add_argument("alias")
    alias_create.add_argument("key")
    alias.add_parser("list").add_argument("--key", default=None)
    alias.add_parser("delete").add_argument("alias")

    audit = commands.add_parser("audit", help="the audit trail").add_subparsers(
        dest="action", required=True
    )
    audit.add_parser("verify", help="check every chain and its checkpoints; names what is bad")
    audit_query = audit.add_parser("query", help="matching records as JSON lines")
    audit_query.add_argument("--key", default=None)
    audit_query.add_argument("--since", default=None, help="ISO 8601 time")
    audit_query.add_argument("--event", default=None)
    audit_query.add_argument("--principal", default=None)
    policy = commands.add_parser("policy", help="key and identity policies").add_subparsers(
        dest="action", required=True
    )
    explain = policy.add_parser("explain", help="would a principal be allowed, and why")
    explain.add_argument("--principal", required=True)
    explain.add_argument("--action", required=True, dest="kms_action")
    explain.add_argument("--key", default=None)
    explain.add_argument("--context", action="append", metavar="K=V")

    encrypt = commands.add_parser("encrypt", help="envelope-encrypt a file")
    encrypt.add_argument("--key", required=True)
    encrypt.add_argument("--context", action="append", metavar="K=V")
    encrypt.add_argument("input")
    encrypt.add_argument("output")
    decrypt = commands.add_parser("decrypt", help="decrypt a file made by `hsmkms encrypt`")
    decrypt.add_argument("--context", action="append", metavar="K=V")
    decrypt.add_argument("input")
    decrypt.add_argument("output")
    from hsmkms.cli.xks import add_parsers

    add_parsers(commands)
    from hsmkms.cli import domain as cli_domain

    cli_domain.add_parsers(commands)
    return parser


HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("serve", None): _serve,
    ("principal", "add"): _principal_add,
    ("principal", "attach-policy"): _principal_attach,
    ("principal", "tag"): _principal_tag,
    ("policy", "explain"): lambda km, a: _explain(km, a),
    ("keystore", "add"): _keystore_add,
    ("keystore", "list"): _keystore_list,
    ("keystore", "route"): _keystore_route,
    ("maintain", None): lambda km, a: km.maintain().as_dict(),
    ("key", "create"): lambda km, a: km.create_key(
        description=a.description,
        key_spec=a.key_spec,
        key_usage=a.key_usage,
        multi_region=a.multi_region,
    ),
    ("key", "list"): _list_all_keys,
    ("key", "describe"): lambda km, a: km.describe_key(key_id=a.key),
    ("key", "enable"): lambda km, a: km.enable_key(key_id=a.key),
    ("key", "disable"): lambda km, a: km.disable_key(key_id=a.key),
    ("key", "rotate"): lambda km, a: km.rotate_key_on_demand(key_id=a.key),
    ("key", "cancel-deletion"): lambda km, a: km.cancel_key_deletion(key_id=a.key),
    ("key", "schedule-deletion"): lambda km, a: km.schedule_key_deletion(
        key_id=a.key, pending_window_in_days=a.days
    ),
    ("key", "enable-rotation"): lambda km, a: km.enable_key_rotation(
        key_id=a.key, rotation_period_in_days=a.period_days
    ),
    ("key", "disable-rotation"): lambda km, a: km.disable_key_rotation(key_id=a.key),
    ("key", "rotation-status"): lambda km, a: km.get_key_rotation_status(key_id=a.key),
    ("key", "list-rotations"): lambda km, a: km.list_key_rotations(key_id=a.key),
    ("alias", "create"): lambda km, a: km.create_alias(alias_name=a.alias, target_key_id=a.key),
    ("alias", "list"): _list_all_aliases,
    ("alias", "delete"): lambda km, a: km.delete_alias(alias_name=a.alias),
    ("encrypt", None): _encrypt_file,
    ("decrypt", None): _decrypt_file,
}


def _xks_handlers() -> dict[tuple[str, str | None], Handler]:
    from hsmkms.cli.xks import HANDLERS as XKS_HANDLERS

    return dict(XKS_HANDLERS)


HANDLERS.update(_xks_handlers())


def _principal_handlers() -> dict[tuple[str, str | None], Handler]:
    from hsmkms.cli.principals import HANDLERS as PRINCIPAL_HANDLERS

    return dict(PRINCIPAL_HANDLERS)


HANDLERS.update(_principal_handlers())


def _audit(settings: Any, args: argparse.Namespace) -> int:
    from hsmkms.audit.commands import query_command, verify_command

    directory = settings.data_dir / "audit"
    if args.action == "query":
        return query_command(directory, args.key, args.since, args.event, args.principal)
    from hsmkms.bootstrap import audit_anchor, open_deployment

    hsm, store = open_deployment(settings)  # the checkpoints' MACs and latest checkpoints
    try:
        return verify_command(directory, audit_anchor(hsm, store))
    finally:
        store.close()
        hsm.close()


class _StderrLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"hsmkms: {record.levelname.lower()}: {super().format(record)}"


def _log_warnings_to_stderr() -> None:
    """The package's warnings (e.g. a new key that backups cannot carry) as stderr lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StderrLine())
    logging.getLogger("hsmkms").addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # every file this process makes (database, audit, output) is ours only
    args = _parser().parse_args(argv)
    _log_warnings_to_stderr()
    try:
        settings = load_settings()
        if args.command == "audit":
            return _audit(settings, args)
        if args.command in ("domain", "backup"):  # before anything opens the token
            from hsmkms.cli import domain as cli_domain

            _print(cli_domain.run(settings, args))
            return 0
        if args.command == "init":
            from hsmkms.cli.deployment import run_init

            _print(run_init(settings, args))
            return 0
        # Every CLI action is audited with the operator's identity; `serve` audits
        # its API calls itself.
        km = build_key_manager(settings, audited=args.command != "serve", source="hsmkms.cli")
        try:
            if args.command in ("serve", "maintain"):
                from hsmkms.cli.deployment import warn_about_domain_key

                warn_about_domain_key(km.hsm)
            _print(HANDLERS[(args.command, getattr(args, "action", None))](km, args))
        finally:
            km.close()
    except KMSError as exc:
        print(f"hsmkms: {exc.code}: {exc.message}".rstrip(": "), file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"hsmkms: {exc}", file=sys.stderr)
        return 1
    return 0
