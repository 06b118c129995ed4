"""`hsmkms key|alias ...`, `encrypt`/`decrypt` and `maintain`: the KeyManager's operations,
each recorded in the audit trail by the KeyManager under its KMS operation's name."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hsmkms.cli.registry import command
from hsmkms.library import KeyManager


def add_parsers(commands: Any) -> None:
    commands.add_parser("maintain", help="run due rotations and deletions, then reconcile")
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

    encrypt = commands.add_parser("encrypt", help="envelope-encrypt a file")
    encrypt.add_argument("--key", required=True)
    encrypt.add_argument("--context", action="append", metavar="K=V")
    encrypt.add_argument("input")
    encrypt.add_argument("output")
    decrypt = commands.add_parser("decrypt", help="decrypt a file made by `hsmkms encrypt`")
    decrypt.add_argument("--context", action="append", metavar="K=V")
    decrypt.add_argument("input")
    decrypt.add_argument("output")


def context_pairs(pairs: Sequence[str] | None) -> dict[str, str]:
    context: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"hsmkms: --context takes k=v, not {pair!r}")
        context[name] = value
    return context


@command("key", "list")
def _list_all_keys(km: KeyManager, _: argparse.Namespace) -> Any:
    keys: list[dict[str, str]] = []
    marker = None
    while True:
        page = km.list_keys(marker=marker)
        keys.extend(page["Keys"])
        if not page["Truncated"]:
            return {"Keys": keys}
        marker = page["NextMarker"]


@command("alias", "list")
def _list_all_aliases(km: KeyManager, args: argparse.Namespace) -> Any:
    aliases: list[dict[str, Any]] = []
    marker = None
    while True:
        page = km.list_aliases(key_id=args.key, marker=marker)
        aliases.extend(page["Aliases"])
        if not page["Truncated"]:
            return {"Aliases": aliases}
        marker = page["NextMarker"]


@command("encrypt", records="GenerateDataKey", by_operation=True)
def _encrypt_file(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.files.envelope import encrypt_file

    encrypt_file(km, args.key, context_pairs(args.context), Path(args.input), Path(args.output))
    return None


@command("decrypt", records="Decrypt", by_operation=True)
def _decrypt_file(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.files.envelope import decrypt_file

    decrypt_file(km, context_pairs(args.context), Path(args.input), Path(args.output))
    return None


# Key and alias commands: the KeyManager records each as its KMS operation.
@command("maintain", records="Maintain", by_operation=True)
def _maintain(km: KeyManager, _: argparse.Namespace) -> Any:
    from hsmkms.cli.deployment import warn_about_domain_key

    warn_about_domain_key(km.hsm)
    return km.maintain().as_dict()


command("key", "create", records="CreateKey", by_operation=True)(
    lambda km, a: km.create_key(
        description=a.description,
        key_spec=a.key_spec,
        key_usage=a.key_usage,
        multi_region=a.multi_region,
    )
)
command("key", "describe")(lambda km, a: km.describe_key(key_id=a.key))
command("key", "enable", records="EnableKey", by_operation=True)(
    lambda km, a: km.enable_key(key_id=a.key)
)
command("key", "disable", records="DisableKey", by_operation=True)(
    lambda km, a: km.disable_key(key_id=a.key)
)
command("key", "rotate", records="RotateKeyOnDemand", by_operation=True)(
    lambda km, a: km.rotate_key_on_demand(key_id=a.key)
)
command("key", "cancel-deletion", records="CancelKeyDeletion", by_operation=True)(
    lambda km, a: km.cancel_key_deletion(key_id=a.key)
)
command("key", "schedule-deletion", records="ScheduleKeyDeletion", by_operation=True)(
    lambda km, a: km.schedule_key_deletion(key_id=a.key, pending_window_in_days=a.days)
)
command("key", "enable-rotation", records="EnableKeyRotation", by_operation=True)(
    lambda km, a: km.enable_key_rotation(key_id=a.key, rotation_period_in_days=a.period_days)
)
command("key", "disable-rotation", records="DisableKeyRotation", by_operation=True)(
    lambda km, a: km.disable_key_rotation(key_id=a.key)
)
command("key", "rotation-status")(lambda km, a: km.get_key_rotation_status(key_id=a.key))
command("key", "list-rotations")(lambda km, a: km.list_key_rotations(key_id=a.key))
command("alias", "create", records="CreateAlias", by_operation=True)(
    lambda km, a: km.create_alias(alias_name=a.alias, target_key_id=a.key)
)
command("alias", "delete", records="DeleteAlias", by_operation=True)(
    lambda km, a: km.delete_alias(alias_name=a.alias)
)
