"""`hsmkms domain ...` and `hsmkms backup ...`: the security domain and its backups.

The domain commands log in to the token as its SO, which PKCS#11 allows only while this
process has no user session on it, so they run without the token open (key_manager=False:
the CLI checks the audit trail before and records them after, hsmkms.cli.registry).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hsmkms.cli.registry import Outcome, command
from hsmkms.config import ConfigError, Settings
from hsmkms.errors import KMSInvalidStateException


def add_parsers(commands: Any) -> None:
    domain = commands.add_parser("domain", help="the security domain (key custody)")
    actions = domain.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make the domain key; prints custodian shares")
    create.add_argument(
        "--custodians", type=int, required=True, metavar="N", help="shares made, one each"
    )
    create.add_argument(
        "--threshold", type=int, required=True, metavar="M", help="shares needed to join"
    )
    create.add_argument(
        "--out-dir", type=Path, default=None, metavar="DIR",
        help="write one share file per custodian (0600) into this new or empty directory "
        "instead of printing the shares",
    )  # fmt: skip
    join = actions.add_parser("join", help="install the domain key from M shares")
    join.add_argument(
        "--share", action="append", required=True, metavar="SHARE",
        help="a custodian's share (JSON), repeated M times",
    )  # fmt: skip
    for action in (create, join):
        action.add_argument(
            "--accept-unenforced-templates", action="store_true",
            help="go on where the token does not enforce what protects the domain key "
            "(recorded in the audit trail)",
        )  # fmt: skip
    actions.add_parser("status", help="the token's domain and the custody of new keys")
    backup = commands.add_parser("backup", help="sealed backups under the domain key")
    actions = backup.add_subparsers(dest="action", required=True, metavar="ACTION")
    out = actions.add_parser("create", help="write a backup file")
    out.add_argument("output", help="the backup file to write (0600)")
    out.add_argument(
        "--allow-partial", action="store_true",
        help="leave out material that cannot be wrapped (listed in the file) instead of failing",
    )  # fmt: skip
    actions.add_parser("restore", help="restore into an empty data dir").add_argument(
        "input", help="a file `backup create` wrote"
    )


def so_pin(settings: Settings) -> str:
    """HSMKMS_SO_PIN_FILE, else the one `hsmkms init` kept for a token it made, else asked
    on the terminal. Never stored by these commands."""
    from hsmkms.init import SO_PIN_FILE_NAME

    named = settings.token.so_pin_file
    if named is not None and not named.exists():
        raise ConfigError(f"{settings.origin('so_pin_file')}: no such file: {named}")
    for path in (settings.token.so_pin_file, settings.data_dir / SO_PIN_FILE_NAME):
        if path is not None and path.exists():
            return path.read_text().strip()
    if sys.stdin.isatty():
        return getpass.getpass("Security officer PIN of the token: ")
    raise KMSInvalidStateException(
        "The SO PIN is needed: set HSMKMS_SO_PIN_FILE or run on a terminal."
    )


def _user_pin(settings: Settings) -> str:
    return settings.require_pin()


def _checked(settings: Settings) -> None:
    """This data dir's token and database must belong together before anything changes;
    then every session closes, so the SO can log in."""
    from hsmkms.bootstrap import open_deployment, prepare_environment

    prepare_environment(settings)
    hsm, store = open_deployment(settings)
    store.close()
    hsm.close()


@command(
    "domain",
    "create",
    records="CreateSecurityDomain",
    key_manager=False,
    request={
        "Custodians": "custodians",
        "Threshold": "threshold",
        "AcceptUnenforcedTemplates": "accept_unenforced_templates",
    },
)
def _domain_create(settings: Settings, args: argparse.Namespace) -> Any:
    from hsmkms.token import create_domain

    if args.out_dir is not None and args.out_dir.exists() and any(args.out_dir.iterdir()):
        raise KMSInvalidStateException(
            f"--out-dir {args.out_dir} is not empty: share files are never overwritten."
        )
    _checked(settings)
    made = create_domain(
        settings.token.pkcs11_lib, settings.token.label, so_pin(settings), _user_pin(settings),
        args.custodians, args.threshold, accept_unenforced=args.accept_unenforced_templates,
        init_params=settings.token.init_params,
    )  # fmt: skip
    _warn_about_earlier_material(settings)
    result = {
        "domain": made.domain_id, "check_value": made.check_value,
        "threshold": made.threshold, "custodians": args.custodians,
    } | _unenforced(made.unenforced)  # fmt: skip
    response = {"Domain": made.domain_id, "CheckValue": made.check_value}
    request = {"UnenforcedProtections": list(made.unenforced)} if made.unenforced else {}
    if args.out_dir is None:
        return Outcome(result | {"shares": made.shares}, request=request, response=response)
    try:
        written = {"share_files": _write_shares(args.out_dir, made.shares)}
    except OSError as exc:  # the domain exists now: its shares must not be lost
        print(
            f"hsmkms: warning: the shares could not be written to {args.out_dir} ({exc}); "
            "they are printed here instead, once",
            file=sys.stderr,
        )
        written = {"shares": made.shares}
    return Outcome(result | written, request=request, response=response)


@command(  # never the shares
    "domain",
    "join",
    records="JoinSecurityDomain",
    key_manager=False,
    request={"AcceptUnenforcedTemplates": "accept_unenforced_templates"},
)
def _domain_join(settings: Settings, args: argparse.Namespace) -> Any:
    from hsmkms.token import join_domain

    _checked(settings)
    joined = join_domain(
        settings.token.pkcs11_lib, settings.token.label, so_pin(settings), _user_pin(settings),
        args.share, accept_unenforced=args.accept_unenforced_templates,
        init_params=settings.token.init_params,
    )  # fmt: skip
    output = {"domain": joined.domain_id, "check_value": joined.check_value}
    request = {"UnenforcedProtections": list(joined.unenforced)} if joined.unenforced else {}
    return Outcome(
        output | _unenforced(joined.unenforced),
        request=request,
        response={"Domain": joined.domain_id, "CheckValue": joined.check_value},
    )


@command("domain", "status", key_manager=False)
def _domain_status(settings: Settings, _: argparse.Namespace) -> Any:
    from hsmkms.bootstrap import open_deployment
    from hsmkms.cli.deployment import warn_about_domain_key
    from hsmkms.token import domain_info

    hsm, store = open_deployment(settings)
    store.close()
    try:
        info = domain_info(hsm)
        modifiable = warn_about_domain_key(hsm)
        return {
            "domain": info.domain_id if info else None,
            "check_value": info.check_value if info else None,
            "custody": hsm.custody.value,
            "domain_key_modifiable": modifiable,
        }
    finally:
        hsm.close()


def _write_shares(directory: Path, shares: list[str]) -> list[str]:
    """One file per custodian, readable by the owner only, never over an existing one."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for share in shares:
        fields = json.loads(share)
        path = directory / f"share-{fields['index']}-of-{fields['custodians']}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(share + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        written.append(str(path))
    return written


def _unenforced(gaps: tuple[str, ...]) -> dict[str, Any]:
    return {"unenforced_protections": list(gaps)} if gaps else {}


def _warn_about_earlier_material(settings: Settings) -> None:
    """Material made before the domain stays never-extractable: say so once, here."""
    from hsmkms.bootstrap import open_hsm
    from hsmkms.token import CREDENTIALS_KEY

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
    from hsmkms.bootstrap import open_deployment
    from hsmkms.cli.progress import progress_bar

    hsm, store = open_deployment(settings)
    store.close()  # the backup reads over connections of its own
    try:
        with progress_bar("backup", unit="key") as progress:
            report = create_backup(
                hsm, settings.store.database_url, Path(args.output),
                allow_partial=args.allow_partial, progress=progress,
            )  # fmt: skip
        return asdict(report)
    finally:
        hsm.close()


@command("backup", "restore", records="RestoreBackup", key_manager=False, request={"File": "input"})
def _backup_restore(settings: Settings, args: argparse.Namespace) -> Any:
    from hsmkms.backup.archive import restore_backup
    from hsmkms.bootstrap import open_deployment
    from hsmkms.cli.progress import progress_bar

    hsm, store = open_deployment(settings)
    store.close()  # the restore writes over connections of its own
    try:
        with progress_bar("restore", unit="object") as progress:
            report = restore_backup(hsm, settings.store.database_url, Path(args.input), progress)
        return asdict(report)
    finally:
        hsm.close()
