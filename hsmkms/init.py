"""`hsmkms init`: data dir, (for SoftHSM2) a token with random PINs, the database.

Idempotent. A token that already carries the configured label is used as it
is: hsmkms never initialises a token it did not create. It never overwrites a PIN
file, and never makes a new token for a database that belongs to a token already
(binding.py): the original token would be unreachable after either.

The SO PIN of a token it creates is returned once (the CLI prints it) and not kept,
unless `keep_so_pin` (development: `make run`) keeps it in the data dir.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hsmkms.binding import refuse_if_bound
from hsmkms.bootstrap import naming_the_module_setting, open_deployment, prepare_environment
from hsmkms.config import PIN_FILE_NAME, Settings, is_softhsm
from hsmkms.errors import KMSInternalException, KMSInvalidStateException
from hsmkms.store import open_store
from hsmkms.token import find_token, load_module, rescan_tokens

SO_PIN_FILE_NAME = "so.pin"


@dataclass
class InitReport:
    data_dir: str
    token_label: str
    token_created: bool
    database: str
    # The new token's SO PIN, shown this once (not kept unless asked: so_pin_file).
    so_pin: str | None = None
    so_pin_file: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}


def _write_secret(path: Path, value: str) -> None:
    """A new file, readable by the owner only; never over an existing one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _softhsm_conf(settings: Settings) -> None:
    tokens = settings.data_dir / "tokens"
    tokens.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not settings.softhsm_conf.exists():
        _write_secret(
            settings.softhsm_conf,
            f"directories.tokendir = {tokens.resolve()}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false",
        )


def _pin_files(settings: Settings, keep_so_pin: bool) -> list[Path]:
    user = settings.token.pin_file or settings.data_dir / PIN_FILE_NAME
    return [user, settings.data_dir / SO_PIN_FILE_NAME] if keep_so_pin else [user]


def _refuse_existing_pin_files(settings: Settings, keep_so_pin: bool) -> None:
    """A PIN file left without its token is the only way back to that token."""
    for path in _pin_files(settings, keep_so_pin):
        if path.exists():
            raise KMSInvalidStateException(
                f"{path} exists but token {settings.token.label!r} is not present: init "
                "never overwrites a PIN file (it belongs to the token this data dir was made "
                "with); bring that token back, or point HSMKMS_TOKEN_LABEL at it."
            )


def _create_softhsm_token(settings: Settings, keep_so_pin: bool) -> str:
    """softhsm2-util creates the token with throwaway PINs (its argv is visible to
    local users); the real random PINs are then set through the PKCS#11 API.
    Returns the SO PIN."""
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
    user_file, *so_file = _pin_files(settings, keep_so_pin)
    _write_secret(user_file, user_pin)
    for path in so_file:
        _write_secret(path, so_pin)
    with token.open(rw=True, so_pin=temp_so) as session:
        session.set_pin(temp_so, so_pin)
    with token.open(rw=True, user_pin=temp_user) as session:
        session.set_pin(temp_user, user_pin)
    return so_pin


def _find(settings: Settings) -> Any:
    with naming_the_module_setting(settings):
        module = load_module(settings.token.pkcs11_lib, settings.token.init_params)
    return find_token(module, settings.token.label)


def initialize(settings: Settings, *, keep_so_pin: bool = False) -> InitReport:
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    report = InitReport(
        data_dir=str(settings.data_dir), token_label=settings.token.label,
        token_created=False, database=settings.store.shown,
    )  # fmt: skip
    if is_softhsm(settings.token.pkcs11_lib):
        _softhsm_conf(settings)
        prepare_environment(settings)
    if _find(settings) is None:
        if not is_softhsm(settings.token.pkcs11_lib):
            raise KMSInternalException(
                f"no token labelled {settings.token.label!r}: hsmkms only initialises SoftHSM2 "
                "tokens; set up the HSM's token with its own tools"
            )
        store = open_store(settings.store.database_url)  # creates or migrates the schema
        try:
            refuse_if_bound(store, settings.token.label)
        finally:
            store.close()
        _refuse_existing_pin_files(settings, keep_so_pin)
        so_pin = _create_softhsm_token(settings, keep_so_pin)
        report.token_created = True
        if keep_so_pin:
            report.so_pin_file = str(settings.data_dir / SO_PIN_FILE_NAME)
        else:
            report.so_pin = so_pin
    hsm, store = open_deployment(settings)  # the PIN logs in; binds or checks the database
    store.close()
    hsm.close()
    return report
