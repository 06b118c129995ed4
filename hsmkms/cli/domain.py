"""`hsmkms domain ...` and `hsmkms backup ...`: the security domain and its backups.

The domain commands log in to the token as its SO, which PKCS#11 allows only while this
process has no user session on it, so they run without the token open (key_manager=False:
the CLI checks the audit trail before and records them after, hsmkms.cli.registry).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hsmkms.cli.registry import Outcome, command
from hsmkms.config import Settings
from hsmkms.errors import KMSInvalidStateException


def add_parsers(commands: Any) -> None:
    domain = commands.add_parser("domain", help="the security domain (key custody)")
    actions = domain.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make the domain key; prints custodian shares")
    create.add_argument("--custodians", type=int, required=True, metavar="N")
    create.add_argument("--threshold", type=int, required=True, metavar="M")
    join = actions.add_parser("join", help="install the domain key from M shares")
    join.add_argument("--share", action="append", required=True, metavar="SHARE")
    actions.add_parser("status", help="the token's domain and the custody of new keys")
    backup = commands.add_parser("backup", help="sealed backups under the domain key")
    actions = backup.add_subparsers(dest="action", required=True)
    out = actions.add_parser("create", help="write a backup file")
    out.add_argument("output")
    out.add_argument(
        "--allow-partial", action="store_true",
        help="leave out material that cannot be wrapped (listed in the file) instead of failing",
    )  # fmt: skip
    actions.add_parser("restore", help="restore into an empty data dir").add_argument("input")


def so_pin(settings: Settings) -> str:
    """HSMKMS_SO_PIN_FILE, else the one `hsmkms init` kept for a token it made, else asked
    on the terminal. Never stored by these commands."""
    from hsmkms.init import SO_PIN_FILE_NAME

    for path in (settings.so_pin_file, settings.data_dir / SO_PIN_FILE_NAME):
        if path is not None and path.exists():
            return path.read_text().strip()
    if sys.stdin.isatty():
        return getpass.getpass("Security officer PIN of the token: ")
    raise KMSInvalidStateException(
        "The SO PIN is needed: set HSMKMS_SO_PIN_FILE or run on a terminal."
    )


def _user_pin(settings: Settings) -> str:
    pin = settings.read_pin()
    if pin is None:
        raise KMSInvalidStateException("No user PIN: set HSMKMS_PIN or HSMKMS_PIN_FILE.")
    return pin


@command(
    "domain",
    "create",
    records="CreateSecurityDomain",
    key_manager=False,
    request={"Custodians": "custodians", "Threshold": "threshold"},
)
def _domain_create(settings: Settings, args: argparse.Namespace) -> Any:
    from hsmkms.bootstrap import prepare_environment
    from hsmkms.token.domain import create_domain

    prepare_environment(settings)
    made = create_domain(
        settings.pkcs11_lib,
        settings.token_label,
        so_pin(settings),
        _user_pin(settings),
        args.custodians,
        args.threshold,
    )
    _warn_about_earlier_material(settings)
    output = {
        "domain": made.domain_id,
        "check_value": made.check_value,
        "threshold": made.threshold,
        "shares": made.shares,
    }
    return Outcome(output, response={"Domain": made.domain_id, "CheckValue": made.check_value})


@command("domain", "join", records="JoinSecurityDomain", key_manager=False)  # never the shares
def _domain_join(settings: Settings, args: argparse.Namespace) -> Any:
    from hsmkms.bootstrap import prepare_environment
    from hsmkms.token.domain import join_domain

    prepare_environment(settings)
    joined = join_domain(
        settings.pkcs11_lib, settings.token_label, so_pin(settings), _user_pin(settings), args.share
    )
    output = {"domain": joined.domain_id, "check_value": joined.check_value}
    return Outcome(output, response={"Domain": joined.domain_id, "CheckValue": joined.check_value})


@command("domain", "status", key_manager=False)
def _domain_status(settings: Settings, _: argparse.Namespace) -> Any:
    from hsmkms.bootstrap import open_hsm
    from hsmkms.token.domain import domain_info

    hsm = open_hsm(settings)
    try:
        info = domain_info(hsm)
        return {
            "domain": info.domain_id if info else None,
            "check_value": info.check_value if info else None,
            "custody": hsm.custody.value,
        }
    finally:
        hsm.close()


def _warn_about_earlier_material(settings: Settings) -> None:
    """Material made before the domain stays never-extractable: say so once, here."""
    from hsmkms.bootstrap import open_hsm
    from hsmkms.token.templates import CREDENTIALS_KEY

    hsm = open_hsm(settings)
    try:
        keys, credentials = len(hsm.material_refs()), bool(hsm.facts(CREDENTIALS_KEY))
    finally:
        hsm.close()
    if keys or credentials:
        what = f"{keys} key material version(s)" + (
            " and the credentials key (stored secrets)" if credentials else ""
        )
        print(
            f"hsmkms: warning: {what} made before the domain stay never-extractable; "
            "backups cannot carry them (see README: Security domain, backup and restore)",
            file=sys.stderr,
        )


@command("backup", "create", records="CreateBackup", key_manager=False, request={"File": "output"})
def _backup_create(settings: Settings, args: argparse.Namespace) -> Any:
    from hsmkms.backup.archive import create_backup
    from hsmkms.bootstrap import open_hsm

    hsm = open_hsm(settings)
    try:
        report = create_backup(
            hsm, settings.database_url, Path(args.output), allow_partial=args.allow_partial
        )
        return asdict(report)
    finally:
        hsm.close()


@command("backup", "restore", records="RestoreBackup", key_manager=False, request={"File": "input"})
def _backup_restore(settings: Settings, args: argparse.Namespace) -> Any:
    from hsmkms.backup.archive import restore_backup
    from hsmkms.bootstrap import open_hsm

    hsm = open_hsm(settings)
    try:
        return asdict(restore_backup(hsm, settings.database_url, Path(args.input)))
    finally:
        hsm.close()
