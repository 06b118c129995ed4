"""`hsmkms init`, and what the CLI says about the deployment it opens."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hsmkms.config import ConfigError, ServingSettings, Settings
from hsmkms.library import KeyManager
from hsmkms.token import Token


def add_init_parser(commands: Any) -> None:
    init = commands.add_parser("init", help="create the data dir, token (SoftHSM2) and database")
    init.add_argument(
        "--keep-so-pin", action="store_true",
        help="development: keep a new token's SO PIN in the data dir (else printed once)",
    )  # fmt: skip


def run_init(settings: Settings, args: argparse.Namespace) -> Any:
    from hsmkms.init import initialize

    report = initialize(settings, keep_so_pin=args.keep_so_pin)
    if report.so_pin is not None:
        print(
            "hsmkms: the new token's SO PIN (so_pin) is shown in this output only and is not "
            "kept: store it offline (see README: PINs in production)",
            file=sys.stderr,
        )
    return report.as_dict()


def warn_about_domain_key(hsm: Token) -> bool | None:
    """Warn when the domain key predates non-modifiable, template-bound domain keys;
    returns whether it is modifiable (None: no domain)."""
    from hsmkms.token import domain_key_modifiable

    modifiable = domain_key_modifiable(hsm)
    if modifiable:
        print(
            "hsmkms: warning: the security domain key was installed by an older hsmkms: it "
            "is modifiable and has no unwrap template, so a holder of the user PIN can take "
            "key material out in plaintext (see README: Security domain, backup and restore)",
            file=sys.stderr,
        )
    return modifiable


def start_dev_mode(km: KeyManager, serving: ServingSettings) -> ServingSettings:
    """Refuse development mode (one line) where it could wipe keys worth keeping, else
    say loudly what it does; it serves from one process (a reset in one of several would
    leave the others' token handles behind)."""
    from hsmkms.operations.devmode import refusal

    why = refusal(km.context.deployment)
    if why is not None:
        raise ConfigError(f"--dev (HSMKMS_DEV_MODE): refused: {why}")
    rule = "hsmkms: " + "!" * 72
    print(
        f"{rule}\n"
        "hsmkms: DEVELOPMENT MODE: POST /moto-api/reset or /_localstack/state/reset, without\n"
        "hsmkms: a signature, DESTROYS every key, alias, grant, key policy and custom key\n"
        f"hsmkms: store of account {km.context.account_id} (token {km.hsm.token_label!r}). "
        "For test suites only.\n"
        f"{rule}",
        file=sys.stderr,
    )
    if serving.host not in ("127.0.0.1", "::1", "localhost"):
        print(
            f"hsmkms: warning: development mode listens on {serving.host}: whoever reaches "
            "it can wipe it",
            file=sys.stderr,
        )
    if serving.workers is not None and serving.workers > 1:  # asked for, not the default
        print(
            f"hsmkms: warning: development mode serves from one process, not {serving.workers}",
            file=sys.stderr,
        )
    return serving.model_copy(update={"workers": 1})
