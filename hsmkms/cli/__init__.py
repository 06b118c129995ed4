"""The operator CLI: JSON on stdout like aws-cli, one-line errors on stderr."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hsmkms.bootstrap import build_key_manager
from hsmkms.cli.help import KEY, PRINCIPAL_ARN, show_defaults
from hsmkms.cli.keys import context_pairs
from hsmkms.cli.registry import Outcome, command, mark_leaves, registered, run_recorded
from hsmkms.config import Settings, load_settings, override
from hsmkms.errors import KMSError, KMSInternalException
from hsmkms.library import KeyManager
from hsmkms.version import hsmkms_version


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _print(result: Any) -> None:
    if result:  # like aws-cli, an empty response prints nothing
        print(json.dumps(result, indent=4, default=_json_default))


@command(
    "principal",
    "add",
    records="AddPrincipal",
    request={"PrincipalArn": "arn", "AccessKeyId": "access_key_id"},
)
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


@command(
    "principal",
    "attach-policy",
    records="AttachPrincipalPolicy",
    request={"PrincipalArn": "arn", "PolicyName": "name"},
)
def _principal_attach(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.policy.principals import CredentialStore

    document = Path(args.file).read_text()
    CredentialStore(km.store, km.hsm, km.clock).attach_policy(args.arn, args.name, document)
    return Outcome(
        {"PrincipalArn": args.arn, "PolicyName": args.name}, request={"PolicyDocument": document}
    )


@command(
    "keystore",
    "add",
    records="RegisterCluster",
    request={"CloudHsmClusterId": "id", "Module": "module", "TokenLabel": "token_label"},
)
def _keystore_add(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.keystores.cloudhsm import Cluster, register_cluster

    cluster = Cluster(args.id, str(Path(args.module).resolve()), args.token_label)
    register_cluster(km.store, cluster)
    return {"CloudHsmClusterId": cluster.cluster_id, "TokenLabel": cluster.token_label}


@command("keystore", "route", records="RouteXksProxy", request={"Host": "host", "Url": "url"})
def _keystore_route(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.keystores.external_client import register_route

    register_route(km.store, args.host, args.url)
    return {"Host": args.host, "Url": args.url}


@command("keystore", "list")
def _keystore_list(km: KeyManager, _: argparse.Namespace) -> Any:
    from hsmkms.keystores.cloudhsm import list_clusters

    clusters = list_clusters(km.store)
    return {
        "Clusters": [
            {"CloudHsmClusterId": c.cluster_id, "Module": c.module, "TokenLabel": c.token_label}
            for c in clusters
        ]
    }


@command("principal", "tag", records="TagPrincipal", request={"PrincipalArn": "arn"})
def _principal_tag(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.policy.principals import CredentialStore

    tags = context_pairs(args.tags)  # key=value pairs
    CredentialStore(km.store, km.hsm, km.clock).tag_principal(args.arn, tags)
    return {"PrincipalArn": args.arn, "Tags": tags}


@command("policy", "explain")
def _explain(km: KeyManager, args: argparse.Namespace) -> Any:
    action = args.kms_action if args.kms_action.startswith("kms:") else f"kms:{args.kms_action}"
    members = {"EncryptionContext": context_pairs(args.context)} if args.context else {}
    return km.authorizer.explain(args.principal, action, args.key, members)


SERVE_FLAGS = ("host", "port", "workers", "tls_cert", "tls_key", "tls_client_ca", "dev_mode")


@command("serve")  # its API calls are recorded by the server, each
def _serve(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.api.listener import address, check_tls_files, listening_socket
    from hsmkms.api.server import serve
    from hsmkms.bootstrap import build_app, open_audit
    from hsmkms.cli.deployment import start_dev_mode, warn_about_domain_key

    settings = load_settings()
    # A flag given on the command line wins over the setting of the same name.
    flags = {name: getattr(args, name) for name in SERVE_FLAGS if getattr(args, name) is not None}
    if args.tls_client_subject:
        flags["tls_client_subjects"] = tuple(args.tls_client_subject)
    serving = override(settings.serving, flags, lambda name: "--" + name.replace("_", "-"))
    check_tls_files(serving)
    listener = listening_socket(serving)  # bound before anything says it serves
    warn_about_domain_key(km.hsm)
    if serving.dev_mode:
        serving = start_dev_mode(km, serving)  # refuses in one line, or says it loudly
    settings = settings.model_copy(update={"serving": serving})
    app = None
    if serving.processes > 1:
        open_audit(settings, km.hsm, km.store).close()  # the trail refused here, not per worker
        km.close()  # each worker process opens its own sessions and connections
    else:
        app = build_app(settings, km, serving=True)
    url = f"{serving.scheme}://{address(serving)}"
    processes = "" if serving.processes == 1 else f" ({serving.processes} worker processes)"
    print(f"hsmkms: serving the KMS API on {url}{processes}", file=sys.stderr)
    if settings.console.enabled:
        print(f"hsmkms: the console is at {url}/console/", file=sys.stderr)
    serve(app, serving, settings.edge, listener)
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hsmkms",
        description="An AWS-KMS-compatible key manager whose keys live in a PKCS#11 token. "
        "Settings come from HSMKMS_* variables and hsmkms.toml (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"hsmkms {hsmkms_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from hsmkms.cli.deployment import add_init_parser

    add_init_parser(commands)
    serve = commands.add_parser("serve", help="serve the AWS KMS API over HTTP")
    serve.add_argument(
        "--host", default=None, help="address to listen on (default: HSMKMS_HOST, else 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=None, help="port (default: HSMKMS_PORT, else 8080)"
    )
    serve.add_argument(
        "--tls-cert", default=None,
        help="PEM certificate: serve HTTPS (default: HSMKMS_TLS_CERT, else plain HTTP); "
        "SIGHUP loads it again",
    )  # fmt: skip
    serve.add_argument(
        "--tls-key", default=None,
        help="PEM private key of the certificate (default: HSMKMS_TLS_KEY, else in the cert)",
    )  # fmt: skip
    serve.add_argument(
        "--tls-client-ca", default=None, metavar="CA",
        help="require client certificates chained to this CA: mutual TLS "
        "(default: HSMKMS_TLS_CLIENT_CA, else none asked)",
    )  # fmt: skip
    serve.add_argument(
        "--tls-client-subject", action="append", metavar="CN",
        help="a client certificate CN allowed, repeatable "
        "(default: HSMKMS_TLS_CLIENT_SUBJECTS, else any the CA signed)",
    )  # fmt: skip
    serve.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="server processes on one port (default: HSMKMS_WORKERS, else one per core)",
    )  # fmt: skip
    serve.add_argument(
        "--dev", dest="dev_mode", action="store_true", default=None,
        help="development mode: moto/LocalStack reset endpoints that wipe every key "
        "(HSMKMS_DEV_MODE; SoftHSM2 without a security domain only)",
    )  # fmt: skip
    principal = commands.add_parser("principal", help="API principals").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    principal_add = principal.add_parser("add", help="add a SigV4 access key for a principal")
    principal_add.add_argument("--arn", required=True, help=PRINCIPAL_ARN)
    principal_add.add_argument(
        "--access-key-id", default=None, metavar="ID",
        help="1-128 of A-Z a-z 0-9 _ (default: generated, AKIA + 16 characters)",
    )  # fmt: skip
    principal_add.add_argument(
        "--secret-access-key", default=None, metavar="SECRET",
        help="(default: generated, 40 characters, printed once)",
    )  # fmt: skip
    attach = principal.add_parser("attach-policy", help="attach an identity policy (JSON file)")
    attach.add_argument("arn", help=PRINCIPAL_ARN)
    attach.add_argument("file", help="the policy document (JSON)")
    attach.add_argument("--name", default="default", help="the policy's name")
    tag = principal.add_parser("tag", help="set a principal's tags (aws:PrincipalTag/<key>)")
    tag.add_argument("arn", help=PRINCIPAL_ARN)
    tag.add_argument("tags", nargs="*", metavar="KEY=VALUE", help="its tags, replacing all it had")
    from hsmkms.cli import principals as cli_principals

    cli_principals.add_parsers(principal)
    keystore = commands.add_parser(
        "keystore", help="PKCS#11 tokens for custom key stores"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    keystore_add = keystore.add_parser("add", help="register a token as an HSM cluster")
    keystore_add.add_argument("--id", required=True, help="cluster-<11 to 16 characters>")
    keystore_add.add_argument("--module", required=True, help="the token's PKCS#11 module")
    keystore_add.add_argument("--token-label", required=True, help="the token's label")
    keystore.add_parser("list", help="registered clusters")
    route = keystore.add_parser("route", help="send an XKS proxy host's requests elsewhere")
    route.add_argument("--host", required=True, help="the host of an XksProxyUriEndpoint")
    route.add_argument("--url", required=True, help="scheme://host[:port] to call instead")

    policy = commands.add_parser("policy", help="key and identity policies").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    explain = policy.add_parser("explain", help="would a principal be allowed, and why")
    explain.add_argument("--principal", required=True, help=PRINCIPAL_ARN)
    explain.add_argument(
        "--action", required=True, dest="kms_action", help="kms:Decrypt, or Decrypt"
    )
    explain.add_argument("--key", default=None, help=f"{KEY} (default: none, for CreateKey...)")
    explain.add_argument(
        "--context", action="append", metavar="K=V", help="an encryption context pair, repeatable"
    )

    from hsmkms.cli import keys as cli_keys
    from hsmkms.cli.xks_proxy import add_parsers

    cli_keys.add_parsers(commands)
    add_parsers(commands)
    from hsmkms.cli import domain as cli_domain

    cli_domain.add_parsers(commands)
    from hsmkms.cli import audit as cli_audit

    cli_audit.add_parsers(commands)
    from hsmkms.cli import apply, completion, status

    apply.add_parser(commands)
    completion.add_parser(commands, parser)
    status.add_parser(commands)
    mark_leaves(parser)
    show_defaults(parser)
    return parser


@command("init", records="Initialize", key_manager=False, makes_trail=True)
def _init(settings: Settings, args: argparse.Namespace) -> Any:
    from hsmkms.cli.deployment import run_init

    report = run_init(settings, args)
    made = {  # never the SO PIN, which the output shows once
        "TokenLabel": report["token_label"],
        "TokenCreated": report["token_created"],
        "Database": report["database"],
    }
    return Outcome(report, response=made)


def _run(settings: Settings, args: argparse.Namespace) -> Outcome:
    """The command, recorded in the audit trail with the operator's identity when it
    changes something (hsmkms.cli.registry); `serve` records its API calls itself."""
    from hsmkms.cli.registry import record_in_trail, trail_is_writable

    spec = registered(args)
    if not spec.key_manager:  # the token is not open while it runs
        if spec.records is not None and not spec.makes_trail:
            trail_is_writable(settings)  # nothing changes that cannot be recorded
        return run_recorded(
            spec,
            args,
            lambda: spec.handler(settings, args),
            lambda event: record_in_trail(settings, event),
            settings.region,
        )
    km = build_key_manager(settings, audited=spec.path != ("serve",), source="hsmkms.cli")
    try:
        audit = km.audit
        record = audit.record if audit else _unrecorded
        return run_recorded(spec, args, lambda: spec.handler(km, args), record, km.region)
    finally:
        km.close()


def _unrecorded(event: dict[str, Any]) -> None:
    raise KMSInternalException(f"{event['eventName']} has no audit trail to be recorded in")


class _StderrLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"hsmkms: {record.levelname.lower()}: {super().format(record)}"


def _log_warnings_to_stderr() -> None:
    """The package's warnings (e.g. a new key that backups cannot carry) as stderr lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StderrLine())
    logging.getLogger("hsmkms").addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    _log_warnings_to_stderr()
    os.umask(0o077)  # every file this process makes (database, audit, output) is ours only
    args = _parser().parse_args(argv)
    try:
        outcome = _run(load_settings(), args)
        _print(outcome.output)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped reading (`| head`): it has what it wanted. Later writes
        # (the interpreter's last flush) go nowhere instead of failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KMSError as exc:
        print(f"hsmkms: {exc.code}: {exc.message}".rstrip(": "), file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"hsmkms: {exc}", file=sys.stderr)
        return 1
    return outcome.exit_code
