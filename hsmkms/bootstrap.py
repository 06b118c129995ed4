"""Wires configuration -> token -> store -> operations, once. Entry points stay thin."""

from __future__ import annotations

import os

from starlette.types import ASGIApp

from hsmkms.api.app import create_app
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.audit.log import AuditLog
from hsmkms.config import Settings, is_softhsm
from hsmkms.errors import KMSInternalException
from hsmkms.keys.clock import Clock, system_clock
from hsmkms.library import KeyManager
from hsmkms.policy.principals import CredentialStore
from hsmkms.store import open_store
from hsmkms.token import Hsm


def prepare_environment(settings: Settings) -> None:
    """Point SoftHSM2 at the data dir's config (made by `hsmkms init`) unless the
    operator already chose one. Must run before the module is loaded."""
    if (
        is_softhsm(settings.pkcs11_lib)
        and "SOFTHSM2_CONF" not in os.environ
        and settings.softhsm_conf.exists()
    ):
        os.environ["SOFTHSM2_CONF"] = str(settings.softhsm_conf.resolve())


def open_hsm(settings: Settings) -> Hsm:
    prepare_environment(settings)
    pin = settings.read_pin()
    if pin is None:
        raise KMSInternalException(
            "no user PIN: set HSMKMS_PIN or HSMKMS_PIN_FILE, or run `hsmkms init`"
        )
    return Hsm(
        settings.pkcs11_lib,
        settings.token_label,
        pin,
        settings.session_pool_size,
        init_params=settings.init_params,
    )


def build_key_manager(settings: Settings, clock: Clock = system_clock) -> KeyManager:
    hsm = open_hsm(settings)
    store = open_store(settings.database_url, pool_size=settings.database_pool_size)
    return KeyManager(
        store, hsm, account_id=settings.account_id, region=settings.region, clock=clock
    )


def build_app(settings: Settings, km: KeyManager) -> ASGIApp:
    """The HTTP app over a KeyManager: SigV4 against the stored principals."""
    credentials = CredentialStore(km.store, km.hsm, km.clock)
    verifier = SigV4Verifier(credentials.lookup, regions=settings.regions)
    return create_app(
        km.context,
        verifier,
        maintenance_seconds=settings.maintenance_seconds,
        audit=AuditLog(settings.data_dir / "audit"),
        max_request_bytes=settings.max_request_bytes,
    )
