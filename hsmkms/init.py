"""`hsmkms init`: data dir, (for SoftHSM2) a token with random PINs, the database.

Idempotent. A token that already carries the configured label is used as it
is: hsmkms never initialises a token it did not create.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsmkms.bootstrap import open_hsm, prepare_environment
from hsmkms.config import PIN_FILE_NAME, Settings, is_softhsm
from hsmkms.errors import KMSInternalException
from hsmkms.store import open_store
from hsmkms.token.library import find_token, load_module, rescan_tokens

SO_PIN_FILE_NAME = "so.pin"


@dataclass
class InitReport:
    data_dir: str
    token_label: str
    token_created: bool
    database: str


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)


def _softhsm_conf(settings: Settings) -> None:
    tokens = settings.data_dir / "tokens"
    tokens.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not settings.softhsm_conf.exists():
        settings.softhsm_conf.write_text(
            f"directories.tokendir = {tokens.resolve()}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )


def _create_softhsm_token(settings: Settings) -> None:
    """softhsm2-util creates the token with throwaway PINs (its argv is visible to
    local users); the real random PINs are then set through the PKCS#11 API."""
    util = shutil.which("softhsm2-util")
    if util is None:
        raise KMSInternalException("softhsm2-util not found: install softhsm2")
    temp_so, temp_user = secrets.token_hex(8), secrets.token_hex(8)
    subprocess.run(
        [util, "--init-token", "--free", "--label", settings.token.label,
         "--so-pin", temp_so, "--pin", temp_user],
        check=True, capture_output=True,
    )  # fmt: skip
    rescan_tokens(settings.token.pkcs11_lib)
    token = find_token(
        load_module(settings.token.pkcs11_lib, settings.token.init_params), settings.token.label
    )
    if token is None:
        raise KMSInternalException("softhsm2-util did not create the token")
    so_pin, user_pin = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    _write_secret(settings.data_dir / SO_PIN_FILE_NAME, so_pin)
    _write_secret(settings.token.pin_file or settings.data_dir / PIN_FILE_NAME, user_pin)
    with token.open(rw=True, so_pin=temp_so) as session:
        session.set_pin(temp_so, so_pin)
    with token.open(rw=True, user_pin=temp_user) as session:
        session.set_pin(temp_user, user_pin)


def _find(settings: Settings) -> Any:
    return find_token(
        load_module(settings.token.pkcs11_lib, settings.token.init_params), settings.token.label
    )


def initialize(settings: Settings) -> InitReport:
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    created = False
    if is_softhsm(settings.token.pkcs11_lib):
        _softhsm_conf(settings)
        prepare_environment(settings)
        if _find(settings) is None:
            _create_softhsm_token(settings)
            created = True
    elif _find(settings) is None:
        raise KMSInternalException(
            f"no token labelled {settings.token.label!r}: hsmkms only initialises SoftHSM2 "
            "tokens; set up the HSM's token with its own tools"
        )
    open_hsm(settings).close()  # proves the PIN logs in
    open_store(settings.store.database_url).close()  # creates or migrates the schema
    return InitReport(
        data_dir=str(settings.data_dir),
        token_label=settings.token.label,
        token_created=created,
        database=settings.store.shown,
    )
