"""`hsmkms key|alias ...`, `encrypt`/`decrypt` and `maintain`: the KeyManager's operations,
each recorded in the audit trail by the KeyManager under its KMS operation's name."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hsmkms.cli.help import KEY
from hsmkms.cli.registry import command
from hsmkms.library import KeyManager


def add_parsers(commands: Any) -> None:
    commands.add_parser("maintain", help="run due rotations and deletions, then reconcile")
    key = commands.add_parser("key", help="KMS keys").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = key.add_parser("create", help="a new KMS key, made in the token")
    create.add_argument("--description", default="", help="(default: none)")
    create.add_argument(
        "--key-spec", default=None, metavar="SPEC",
        help="SYMMETRIC_DEFAULT, RSA_2048..4096, ECC_NIST_P256.., HMAC_256.. "
        "(default: SYMMETRIC_DEFAULT)",
    )  # fmt: skip
    create.add_argument(
        "--key-usage", default="ENCRYPT_DECRYPT", metavar="USAGE",
        help="ENCRYPT_DECRYPT, SIGN_VERIFY, GENERATE_VERIFY_MAC or KEY_AGREEMENT",
    )  # fmt: skip
    create.add_argument("--multi-region", action="store_true", help="a multi-Region primary key")
    listing = key.add_parser("list", help="the keys (ids and ARNs; --long: an inventory)")
    listing.add_argument(
        "--long", action="store_true",
        help="aliases, spec, usage, state, origin, key store, rotation, creation and last use "
        "of each key, as a table",
    )  # fmt: skip
    listing.add_argument("--json", action="store_true", help="with --long: JSON, for scripts")
    described = {
        "describe": "the key's KeyMetadata",
        "enable": "enable a disabled key",
        "disable": "disable the key (refused for use until enabled)",
        "rotate": "rotate now (RotateKeyOnDemand)",
        "cancel-deletion": "cancel a scheduled deletion (the key stays disabled)",
        "disable-rotation": "stop automatic rotation",
        "rotation-status": "whether and how often the key rotates",
        "list-rotations": "the key's past rotations",
    }
    for action, text in described.items():
        key.add_parser(action, help=text).add_argument("key", help=KEY)
    schedule = key.add_parser("schedule-deletion", help="delete the key after a waiting period")
    schedule.add_argument("key", help=KEY)
    schedule.add_argument("--days", type=int, default=None, help="7 to 30 (default: 30)")
    rotation = key.add_parser("enable-rotation", help="rotate the key automatically")
    rotation.add_argument("key", help=KEY)
    rotation.add_argument(
        "--period-days", type=int, default=None, metavar="DAYS", help="90 to 2560 (default: 365)"
    )

    alias = commands.add_parser("alias", help="aliases").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    alias_create = alias.add_parser("create", help="point a new alias at a key")
    alias_create.add_argument("alias", help="alias/NAME")
    alias_create.add_argument("key", help=KEY)
    alias.add_parser("list", help="the aliases").add_argument(
        "--key", default=None, help=f"{KEY}: only its aliases (default: every alias)"
    )
    alias.add_parser("delete", help="delete an alias (not its key)").add_argument(
        "alias", help="alias/NAME"
    )

    for name, text in (
        ("encrypt", "envelope-encrypt a file"),
        ("decrypt", "decrypt a file made by `hsmkms encrypt`"),
    ):
        command = commands.add_parser(name, help=text)
        if name == "encrypt":
            command.add_argument("--key", required=True, help=KEY)
        command.add_argument(
            "--context", action="append", metavar="K=V",
            help="an encryption context pair, repeatable (decrypt needs the same pairs)",
        )  # fmt: skip
        command.add_argument("input", help="the file to read")
        command.add_argument("output", help="the file to write (only once all is checked)")


def context_pairs(pairs: Sequence[str] | None) -> dict[str, str]:
    context: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"hsmkms: --context takes k=v, not {pair!r}")
        context[name] = value
    return context


@command("key", "list")
def _list_all_keys(km: KeyManager, args: argparse.Namespace) -> Any:
    if args.long:
        from hsmkms.cli.inventory import inventory, inventory_table
        from hsmkms.config import load_settings

        found = inventory(km, load_settings().data_dir / "audit")
        if args.json:
            return {"Keys": found}
        print(inventory_table(found))
        return None
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
